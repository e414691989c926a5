"""DS-CNN S/M/L (Zhang et al. 2017, "Hello Edge") on 10 MFCC x 49 frames: a 10x4 (time x
frequency) conv, then depthwise-separable 3x3 blocks, average pool, linear. Padding follows
TensorFlow's 'SAME' rule, as in the reference code, so the feature maps (and MACs) match."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models.layers import BatchNorm2d
from nas_kws.models.registry import register_model


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'SAME' padding: output = ceil(input / stride), odd pad at the end."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[2:]), reversed(self.kernel_size),
                              reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def _conv_bn_relu(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int],
                  groups: int = 1) -> nn.Sequential:
    return nn.Sequential(SameConv2d(cin, cout, kernel, stride, groups=groups, bias=False),
                         BatchNorm2d(cout), nn.ReLU(inplace=True))


class DSCNN(nn.Module):
    """Input (B, 1, bins, frames); kernels and strides are given as (frequency, time)."""

    def __init__(self, channels: int, n_blocks: int, stem_stride: tuple[int, int],
                 first_block_stride: int, num_classes: int = 12):
        super().__init__()
        layers = [_conv_bn_relu(1, channels, (4, 10), stem_stride)]
        for i in range(n_blocks):
            stride = first_block_stride if i == 0 else 1
            layers += [_conv_bn_relu(channels, channels, (3, 3), (stride, stride), groups=channels),
                       _conv_bn_relu(channels, channels, (1, 1), (1, 1))]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model(features=FeatureConfig.dscnn())
def dscnn_s(num_classes: int = 12, features: FeatureConfig | None = None) -> DSCNN:
    """DS-CNN-S: 64 channels, stem stride 2 in time and frequency, 4 blocks (~2.7 M MACs)."""
    return DSCNN(64, 4, (2, 2), 1, num_classes)


@register_model(features=FeatureConfig.dscnn())
def dscnn_m(num_classes: int = 12, features: FeatureConfig | None = None) -> DSCNN:
    """DS-CNN-M: 172 channels, stem stride 2 in time, 4 blocks, the first strided (~9.9 M MACs)."""
    return DSCNN(172, 4, (1, 2), 2, num_classes)


@register_model(features=FeatureConfig.dscnn())
def dscnn_l(num_classes: int = 12, features: FeatureConfig | None = None) -> DSCNN:
    """DS-CNN-L: 276 channels, stem stride 2 in time, 5 blocks, the first strided (~28.4 M MACs)."""
    return DSCNN(276, 5, (1, 2), 2, num_classes)
