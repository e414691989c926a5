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
- flash_bytes (a full-integer deployment, e.g. TFLite Micro): per conv/linear, 1 byte per weight,
  4 per output channel for its float32 scale and 4 per output channel for its int32 bias (when it
  has one or a batch norm folds into it); a batch norm that cannot fold (SubSpectralNorm, or one
  not right after a conv) becomes a per-channel multiply-add: 1 + 4 + 4 bytes per channel.
- peak_sram_bytes: int8 activations, batch 1: the largest sum of tensors alive at once, walking
  the operations in execution order; a tensor lives from the operation that writes it to the last
  that reads it, so inputs, outputs and residual branches held for a later add all count. Views
  share their tensor's bytes, and an element-wise unary op (batch norm, ReLU, SiLU, dropout) or a
  zero padding whose input is read by nothing later is fused into its neighbour, as a deployment
  runtime does (TFLite fuses ReLU into the conv or add and pads inside the conv).
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
BATCH_NORM_OPS = {aten._native_batch_norm_legit_no_training.default,
                  aten.native_batch_norm.default, aten._native_batch_norm_legit.default}
FUSED_UNARY_OPS = BATCH_NORM_OPS | {
    aten.relu.default, aten.relu_.default, aten.silu.default, aten.silu_.default,
    aten.hardtanh.default, aten.hardtanh_.default, aten.hardswish.default,
    aten.hardswish_.default, aten.clone.default, aten.dropout.default,
    aten.feature_dropout.default}
PAD_OPS = {aten.constant_pad_nd.default, aten.pad.default}   # folded into the next conv's padding
SCALE_BYTES = BIAS_BYTES = 4     # float32 per-channel scale, int32 bias


@dataclass
class Profile:
    params: int
    macs: int
    mults_paper: int
    peak_activation_bytes: int
    feature_shape: tuple[int, int]
    flash_bytes: int = 0
    peak_sram_bytes: int = 0

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
        self.trace = _MemoryTrace()

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
        self.trace.record(func, args, out, self.weight_ptrs)
        return out


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


class _MemoryTrace:
    """Operations in execution order, as (op, activation storages read, storages written), for
    the int8 SRAM walk, and the conv/linear/batch-norm parameters for the flash count."""

    def __init__(self):
        self.ops: list[tuple[Any, list[int], list[int]]] = []
        self.elements: dict[int, int] = {}        # storage -> elements
        self.keep: list[torch.Tensor] = []        # outputs kept alive, so no address is reused
        self.layers: dict[int, list[int]] = {}    # weight storage -> [weight elements, channels]
        self.biased: set[int] = set()             # weight storages with a bias (own or folded)
        self.producer: dict[int, int] = {}        # activation storage -> weight storage
        self.loose_norm_channels = 0

    def record(self, func, args, out, weight_ptrs: set[int]) -> None:
        inputs = [t for t in _tensors(list(args)) if _key(t) not in weight_ptrs]
        outputs = [t for t in _tensors(out)[:1] if _key(t) not in weight_ptrs]
        self.keep += outputs
        for t in inputs + outputs:
            self.elements[_key(t)] = max(self.elements.get(_key(t), 0),
                                         t.untyped_storage().nbytes() // t.element_size())
        self.ops.append((func, [_key(t) for t in inputs], [_key(t) for t in outputs]))
        weight = {aten.convolution.default: 1, aten.addmm.default: 2, aten.mm.default: 1}.get(func)
        if weight is not None and _key(args[weight]) in weight_ptrs:
            w = args[weight]
            channels = w.shape[0] if func is aten.convolution.default else w.shape[-1]
            self.layers[_key(w)] = [w.numel(), channels]
            if func is aten.addmm.default or (func is aten.convolution.default
                                              and args[2] is not None):
                self.biased.add(_key(w))
            self.producer[_key(outputs[0])] = _key(w)
        elif func in BATCH_NORM_OPS:
            layer = self.producer.get(_key(args[0]))
            if layer is not None:
                self.biased.add(layer)
            else:
                self.loose_norm_channels += args[0].shape[1]

    def flash_bytes(self) -> int:
        layers = sum(n + SCALE_BYTES * c + (BIAS_BYTES * c if key in self.biased else 0)
                     for key, (n, c) in self.layers.items())
        return layers + self.loose_norm_channels * (1 + SCALE_BYTES + BIAS_BYTES)

    def peak_sram_bytes(self) -> int:
        """Largest sum of int8 tensors alive at one operation (see the module docstring)."""
        last_read = {key: i for i, (_, reads, _) in enumerate(self.ops) for key in reads}
        buffer: dict[int, int] = {}               # storage -> the buffer it lives in
        for i, (func, reads, writes) in enumerate(self.ops):
            for key in reads:
                buffer.setdefault(key, key)
            fused = (len(reads) == 1 and writes and last_read[reads[0]] == i
                     and (func in PAD_OPS or func in FUSED_UNARY_OPS
                          and self.elements[writes[0]] == self.elements[reads[0]]))
            for key in writes:
                buffer.setdefault(key, buffer[reads[0]] if fused else key)
        born: dict[int, int] = {}
        dies: dict[int, int] = {}
        for i, (_, reads, writes) in enumerate(self.ops):
            for key in reads + writes:
                born.setdefault(buffer[key], i)
                dies[buffer[key]] = i
        if self.ops:  # the logits stay alive: they are the result
            for key in self.ops[-1][2]:
                dies[buffer[key]] = len(self.ops)
        size = {b: self.elements[b] for b in born}
        return max((sum(size[b] for b in born if born[b] <= i <= dies[b])
                    for i in range(len(self.ops))), default=0)


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
                   feature_shape=(bins, frames),
                   flash_bytes=counter.trace.flash_bytes(),
                   peak_sram_bytes=counter.trace.peak_sram_bytes() // batch)


def format_profile(profile: Profile, bits: int = 8) -> str:
    bins, frames = profile.feature_shape
    rows = [("input", f"{bins} x {frames}"),
            ("params", f"{profile.params:,}"),
            ("MACs", f"{profile.macs:,} ({profile.macs / 1e6:.2f} M)"),
            ("#Mult (paper)", f"{profile.mults_paper:,} ({profile.mults_paper / 1e6:.2f} M)"),
            ("size fp32", f"{profile.size_bytes(32) / 1024:.1f} KiB"),
            (f"size {bits}-bit", f"{profile.size_bytes(bits) / 1024:.1f} KiB"),
            ("peak activations", f"{profile.peak_activation_bytes / 1024:.1f} KiB (fp32, batch 1)"),
            ("MCU flash", f"{profile.flash_bytes / 1024:.1f} KiB (int8 weights, int32 biases, "
                          "scales)"),
            ("MCU peak SRAM", f"{profile.peak_sram_bytes / 1024:.1f} KiB (int8 tensors alive "
                              "at once)")]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)
