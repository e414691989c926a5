"""Expected MACs of the supernet: E[F] = fixed + sum_i sum_k p_ik * MACs(op_ik).

Each candidate is measured once by the profiler on the input shape it sees inside the net, and
the stem, fixed blocks and head make the fixed part. MACs add up layer by layer, so for one-hot
probabilities E[F] is exactly the profiler's count of the derived net.
"""
from __future__ import annotations

from dataclasses import dataclass

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


def module_macs(module: nn.Module, shape: Shape, features: FeatureConfig) -> int:
    """Conv/linear MACs of `module` for one clip whose activation entering it has `shape`."""
    if next(module.parameters(), None) is None:  # zero (identity): no conv, no linear
        return 0
    return profile_model(_AtShape(module, shape), features).macs


@dataclass
class MacsTable:
    fixed: int                    # stem, fixed blocks and head
    choices: list[list[int]]      # per searchable position, per candidate

    def expected(self, probs: list[torch.Tensor]) -> torch.Tensor:
        """E[F], differentiable in the probabilities."""
        total = torch.tensor(float(self.fixed), device=probs[0].device)
        for p, macs in zip(probs, self.choices):
            total = total + (p * torch.tensor(macs, dtype=p.dtype, device=p.device)).sum()
        return total

    def of(self, picks: list[int]) -> int:
        """MACs of the net with candidate picks[i] at searchable position i."""
        return self.fixed + sum(macs[k] for macs, k in zip(self.choices, picks))

    def smallest(self) -> int:
        return self.fixed + sum(min(m) for m in self.choices)

    def largest(self) -> int:
        return self.fixed + sum(max(m) for m in self.choices)


def macs_table(supernet) -> MacsTable:
    """Profile every part of a `Supernet` at the shapes its search space inferred; a block that
    recurs at the same input shape (repeated positions) is measured once."""
    space, features = supernet.space, supernet.space.features
    measured: dict[tuple[str, Shape], int] = {}

    def block_macs(block: dict, module: nn.Module, shape: Shape) -> int:
        key = (repr(block), shape)
        if key not in measured:
            measured[key] = module_macs(module, shape, features)
        return measured[key]

    fixed = module_macs(supernet.stem, input_shape(features), features)
    fixed += module_macs(supernet.head, space.head_in_shape, features)
    choices = []
    for position, module in zip(space.positions, supernet.blocks):
        if position.searchable:
            choices.append([block_macs(block, candidate, position.in_shape)
                            for block, candidate in zip(position.choices, module.candidates)])
        else:
            fixed += block_macs(position.choices[0], module, position.in_shape)
    return MacsTable(fixed, choices)
