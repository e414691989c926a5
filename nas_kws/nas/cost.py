"""Expected MACs of the supernet: E[F] = fixed + sum_i sum_k p_ik * MACs(op_ik).

Each candidate is measured once by the profiler on the input shape it sees inside the net, and
the stem, fixed blocks and head make the fixed part. MACs add up layer by layer, so for one-hot
probabilities E[F] is exactly the profiler's count of the derived net.

The same measurement gives each part's MCU memory (nas_kws.profiling): flash adds up like MACs,
and peak SRAM is the largest part's, since between two blocks only the one tensor passed on is
alive. `MacsTable.bounded` attaches a flash / SRAM bound that derivation and sampling respect;
the expected flash and peak SRAM under the architecture's probabilities price it in the
architecture loss (arch_loss.bound_penalty).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models.genotype import Shape, input_shape
from nas_kws.profiling import profile_model


class _AtShape(nn.Module):
    """Runs `module` on a random input of `shape`: the profiler feeds a net's (1, 1, bins, frames)
    features, while a block inside the net sees (1, channels, bins, frames)."""

    def __init__(self, module: nn.Module, shape: Shape):
        super().__init__()
        self.module = module
        self.shape = shape

    def forward(self, _: torch.Tensor) -> torch.Tensor:
        param = next(self.module.parameters())
        return self.module(torch.randn(1, *self.shape, device=param.device))


def module_cost(module: nn.Module, shape: Shape, features: FeatureConfig) -> tuple[int, int, int]:
    """(MACs, flash bytes, peak SRAM bytes) of `module` for one clip whose activation entering
    it has `shape`."""
    if next(module.parameters(), None) is None:  # zero (identity): no conv, no linear
        return 0, 0, 0
    profile = profile_model(_AtShape(module, shape), features)
    return profile.macs, profile.flash_bytes, profile.peak_sram_bytes


def module_macs(module: nn.Module, shape: Shape, features: FeatureConfig) -> int:
    """Conv/linear MACs of `module` for one clip whose activation entering it has `shape`."""
    return module_cost(module, shape, features)[0]


@dataclass
class MacsTable:
    fixed: int                    # stem, fixed blocks and head
    choices: list[list[int]]      # per searchable position, per candidate
    flash: list[list[int]] = field(default_factory=list)   # bytes, like choices
    sram: list[list[int]] = field(default_factory=list)    # bytes, like choices
    fixed_flash: int = 0
    fixed_sram: int = 0           # the largest fixed part's
    max_flash: float = math.inf   # bounds (bytes) a derived or sampled net must respect
    max_sram: float = math.inf

    def bounded(self, max_flash_kb: float = 0, max_sram_kb: float = 0) -> "MacsTable":
        """This table with flash / SRAM bounds in KiB (0: none); an SRAM bound the fixed parts
        already exceed, or that leaves a position without a candidate, is refused."""
        table = replace(self, max_flash=max_flash_kb * 1024 or math.inf,
                        max_sram=max_sram_kb * 1024 or math.inf)
        if table.fixed_sram > table.max_sram:
            raise ValueError(f"max_sram_kb {max_sram_kb:g}: the stem, head and fixed blocks "
                             f"alone need {table.fixed_sram / 1024:.1f} KiB of SRAM")
        for i, srams in enumerate(table.sram):
            if min(srams) > table.max_sram:
                raise ValueError(f"max_sram_kb {max_sram_kb:g}: every candidate of searchable "
                                 f"position {i} needs more (>= {min(srams) / 1024:.1f} KiB)")
        if table.fixed_flash + sum(map(min, table.flash)) > table.max_flash:
            raise ValueError(f"max_flash_kb {max_flash_kb:g}: the smallest net of the space "
                             "needs "
                             f"{(table.fixed_flash + sum(map(min, table.flash))) / 1024:.1f} KiB")
        return table

    @property
    def memory_bounded(self) -> bool:
        return math.isfinite(self.max_flash) or math.isfinite(self.max_sram)

    def sram_allows(self, position: int, k: int) -> bool:
        return not self.sram or self.sram[position][k] <= self.max_sram

    def flash_of(self, picks: list[int]) -> int:
        return self.fixed_flash + sum(f[k] for f, k in zip(self.flash, picks))

    def sram_of(self, picks: list[int]) -> int:
        return max([self.fixed_sram] + [s[k] for s, k in zip(self.sram, picks)])

    def fits_memory(self, picks: list[int]) -> bool:
        return (not self.memory_bounded or self.flash_of(picks) <= self.max_flash
                and self.sram_of(picks) <= self.max_sram)

    def bounds_text(self) -> str:
        """', within F KiB flash and S KiB SRAM' for error messages ('' without bounds)."""
        parts = [f"{v / 1024:g} KiB {name}" for name, v in
                 (("flash", self.max_flash), ("SRAM", self.max_sram)) if math.isfinite(v)]
        return f" within {' and '.join(parts)}" if parts else ""

    def expected(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[F], differentiable in the probabilities."""
        return _expectation(self.fixed, self.choices, probs)

    def expected_flash(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[flash bytes]: flash adds up over positions, like MACs."""
        return _expectation(self.fixed_flash, self.flash, probs)

    def expected_sram(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[peak SRAM bytes] of a net drawn from `probs`, exactly and differentiably. The
        positions are drawn independently, so P(peak <= v) = prod_i P(S_i <= v) for every v at
        or above the fixed parts' peak; E[peak] = sum_v v * (P(peak <= v) - P(peak < v)) over the
        (few hundred) distinct figures. Unlike a soft max of per-position expectations it has no
        temperature and equals the profiled peak for one-hot probabilities."""
        kind = dict(dtype=probs[0].dtype, device=probs[0].device)
        levels = torch.tensor(sorted({self.fixed_sram, *(s for srams in self.sram for s in srams
                                                          if s > self.fixed_sram)}), **kind)
        cdf = torch.ones_like(levels)
        for p, srams in zip(probs, self.sram):
            below = torch.tensor(srams, **kind)[None] <= levels[:, None]
            cdf = cdf * (below * p[None]).sum(1)
        pmf = torch.diff(cdf, prepend=torch.zeros_like(cdf[:1]))
        return (pmf * levels).sum()

    def of(self, picks: list[int]) -> int:
        """MACs of the net with candidate picks[i] at searchable position i."""
        return self.fixed + sum(macs[k] for macs, k in zip(self.choices, picks))

    def smallest(self) -> int:
        return self.fixed + sum(min(m) for m in self.choices)

    def largest(self) -> int:
        return self.fixed + sum(max(m) for m in self.choices)


def _expectation(fixed: int, per_candidate: list[list[int]],
                 probs: list[torch.Tensor]) -> torch.Tensor:
    """fixed + sum_i sum_k p_ik * per_candidate[i][k]: the expectation of a cost that adds up
    over positions."""
    total = torch.tensor(float(fixed), device=probs[0].device)
    for p, costs in zip(probs, per_candidate):
        total = total + (p * torch.tensor(costs, dtype=p.dtype, device=p.device)).sum()
    return total


def macs_table(supernet) -> MacsTable:
    """Profile every part of a `Supernet` at the shapes its search space inferred; a block that
    recurs at the same input shape (repeated positions) is measured once."""
    space, features = supernet.space, supernet.space.features
    measured: dict[tuple[str, Shape], tuple[int, int, int]] = {}

    def block_cost(block: dict, module: nn.Module, shape: Shape) -> tuple[int, int, int]:
        key = (repr(block), shape)
        if key not in measured:
            measured[key] = module_cost(module, shape, features)
        return measured[key]

    fixed_parts = [module_cost(supernet.stem, input_shape(features), features),
                   module_cost(supernet.head, space.head_in_shape, features)]
    costs = []
    for position, module in zip(space.positions, supernet.blocks):
        if position.searchable:
            costs.append([block_cost(block, candidate, position.in_shape)
                          for block, candidate in zip(position.choices, module.candidates)])
        else:
            fixed_parts.append(block_cost(position.choices[0], module, position.in_shape))
    return MacsTable(fixed=sum(c[0] for c in fixed_parts),
                     choices=[[c[0] for c in cands] for cands in costs],
                     flash=[[c[1] for c in cands] for cands in costs],
                     sram=[[c[2] for c in cands] for cands in costs],
                     fixed_flash=sum(c[1] for c in fixed_parts),
                     fixed_sram=max(c[2] for c in fixed_parts))
