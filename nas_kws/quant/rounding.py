"""Post-training rounding of weights (Peter et al.'s `--quantize`): no data, no training.

Batch norm is folded first, then the weight of every conv and linear layer, the classifier
included, is replaced by its nearest value on a b-bit grid. Symmetric grids use the max-abs
scale and 2^(b-1) - 1 levels each side of zero (at 1 bit, the sign times the mean magnitude, the
least-squares binary weight); asymmetric grids span [min, max] with 2^b levels, the paper's
variant. Biases stay at 32 bits, as in an int8 deployment where they live in the accumulator.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from nas_kws.quant.fold import WEIGHT_LAYERS, fold_batchnorm


@dataclass(frozen=True)
class RoundingScheme:
    bits: int
    per_channel: bool = True
    symmetric: bool = True

    def __post_init__(self) -> None:
        if not 1 <= self.bits <= 16:
            raise ValueError(f"bits: expected 1..16, got {self.bits}")

    @property
    def name(self) -> str:
        return (f"{'per-channel' if self.per_channel else 'per-tensor'} "
                f"{'symmetric max-abs' if self.symmetric else 'asymmetric min/max'}")


def _reduce_dims(w: torch.Tensor, per_channel: bool) -> tuple[int, ...]:
    """All dims (per tensor) or all but the output-channel dim 0 (per channel)."""
    return tuple(range(1, w.dim())) if per_channel else tuple(range(w.dim()))


def round_tensor(w: torch.Tensor, scheme: RoundingScheme) -> torch.Tensor:
    """`w` rounded to the scheme's grid, back in float (fake quantization)."""
    dims = _reduce_dims(w, scheme.per_channel)
    if scheme.symmetric:
        if scheme.bits == 1:
            magnitude = w.abs().mean(dim=dims, keepdim=True)
            return torch.where(w >= 0, magnitude, -magnitude)
        levels = 2 ** (scheme.bits - 1) - 1
        scale = (w.abs().amax(dim=dims, keepdim=True) / levels).clamp_min(1e-12)
        return torch.round(w / scale).clamp(-levels, levels) * scale
    lo, hi = w.amin(dim=dims, keepdim=True), w.amax(dim=dims, keepdim=True)
    levels = 2 ** scheme.bits - 1
    scale = ((hi - lo) / levels).clamp_min(1e-12)
    zero_point = torch.round(-lo / scale)
    q = (torch.round(w / scale) + zero_point).clamp(0, levels)
    return (q - zero_point) * scale


@torch.no_grad()
def round_weights(model: nn.Module, scheme: RoundingScheme) -> nn.Module:
    """A copy of `model` with every conv/linear weight rounded (no folding: see round_model)."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, WEIGHT_LAYERS):
            module.weight.copy_(round_tensor(module.weight, scheme))
    return model


def round_model(model: nn.Module, scheme: RoundingScheme) -> nn.Module:
    """Fold batch norm, then round every weight: the model a b-bit deployment would run."""
    return round_weights(fold_batchnorm(model), scheme)
