"""Cost of a model for one clip: parameters, MACs, BC-ResNet-style #Mult, weight size at b bits
and a peak activation-memory estimate, from one forward pass on a dummy input.

Counting rules (per clip, i.e. divided by the dummy batch size):
- macs: multiply-accumulates of every convolution (weight elements per output element, so
  grouped and depthwise convs count in_channels / groups) and every matrix product (linear
  layers). Bias adds are not counted.
- mults_paper: macs plus every element-wise *multiplication*, one per output element of:
  batch norm (also inside SubSpectralNorm; the per-channel scale), SiLU / sigmoid / hard-swish
  style gates, tensor products (mul/div), and mean / average pooling (the 1/n scale, once per
  output). ReLU/ReLU6, additions, padding and views multiply nothing and are free. For
  BC-ResNet-8 on 40x101 this gives 88.2 M against the paper's 89.1 M (its counter is unpublished).
- peak_activation_bytes: float32, batch 1; the largest, over the forward's operations, of the bytes
  of the distinct activation tensors an operation reads and writes (parameters and buffers
  excluded). A lower bound on the working memory of a layer-by-layer runtime.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from nas_kws.features import FeatureConfig

aten = torch.ops.aten
CONV_OPS = {aten.convolution.default}
MATMUL_OPS = {aten.mm.default: 0, aten.bmm.default: 0,  # op -> index of the left matrix
              aten.addmm.default: 1, aten.baddbmm.default: 1}
MULTIPLY_OPS = {
    aten._native_batch_norm_legit_no_training.default, aten.native_batch_norm.default,
    aten._native_batch_norm_legit.default, aten.silu.default, aten.silu_.default,
    aten.sigmoid.default, aten.sigmoid_.default, aten.hardswish.default, aten.hardswish_.default,
    aten.hardsigmoid.default, aten.hardsigmoid_.default, aten.mul.Tensor, aten.mul_.Tensor,
    aten.div.Tensor, aten.div_.Tensor, aten.mean.dim, aten.mean.default,
    aten.avg_pool2d.default, aten._adaptive_avg_pool2d.default,
}


@dataclass
class Profile:
    params: int
    macs: int
    mults_paper: int
    peak_activation_bytes: int
    feature_shape: tuple[int, int]

    def size_bytes(self, bits: int) -> int:
        """Weight storage with every parameter at `bits` bits, rounded up to whole bytes."""
        if bits < 1:
            raise ValueError(f"bits: expected a positive bit width, got {bits}")
        return math.ceil(self.params * bits / 8)


def _first_tensor(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def _tensors(values: Any) -> list[torch.Tensor]:
    flat = values if isinstance(values, (tuple, list)) else [values]
    found = []
    for v in flat:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (tuple, list)):
            found += _tensors(v)
    return found


class _Counter(TorchDispatchMode):
    """Sees every aten op of the forward, functional ones (adds, means) included."""

    def __init__(self, weight_ptrs: set[int]):
        super().__init__()
        self.weight_ptrs = weight_ptrs
        self.macs = 0
        self.mults = 0
        self.peak_bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        result = _first_tensor(out)
        if func in CONV_OPS:  # weight (out, in / groups, *kernel): one MAC per weight of a filter
            self.macs += result.numel() * args[1][0].numel()
        elif func in MATMUL_OPS:
            self.macs += result.numel() * args[MATMUL_OPS[func]].shape[-1]
        elif func in MULTIPLY_OPS:
            self.mults += result.numel()
        storages = {}
        for t in _tensors(list(args) + list((kwargs or {}).values())) + _tensors(out):
            ptr = t.untyped_storage().data_ptr()
            if ptr not in self.weight_ptrs:
                storages[ptr] = t.untyped_storage().nbytes()
        self.peak_bytes = max(self.peak_bytes, sum(storages.values()))
        return out


def profile_model(model: nn.Module, feature_config: FeatureConfig | None = None,
                  batch: int = 1) -> Profile:
    """Run `model` once in eval mode on a random (batch, 1, bins, frames) input; per clip."""
    config = feature_config or getattr(model, "feature_config", None)
    if config is None:
        raise ValueError("profile_model: the model has no .feature_config; pass feature_config=")
    bins, frames = config.shape
    weight_ptrs = {t.untyped_storage().data_ptr()
                   for t in list(model.parameters()) + list(model.buffers())}
    counter = _Counter(weight_ptrs)
    x = torch.randn(batch, 1, bins, frames, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return Profile(params=sum(p.numel() for p in model.parameters()),
                   macs=counter.macs // batch,
                   mults_paper=(counter.macs + counter.mults) // batch,
                   peak_activation_bytes=counter.peak_bytes // batch,
                   feature_shape=(bins, frames))


def format_profile(profile: Profile, bits: int = 8) -> str:
    bins, frames = profile.feature_shape
    rows = [("input", f"{bins} x {frames}"),
            ("params", f"{profile.params:,}"),
            ("MACs", f"{profile.macs:,} ({profile.macs / 1e6:.2f} M)"),
            ("#Mult (paper)", f"{profile.mults_paper:,} ({profile.mults_paper / 1e6:.2f} M)"),
            ("size fp32", f"{profile.size_bytes(32) / 1024:.1f} KiB"),
            (f"size {bits}-bit", f"{profile.size_bytes(bits) / 1024:.1f} KiB"),
            ("peak activations", f"{profile.peak_activation_bytes / 1024:.1f} KiB (fp32, batch 1)")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
