"""From architecture parameters to a net: argmax per position, or, under a MACs budget, the
most probable net whose MACs fall inside the budget band; with flash / SRAM bounds on the table,
the most probable net that also respects them."""
from __future__ import annotations

import math

import numpy as np
import torch

from nas_kws.nas.cost import MacsTable

BUDGET_RESOLUTION = 1e-4     # MACs are bucketed in units of ref * this for the budget search


def argmax_picks(probs: list[torch.Tensor]) -> list[int]:
    return [int(p.argmax()) for p in probs]


def budget_picks(probs: list[torch.Tensor], table: MacsTable, low: float, high: float) -> list[int]:
    """argmax of sum_i log p_i(k_i) subject to low <= MACs <= high, and to the table's memory
    bounds: candidates over the SRAM bound are excluded (a net's peak is its largest part's),
    and flash, which adds up, is priced by a Lagrange multiplier found by bisection (the most
    probable net within the flash bound that some multiplier selects)."""
    if table.smallest() > high or table.largest() < low:
        raise ValueError(f"budget {low:,.0f}..{high:,.0f} MACs is outside what the space can "
                         f"build ({table.smallest():,} .. {table.largest():,} MACs)")
    logps = [torch.log(p.detach().clamp_min(1e-30)).cpu().numpy().astype(np.float64)
             for p in probs]
    for i, logp in enumerate(logps):
        logp[[not table.sram_allows(i, k) for k in range(len(logp))]] = -np.inf
    picks = _knapsack(logps, table, low, high)
    if table.flash_of(picks) <= table.max_flash:
        return picks
    cheapest, price = None, 1.0
    while cheapest is None and price < 1e12:    # a price that reaches the bound, if any does
        found = _knapsack(_priced(logps, table, price), table, low, high)
        cheapest = found if table.flash_of(found) <= table.max_flash else None
        price *= 8
    if cheapest is None:
        raise ValueError(f"no net with {low:,.0f}..{high:,.0f} MACs{table.bounds_text()}")
    lo, hi = 0.0, price / 8
    for _ in range(30):
        mid = (lo + hi) / 2
        found = _knapsack(_priced(logps, table, mid), table, low, high)
        if table.flash_of(found) <= table.max_flash:
            hi, cheapest = mid, found
        else:
            lo = mid
    return cheapest


def _priced(logps: list[np.ndarray], table: MacsTable, price: float) -> list[np.ndarray]:
    """log p minus `price` per flash KiB."""
    return [lp - price * np.asarray(f) / 1024 for lp, f in zip(logps, table.flash)]


def _knapsack(logps: list[np.ndarray], table: MacsTable, low: float, high: float) -> list[int]:
    """argmax of sum_i logps[i][k_i] subject to low <= MACs <= high, exactly, by dynamic
    programming over bucketed MACs (a multiple-choice knapsack). The bucket rounding is kept
    out of the band's edges, so the returned net's exact MACs are always inside it."""
    unit = max(1.0, high * BUDGET_RESOLUTION)
    slack = len(table.choices) * unit          # worst-case accumulated rounding
    size = int(high / unit) + 1
    best = np.full(size, -np.inf)
    start = int(round(table.fixed / unit))
    best[min(start, size - 1)] = 0.0
    back = []
    for logp, macs in zip(logps, table.choices):
        new = np.full(size, -np.inf)
        pick = np.zeros(size, dtype=np.int64)
        for k, m in enumerate(macs):
            shift = int(round(m / unit))
            if shift >= size:
                continue
            cand = np.full(size, -np.inf)
            cand[shift:] = best[:size - shift] + logp[k]
            better = cand > new
            new[better], pick[better] = cand[better], k
        best = new
        back.append(pick)
    lo, hi = int(math.ceil((low + slack) / unit)), int((high - slack) / unit)
    window = best[max(lo, 0):hi + 1]
    if window.size == 0 or not np.isfinite(window).any():
        raise ValueError(f"no net of this space has {low:,.0f}..{high:,.0f} MACs"
                         f"{table.bounds_text()}")
    bucket = max(lo, 0) + int(np.argmax(window))
    picks = []
    for pick, macs in zip(reversed(back), reversed(table.choices)):
        k = int(pick[bucket])
        picks.append(k)
        bucket -= int(round(macs[k] / unit))
    picks.reverse()
    return picks


def derive_picks(probs: list[torch.Tensor], table: MacsTable,
                 budget: tuple[float, float] | None = None) -> list[int]:
    """Argmax per position; with a (low, high) MACs budget or memory bounds, the best net
    inside them."""
    if budget is None and not table.memory_bounded:
        return argmax_picks(probs)
    return budget_picks(probs, table, *(budget or (0, table.largest())))
