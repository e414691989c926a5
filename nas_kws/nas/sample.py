"""Nets drawn uniformly from the nets of a space whose MACs lie in a band: the random baseline
that a search must beat (Li & Talwalkar 2019).

The argmax of random logits is not uniform (positions with many similar-cost choices dominate),
so the sampler counts nets per MAC bucket with the same knapsack recursion as budget derivation
and walks it backwards: pick a total bucket with probability proportional to its count, then at
each position (last to first) a choice with probability proportional to the number of ways the
remaining positions reach the remaining bucket. That draws uniformly among nets whose *bucketed*
MACs fall in a window slightly wider than the band; nets whose exact MACs fall outside the band
are rejected, which leaves the draw exactly uniform over the band.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from nas_kws.nas.cost import MacsTable

SAMPLE_RESOLUTION = 1e-4     # MACs are bucketed in units of high * this


class BandSampler:
    """Uniform sampler over {picks : low <= MACs(picks) <= high} of a MacsTable."""

    def __init__(self, table: MacsTable, low: float, high: float):
        if table.smallest() > high or table.largest() < low:
            raise ValueError(f"MAC band {low:,.0f}..{high:,.0f} is outside what the space can "
                             f"build ({table.smallest():,} .. {table.largest():,} MACs)")
        self.table, self.low, self.high = table, low, high
        self.unit = max(1.0, high * SAMPLE_RESOLUTION)
        slack = len(table.choices)                       # accumulated rounding, in buckets
        self.lo = max(0, int(math.floor(low / self.unit)) - slack)
        self.hi = int(math.ceil(high / self.unit)) + slack
        size = self.hi + 1
        # a candidate over the SRAM bound never fits: its shift lies past every bucket
        self.shifts = [[int(round(m / self.unit)) if table.sram_allows(i, k) else size
                        for k, m in enumerate(macs)] for i, macs in enumerate(table.choices)]
        # counts[i][b]: nets of positions < i whose fixed + bucketed MACs land in bucket b
        first = np.zeros(size)
        start = int(round(table.fixed / self.unit))
        if start < size:
            first[start] = 1.0
        self.counts = [first]
        for shifts in self.shifts:
            prev, new = self.counts[-1], np.zeros(size)
            for s in shifts:
                if s < size:
                    new[s:] += prev[:size - s]
            self.counts.append(new)
        window = self.counts[-1][self.lo:]
        if not window.any():
            raise ValueError(f"no net of this space has {low:,.0f}..{high:,.0f} MACs"
                             f"{table.bounds_text()}")

    def candidates(self) -> float:
        """Nets whose bucketed MACs fall in the (slightly widened) window."""
        return float(self.counts[-1][self.lo:].sum())

    def _draw_bucketed(self, rng: np.random.Generator) -> list[int]:
        window = self.counts[-1][self.lo:]
        bucket = self.lo + int(rng.choice(len(window), p=window / window.sum()))
        picks = []
        for i in range(len(self.shifts) - 1, -1, -1):
            prev = self.counts[i]
            weights = np.array([prev[bucket - s] if 0 <= bucket - s else 0.0
                                for s in self.shifts[i]])
            k = int(rng.choice(len(weights), p=weights / weights.sum()))
            picks.append(k)
            bucket -= self.shifts[i][k]
        picks.reverse()
        return picks

    def accepts(self, picks: list[int]) -> bool:
        """Exact MACs inside [low, high] and within the table's memory bounds."""
        return self.low <= self.table.of(picks) <= self.high and self.table.fits_memory(picks)

    def draw(self, rng: np.random.Generator, max_tries: int = 10_000) -> list[int]:
        """One net, uniformly among those with exact MACs inside [low, high] (and within the
        table's flash bound: rejection, like the band's edges)."""
        for _ in range(max_tries):
            picks = self._draw_bucketed(rng)
            if self.accepts(picks):
                return picks
        raise ValueError(f"no net with {self.low:,.0f}..{self.high:,.0f} MACs"
                         f"{self.table.bounds_text()} found in {max_tries} draws")

    def draw_distinct(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        """`n` different nets (uniform without replacement)."""
        return draw_distinct(self.draw, n, rng, f"{self.low:,.0f}..{self.high:,.0f} MACs")


class VariantSampler:
    """Uniform over the band's nets of several variants (`SpaceUnion`), one BandSampler each
    (None where a variant cannot reach the band). A net is [variant, *picks]: the variant is
    drawn in proportion to its bucketed window's nets, then a net of it, and both are drawn
    again when the net's exact MACs fall outside the band, so every net of the union's band is
    equally likely. With one variant no draw is spent on it: the nets are the BandSampler's."""

    def __init__(self, samplers: list[BandSampler | None]):
        reachable = [s for s in samplers if s is not None]
        if not reachable:
            raise ValueError("no variant of the space reaches the MAC band")
        self.samplers = samplers
        self.low, self.high = reachable[0].low, reachable[0].high
        counts = np.array([s.candidates() if s is not None else 0.0 for s in samplers])
        self.weights = counts / counts.sum()

    def candidates(self) -> float:
        return float(sum(s.candidates() for s in self.samplers if s is not None))

    def macs(self, net: list[int]) -> int:
        return self.samplers[net[0]].table.of(net[1:])

    def macs_range(self) -> list[int]:
        tables = [s.table for s in self.samplers if s is not None]
        return [min(t.smallest() for t in tables), max(t.largest() for t in tables)]

    def draw(self, rng: np.random.Generator, max_tries: int = 10_000) -> list[int]:
        for _ in range(max_tries):
            variant = 0 if len(self.samplers) == 1 else int(
                rng.choice(len(self.samplers), p=self.weights))
            sampler = self.samplers[variant]
            picks = sampler._draw_bucketed(rng)
            if sampler.accepts(picks):
                return [variant, *picks]
        raise ValueError(f"no net with {self.low:,.0f}..{self.high:,.0f} MACs found in "
                         f"{max_tries} draws")

    def draw_distinct(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        return draw_distinct(self.draw, n, rng, f"{self.low:,.0f}..{self.high:,.0f} MACs")

    def draw_per_variant(self, n: int, rng: np.random.Generator) -> list[list[int]]:
        """`n` different nets split as evenly as `n` allows over the variants that reach the
        band, uniform inside each: a search's candidates cover every variant, where a uniform
        draw mostly takes the variant with the most nets in the band. One variant: the nets
        of `draw_distinct`."""
        reachable = [v for v, s in enumerate(self.samplers) if s is not None]
        nets = []
        for k, v in enumerate(reachable):
            share = n // len(reachable) + (k < n % len(reachable))
            nets += [[v, *picks] for picks in self.samplers[v].draw_distinct(share, rng)]
        return nets


def draw_distinct(draw: Callable[[np.random.Generator], list[int]], n: int,
                  rng: np.random.Generator, band: str) -> list[list[int]]:
    """`n` different nets of `draw` (uniform without replacement)."""
    seen: list[list[int]] = []
    for _ in range(100 * n):
        picks = draw(rng)
        if picks not in seen:
            seen.append(picks)
        if len(seen) == n:
            return seen
    raise ValueError(f"asked for {n} different nets with {band}; found only {len(seen)}")
