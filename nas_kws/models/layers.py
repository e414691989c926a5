"""Tiny layer helpers shared by the model families, the genotype builder and the search spaces.
A leaf of models/, so every one of them can import it without an import circle."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: the nearest multiple of `divisor`, never 10% below `value`
    (72 * 0.75 / 1 / 1.25 -> 56 / 72 / 88, as in Peter et al.)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def as_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """A (frequency, time) pair from an int or a two-element list."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output length of a conv with 'same' padding kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def normalize_in_default_layout(norm: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                                training: bool) -> torch.Tensor:
    """`norm(x)`, but a channels_last map of a width that is not a multiple of 16 is trained in
    the default layout. PyTorch's CPU channels_last batch-norm kernels run 3-12x slower at such
    widths (forward + backward, batch 100: C = 12 at 2 threads 57 ms against 13 ms with both
    layout copies), which made narrow nets like BC-ResNet-1 train slower with 2 threads than
    the reference code. Same statistics and outputs up to rounding; eval and export untouched."""
    if (training and x.dim() == 4 and x.shape[1] % 16 and x.device.type == "cpu"
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)):
        return norm(x.contiguous()).contiguous(memory_format=torch.channels_last)
    return norm(x)


class BatchNorm2d(nn.BatchNorm2d):
    """nn.BatchNorm2d through `normalize_in_default_layout` (the models' batch norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_in_default_layout(super().forward, x, self.training)
