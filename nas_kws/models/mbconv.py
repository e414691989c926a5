"""ProxylessNAS's inverted bottleneck (MBConv) and Peter et al.'s KWS backbone built from it.

Peter, Roth & Pernkopf (2020) search MBConv cells on MFCC input: stem conv (5, 11) with time
stride 2, twelve cells of 72 * width_mult channels (the first strided), a 1x1 conv to
144 * width_mult, average pooling and a linear classifier. The registered `proxyless_kws_w*`
models fix every cell to one MBConv choice; searched nets come from a genotype.yaml.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models.registry import register_model

PROXYLESS_CELLS = 12
PROXYLESS_WIDTH = 72
PROXYLESS_HEAD = 144


def make_divisible(value: float, divisor: int = 8) -> int:
    """MobileNet channel rounding: the nearest multiple of `divisor`, never 10% below `value`
    (72 * 0.75 / 1 / 1.25 -> 56 / 72 / 88, as in Peter et al.)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def as_pair(value: int | list[int] | tuple[int, int]) -> tuple[int, int]:
    """A (frequency, time) pair from an int or a two-element list."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


class MBConv(nn.Module):
    """1x1 expansion (skipped when expand == 1), kxk depthwise, 1x1 linear projection, each with
    BN (ReLU6 after the first two); identity shortcut when the shapes match."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, expand: int = 1,
                 stride: int | tuple[int, int] = 1):
        super().__init__()
        hidden = in_channels * expand
        stride = as_pair(stride)
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2,
                             groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.shortcut = stride == (1, 1) and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + x if self.shortcut else out


def proxyless_genotype(features: FeatureConfig, num_classes: int = 12, width_mult: float = 1.0,
                       kernel: int = 3, expand: int = 3) -> dict[str, Any]:
    """Peter et al.'s backbone with every cell fixed to MBConv(kernel, expand), as a genotype."""
    width = make_divisible(PROXYLESS_WIDTH * width_mult)
    cell = {"op": "mbconv", "out_channels": width, "kernel": kernel, "expand": expand}
    return {
        "name": f"proxyless_kws_w{width_mult:g}_k{kernel}_e{expand}",
        "features": features.to_dict(),
        "num_classes": num_classes,
        "stem": {"out_channels": width, "kernel": [5, 11], "stride": [1, 2], "act": "relu6"},
        "blocks": [{**cell, "stride": 2}] + [{**cell, "stride": 1}] * (PROXYLESS_CELLS - 1),
        "head": {"type": "pool_linear", "channels": make_divisible(PROXYLESS_HEAD * width_mult)},
    }


def _register(width_mult: float) -> None:
    def build(num_classes: int = 12, features: FeatureConfig | None = None, kernel: int = 3,
              expand: int = 3) -> nn.Module:
        from nas_kws.models.genotype import build_from_genotype

        genotype = proxyless_genotype(features or FeatureConfig.mfcc(10), num_classes,
                                      width_mult, kernel, expand)
        return build_from_genotype(genotype)

    build.__doc__ = (f"Peter et al.'s MBConv backbone, width x{width_mult:g}, every cell "
                     f"MBConv k3 e3 by default, on 10 MFCC x 51 frames.")
    register_model(f"proxyless_kws_w{width_mult:g}", features=FeatureConfig.mfcc(10))(build)


for _width_mult in (0.75, 1.0, 1.25):
    _register(_width_mult)
