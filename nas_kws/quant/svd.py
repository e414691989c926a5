"""Low-rank compression by truncated SVD, with ranks picked greedily to meet a MAC budget.

- linear and pointwise (1x1) convs: W (O x I) ~ U_r V_r, one layer becomes I -> r -> O;
- full (groups=1) kxk convs, spatial SVD: the kernel, seen as a (I*kh) x (O*kw) matrix, splits into
  a kh x 1 conv to r channels then a 1 x kw conv to O channels (stride, padding and dilation split
  the same way), so the MACs per output fall from I*O*kh*kw to about r*(I*kh + O*kw).
Depthwise convs are left alone: they are already rank one per channel. At full rank every
factorization reproduces its layer exactly. Factor layers reuse the original layer's class, so a
conv subclass with its own padding rule (DS-CNN's 'SAME') keeps it in both halves.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from nas_kws.quant.fold import WEIGHT_LAYERS, example_input, run_hooked

RANK_FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 3 / 8, 1 / 2, 5 / 8, 3 / 4, 7 / 8)


def layer_kind(layer: nn.Module) -> str | None:
    """'linear', 'pointwise', 'spatial', or None for layers SVD does not apply to."""
    if isinstance(layer, nn.Linear):
        return "linear"
    if isinstance(layer, nn.Conv2d) and layer.groups == 1:
        kh, kw = layer.kernel_size
        if (kh, kw) == (1, 1):
            return "pointwise"
        if kh > 1 and kw > 1:
            return "spatial"
    return None


def full_rank(layer: nn.Module) -> int:
    kind = layer_kind(layer)
    if kind in ("linear", "pointwise"):
        return min(layer.weight.shape[0], layer.weight.shape[1])
    if kind == "spatial":
        out_ch, in_ch, kh, kw = layer.weight.shape
        return min(in_ch * kh, out_ch * kw)
    raise ValueError(f"{type(layer).__name__}: not a linear, pointwise or full kxk conv")


def _split(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """matrix (m x n) ~ left (m x rank) @ right (rank x n), singular values shared evenly."""
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (u[:, :rank] * root).float(), (root[:, None] * vh[:rank]).float()


def _conv_like(layer: nn.Conv2d, in_ch: int, out_ch: int, kernel, stride, padding, dilation,
               bias: bool) -> nn.Conv2d:
    return type(layer)(in_ch, out_ch, kernel, stride=stride, padding=padding, dilation=dilation,
                       bias=bias, padding_mode=layer.padding_mode)


def _padding_pair(layer: nn.Conv2d) -> tuple[object, object]:
    """Padding for the (height, width) halves: a string ('same'/'valid') applies to both."""
    if isinstance(layer.padding, str):
        return layer.padding, layer.padding
    ph, pw = layer.padding
    return (ph, 0), (0, pw)


@torch.no_grad()
def factorize(layer: nn.Module, rank: int) -> nn.Sequential:
    """The two-layer replacement of `layer` at `rank` (exact when rank = full_rank(layer))."""
    kind = layer_kind(layer)
    if not 1 <= rank <= full_rank(layer):
        raise ValueError(f"rank: expected 1..{full_rank(layer)} for this layer, got {rank}")
    has_bias = layer.bias is not None
    if kind == "linear":
        left, right = _split(layer.weight, rank)
        first = nn.Linear(layer.in_features, rank, bias=False)
        second = nn.Linear(rank, layer.out_features, bias=has_bias)
        first.weight.copy_(right)
        second.weight.copy_(left)
    elif kind == "pointwise":
        out_ch, in_ch = layer.weight.shape[:2]
        left, right = _split(layer.weight.view(out_ch, in_ch), rank)
        first = _conv_like(layer, in_ch, rank, 1, layer.stride, layer.padding, 1, False)
        second = _conv_like(layer, rank, out_ch, 1, 1, 0, 1, has_bias)
        first.weight.copy_(right.view(rank, in_ch, 1, 1))
        second.weight.copy_(left.view(out_ch, rank, 1, 1))
    else:
        out_ch, in_ch, kh, kw = layer.weight.shape
        matrix = layer.weight.permute(1, 2, 0, 3).reshape(in_ch * kh, out_ch * kw)
        left, right = _split(matrix, rank)
        pad_h, pad_w = _padding_pair(layer)
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        first = _conv_like(layer, in_ch, rank, (kh, 1), (sh, 1), pad_h, (dh, 1), False)
        second = _conv_like(layer, rank, out_ch, (1, kw), (1, sw), pad_w, (1, dw), has_bias)
        first.weight.copy_(left.t().reshape(rank, in_ch, kh, 1))
        second.weight.copy_(right.t().reshape(out_ch, kw, rank).permute(0, 2, 1).unsqueeze(2))
    if has_bias:
        second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def weight_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Conv/linear MACs of running `module` on `x`, per sample (profiling's counting rule)."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        total += output.numel() * layer.weight[0].numel()

    run_hooked(module, x, [m.register_forward_hook(hook) for m in module.modules()
                           if isinstance(m, WEIGHT_LAYERS)])
    return total // len(x)


@dataclass
class Compressible:
    name: str
    kind: str
    full_rank: int
    macs: int
    example: torch.Tensor   # the layer's input for one clip, to measure factor MACs


def compressible_layers(model: nn.Module) -> dict[str, Compressible]:
    """Every layer SVD applies to, in forward order, with its MACs for one clip."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name:
                                         inputs.setdefault(name, inp[0]))
             for name, m in model.named_modules() if layer_kind(m) is not None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(example_input(model, batch=1))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    found = {}
    for name, x in inputs.items():
        layer = model.get_submodule(name)
        found[name] = Compressible(name, layer_kind(layer), full_rank(layer),
                                   weight_macs(layer, x), x)
    return found


def factorized_macs(layer: nn.Module, info: Compressible, rank: int) -> int:
    return weight_macs(factorize(layer, rank), info.example)


def apply_ranks(model: nn.Module, ranks: dict[str, int]) -> nn.Module:
    """A copy of `model` with each named layer replaced by its rank-r factorization."""
    model = copy.deepcopy(model)
    for name, rank in ranks.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"svd ranks: {type(model).__name__} has no layer {name!r}") from None
        if layer_kind(layer) is None:
            raise ValueError(f"svd ranks: layer {name!r} ({type(layer).__name__}) cannot be "
                             "factorized; expected a linear, pointwise or full kxk conv")
        model.set_submodule(name, factorize(layer, rank))
    return model


@dataclass
class RankOption:
    rank: int
    macs_saved: int
    sensitivity: float       # score increase with only this layer at this rank


def measure_sensitivity(model: nn.Module, score: Callable[[nn.Module], float],
                        fractions: tuple[float, ...] = RANK_FRACTIONS,
                        ) -> dict[str, list[RankOption]]:
    """For each layer, each candidate rank that saves MACs, the score change it causes alone."""
    base = score(model)
    options: dict[str, list[RankOption]] = {}
    for name, info in compressible_layers(model).items():
        layer = model.get_submodule(name)
        ranks = sorted({max(1, math.ceil(f * info.full_rank)) for f in fractions}, reverse=True)
        for rank in ranks:
            saved = info.macs - factorized_macs(layer, info, rank)
            if saved <= 0:
                continue
            model.set_submodule(name, factorize(layer, rank))
            try:
                delta = score(model) - base
            finally:
                model.set_submodule(name, layer)
            options.setdefault(name, []).append(RankOption(rank, saved, delta))
    return options


def select_ranks(options: dict[str, list[RankOption]], total_macs: int,
                 target_macs: int) -> dict[str, int]:
    """Greedy: repeatedly take the rank cut with the least sensitivity per MAC saved, until the
    model's MACs reach `target_macs`."""
    chosen: dict[str, RankOption] = {}
    macs = total_macs
    while macs > target_macs:
        best = None
        for name, opts in options.items():
            now = chosen.get(name)
            for opt in opts:
                if now is not None and opt.rank >= now.rank:
                    continue
                gain = opt.macs_saved - (now.macs_saved if now else 0)
                cost = max(opt.sensitivity - (now.sensitivity if now else 0.0), 0.0)
                key = (cost / gain, -gain)
                if gain > 0 and (best is None or key < best[0]):
                    best = (key, name, opt)
        if best is None:
            floor = total_macs - sum(max(o.macs_saved for o in opts) for opts in options.values())
            raise ValueError(f"target MACs {target_macs:,} unreachable by SVD: the smallest "
                             f"ranks tried give {floor:,} ({floor / total_macs:.2f} of "
                             f"{total_macs:,})")
        _, name, opt = best
        macs -= opt.macs_saved - (chosen[name].macs_saved if name in chosen else 0)
        chosen[name] = opt
    return {name: opt.rank for name, opt in chosen.items()}
