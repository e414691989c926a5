"""Brevitas twins of any registered model or genotype, for QAT and post-training calibration.

The twin is the batch-norm-folded model (nas_kws.quant.fold) with every conv and linear layer
swapped for its Brevitas counterpart, in place, so the model's own forward (BC-ResNet's
SubSpectralNorm, broadcast add and SiLU, MBConv shortcuts, DS-CNN's 'SAME' padding) is untouched:
- weights: narrow-range signed integers, per-channel (default) or per-tensor scales learned from a
  max-abs start, any width 2..8;
- activations: quantized where they enter and leave each layer, the spots where onnxruntime runs
  integer kernels (QLinearConv / QGemm): unsigned with a learned scale and zero point, initialised
  from percentile statistics (calibration); element-wise work between layers (affines, SiLU, adds,
  pooling) runs on the dequantized values in float, in PyTorch and in the exported graph alike;
- biases: 32-bit integers at input scale x weight scale, as the integer kernels expect.
Straight-through rounding is built into Brevitas, so the twin trains with the ordinary trainer.
"""
from __future__ import annotations

import fnmatch
import functools
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable

import brevitas.nn as qnn
import torch
from brevitas.graph.calibrate import calibration_mode
from brevitas.quant import (
    Int8WeightPerChannelFloat,
    Int8WeightPerTensorFloat,
    Int32Bias,
    ShiftedUint8ActPerTensorFloat,
)
from torch import nn

from nas_kws.config import check_keys, read_config_file
from nas_kws.quant.fold import example_input, fold_batchnorm, weight_layers_in_order

BIT_RANGE = (2, 8)
QUANT_CLASSES = {nn.Conv1d: qnn.QuantConv1d, nn.Conv2d: qnn.QuantConv2d, nn.Linear: qnn.QuantLinear}
LAYER_KEYS = ("weight_bits", "act_bits")


def _check_bits(value: Any, where: str) -> int:
    low, high = BIT_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{where}: expected an integer bit width {low}..{high}, "
                         f"got {value!r}")
    return value


@dataclass(frozen=True)
class QuantSpec:
    """Bit widths for a twin. `layers` maps layer-name globs ('blocks.*.f1.3', 'head.5') to
    {'weight_bits': w, 'act_bits': a}; later patterns win, and patterns beat `first_last_bits`."""
    weight_bits: int = 8
    act_bits: int = 8
    per_channel: bool = True
    first_last_bits: int | None = None
    layers: dict[str, dict[str, int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_bits(self.weight_bits, "weight_bits")
        _check_bits(self.act_bits, "act_bits")
        if self.first_last_bits is not None:
            _check_bits(self.first_last_bits, "first_last_bits")
        for pattern, bits in self.layers.items():
            if not isinstance(bits, dict) or set(bits) - set(LAYER_KEYS):
                raise ValueError(f"layers.{pattern}: expected a mapping with keys from "
                                 f"{list(LAYER_KEYS)}, got {bits!r}")
            for key, value in bits.items():
                _check_bits(value, f"layers.{pattern}.{key}")

    @property
    def tag(self) -> str:
        """Short name for run folders, e.g. w4a8 or w4a8_fl8."""
        tag = f"w{self.weight_bits}a{self.act_bits}"
        if not self.per_channel:
            tag += "_pt"
        if self.first_last_bits is not None:
            tag += f"_fl{self.first_last_bits}"
        return tag + ("_custom" if self.layers else "")

    def bits_for(self, name: str, first_or_last: bool) -> tuple[int, int]:
        """(weight_bits, act_bits) of layer `name`."""
        bits = {"weight_bits": self.weight_bits, "act_bits": self.act_bits}
        if first_or_last and self.first_last_bits is not None:
            bits = {key: self.first_last_bits for key in LAYER_KEYS}
        for pattern, override in self.layers.items():
            if fnmatch.fnmatchcase(name, pattern):
                bits.update(override)
        return bits["weight_bits"], bits["act_bits"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "quant spec") -> "QuantSpec":
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected a mapping, got {data!r}")
        check_keys(data, [f.name for f in fields(cls)], where)
        try:
            return cls(**data)
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def load_quant_spec(path: str | Path, overrides: dict[str, Any] | None = None) -> QuantSpec:
    """A QuantSpec from YAML, with command-line values (non-None) on top."""
    data, where = read_config_file(path)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return QuantSpec.from_dict(data, where=where)


@functools.cache
def _quant_class(cls: type) -> type:
    """The Brevitas class for a layer class. A subclass that only overrides forward (e.g. a
    padding rule) gets a twin class whose forward is its own, calling down to Brevitas's."""
    if cls in QUANT_CLASSES:
        return QUANT_CLASSES[cls]
    base = next((b for b in cls.__mro__ if b in QUANT_CLASSES), None)
    if base is None or cls.__init__ is not base.__init__:
        raise ValueError(f"{cls.__name__}: cannot quantize; expected nn.Conv1d/Conv2d/Linear or "
                         "a subclass that keeps their constructor")
    return type(f"Quant{cls.__name__}", (cls, QUANT_CLASSES[base]), {})


def weight_quantizer(bits: int, per_channel: bool):
    base = Int8WeightPerChannelFloat if per_channel else Int8WeightPerTensorFloat
    return base.let(bit_width=bits, scaling_impl_type="parameter_from_stats")


def act_quantizer(bits: int):
    return ShiftedUint8ActPerTensorFloat.let(bit_width=bits)


@torch.no_grad()
def quant_layer(layer: nn.Module, weight_bits: int, act_bits: int, per_channel: bool) -> nn.Module:
    """The Brevitas twin of one conv/linear layer, carrying its weights."""
    if isinstance(layer, nn.Linear):
        shape = dict(in_features=layer.in_features, out_features=layer.out_features)
    else:
        shape = dict(in_channels=layer.in_channels, out_channels=layer.out_channels,
                     kernel_size=layer.kernel_size, stride=layer.stride, padding=layer.padding,
                     dilation=layer.dilation, groups=layer.groups, padding_mode=layer.padding_mode)
    twin = _quant_class(type(layer))(
        **shape, bias=layer.bias is not None,
        weight_quant=weight_quantizer(weight_bits, per_channel),
        input_quant=act_quantizer(act_bits), output_quant=act_quantizer(act_bits),
        bias_quant=Int32Bias, return_quant_tensor=False)
    twin.weight.copy_(layer.weight)
    if layer.bias is not None:
        twin.bias.copy_(layer.bias)
    return twin


def quant_twin(model: nn.Module, spec: QuantSpec) -> nn.Module:
    """Fold batch norm, then swap every conv/linear (first and last by forward order) for its
    Brevitas twin. The float model is left as it was; activation scales still need calibrate()."""
    example = example_input(model)
    twin = fold_batchnorm(model, example)
    order = weight_layers_in_order(twin, example)
    for i, name in enumerate(order):
        weight_bits, act_bits = spec.bits_for(name, first_or_last=i in (0, len(order) - 1))
        twin.set_submodule(name, quant_layer(twin.get_submodule(name), weight_bits, act_bits,
                                             spec.per_channel))
    twin.spec = {"base": model.spec, "quant": spec.to_dict()}
    return twin


@torch.no_grad()
def calibrate(twin: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Set activation scales and zero points from percentile statistics of float activations
    over `batches` of features (Brevitas post-training calibration); returns the clip count.
    A last quantized pass sets the weight scales, so the state dict is complete."""
    twin.eval()
    seen, first = 0, None
    with calibration_mode(twin):
        for feats in batches:
            twin(feats)
            seen += len(feats)
            first = feats[:1] if first is None else first
    if first is None:
        raise ValueError("calibrate: no calibration batches")
    twin(first)
    return seen


def layer_bits(twin: nn.Module) -> dict[str, tuple[int, int]]:
    """{layer name: (weight bits, input act bits)} of a twin, read back from Brevitas."""
    found = {}
    for name, module in twin.named_modules():
        if isinstance(module, tuple(QUANT_CLASSES.values())):
            found[name] = (int(module.weight_quant.bit_width()),
                           int(module.input_quant.bit_width()))
    return found
