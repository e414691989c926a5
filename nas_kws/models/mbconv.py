"""ProxylessNAS's inverted bottleneck (MBConv), the cell of Peter et al.'s KWS backbone
(`proxyless_kws.py`) and one of the genotype's block ops."""
from __future__ import annotations

import torch
from torch import nn

from nas_kws.models.layers import BatchNorm2d, as_pair


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
            layers += [nn.Conv2d(in_channels, hidden, 1, bias=False), BatchNorm2d(hidden),
                       nn.ReLU6(inplace=True)]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride=stride, padding=kernel // 2,
                             groups=hidden, bias=False),
                   BatchNorm2d(hidden), nn.ReLU6(inplace=True),
                   nn.Conv2d(hidden, out_channels, 1, bias=False), BatchNorm2d(out_channels)]
        self.conv = nn.Sequential(*layers)
        self.shortcut = stride == (1, 1) and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return out + x if self.shortcut else out
