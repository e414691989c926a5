"""BC-ResNet (Kim et al., Interspeech 2021): broadcasted residual learning on log-mels.
Each block mixes a 2-D frequency-wise branch with a 1-D temporal branch computed on the
frequency-averaged map and broadcast back, so most work happens on a (C, 1, T) tensor.
Registered as `bcresnet{1,1.5,2,3,6,8}` (the width scale tau)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models.layers import BatchNorm2d, conv_out
from nas_kws.models.registry import register_model

STAGE_BLOCKS = (2, 2, 4, 4)
FREQ_STRIDED_STAGES = (1, 2)


class SubSpectralNorm(nn.Module):
    """BatchNorm with separate statistics for each of `groups` frequency sub-bands."""

    def __init__(self, channels: int, groups: int = 5):
        super().__init__()
        self.groups = groups
        self.bn = BatchNorm2d(channels * groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if not torch.jit.is_tracing() and h % self.groups:  # export traces a checked shape
            g = self.groups
            nearest = [m for m in (h // g * g, (h // g + 1) * g) if m]
            raise ValueError(f"SubSpectralNorm: input height {h} is not divisible by groups="
                             f"{self.groups}; heights that work are multiples of {self.groups}, "
                             f"e.g. {' or '.join(map(str, nearest))}")
        # Splitting the bins into groups copies a channels_last map to the default layout;
        # the result goes back to channels_last so the layers after it stay in that format.
        keep = (torch.channels_last if not x.is_contiguous()
                and x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format)
        x = self.bn(x.reshape(b, c * self.groups, h // self.groups, w))
        return x.reshape(b, c, h, w).contiguous(memory_format=keep)


def _norm(channels: int, ssn_groups: int) -> nn.Module:
    return SubSpectralNorm(channels, ssn_groups) if ssn_groups > 1 else BatchNorm2d(channels)


class BCResBlock(nn.Module):
    """One broadcasted residual block. A transition block (in != out channels) first maps the
    channels with 1x1 conv + BN + ReLU and has no identity shortcut."""

    def __init__(self, in_channels: int, out_channels: int, freq_stride: int = 1,
                 dilation: int = 1, freq_kernel: int = 3, time_kernel: int = 3,
                 ssn_groups: int = 5, dropout: float = 0.1):
        super().__init__()
        self.transition = in_channels != out_channels
        self.project = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
            BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        ) if self.transition else nn.Identity()
        self.f2 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (freq_kernel, 1), stride=(freq_stride, 1),
                      padding=((freq_kernel - 1) // 2, 0), groups=out_channels, bias=False),
            _norm(out_channels, ssn_groups),
        )
        self.f1 = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (1, time_kernel),
                      padding=(0, dilation * (time_kernel - 1) // 2), dilation=(1, dilation),
                      groups=out_channels, bias=False),
            BatchNorm2d(out_channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 1, bias=False),
            nn.Dropout2d(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.project(x)
        f2 = self.f2(x)
        if self.training:
            # The same values, cheaper to train: the frequency mean as sum / bins (how CPU `mean`
            # computes it; its backward hands on an expanded view instead of dividing a full-size
            # map) and the broadcast add in place. Eval keeps `mean` and `+`, the ops the
            # integer exporters match.
            out = f2.add_(self.f1(f2.sum(dim=2, keepdim=True).div_(f2.shape[2])))
        else:
            out = f2 + self.f1(f2.mean(dim=2, keepdim=True))
        # in place where autograd allows: a full-size map fewer, the same sums
        if not self.transition:
            out += x
        return out.relu_()


class BCResBottleneck(nn.Module):
    """A BC-ResNet block computed at `width` x the residual channels: a transition BC-Res block
    into the inner width, a 1x1 projection + BN back, and the identity shortcut. This is how the
    search spaces vary a non-transition block's width without changing the residual stream."""

    def __init__(self, channels: int, inner: int, **block_args: Any):
        super().__init__()
        self.block = BCResBlock(channels, inner, **block_args)
        self.project = nn.Sequential(nn.Conv2d(inner, channels, 1, bias=False),
                                     BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.block(x)).add_(x)


class BCResNet(nn.Module):
    """Stem 5x5 (frequency stride 2), four stages of BC-ResBlocks, depthwise head that collapses
    the remaining frequency bins, 1x1 classifier. Width base = 8 * tau."""

    def __init__(self, tau: float = 8, num_classes: int = 12, in_bins: int = 40,
                 ssn_groups: int = 5, dropout: float = 0.1):
        super().__init__()
        base = int(8 * tau)
        widths = [2 * base, base, int(1.5 * base), 2 * base, int(2.5 * base), 4 * base]
        self.stem = nn.Sequential(
            nn.Conv2d(1, widths[0], 5, stride=(2, 1), padding=2, bias=False),
            BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks = []
        bins = conv_out(in_bins, 5, 2)
        for stage, n_blocks in enumerate(STAGE_BLOCKS):
            for i in range(n_blocks):
                stride = 2 if stage in FREQ_STRIDED_STAGES and i == 0 else 1
                blocks.append(BCResBlock(widths[stage] if i == 0 else widths[stage + 1],
                                         widths[stage + 1], freq_stride=stride,
                                         dilation=2 ** stage, ssn_groups=ssn_groups,
                                         dropout=dropout))
                bins = conv_out(bins, 3, stride)
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Conv2d(widths[4], widths[4], (bins, 5), padding=(0, 2), groups=widths[4],
                      bias=False),
            nn.Conv2d(widths[4], widths[5], 1, bias=False),
            BatchNorm2d(widths[5]),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(widths[5], num_classes, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).flatten(1)


def _bcresnet(tau: float, num_classes: int, features: FeatureConfig | None, ssn_groups: int,
              dropout: float) -> BCResNet:
    bins = (features or FeatureConfig.logmel()).shape[0]
    return BCResNet(tau, num_classes, in_bins=bins, ssn_groups=ssn_groups, dropout=dropout)


@register_model
def bcresnet1(num_classes: int = 12, features: FeatureConfig | None = None, ssn_groups: int = 5,
              dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-1 on 40 log-mels (base width 8, 9.2 k parameters)."""
    return _bcresnet(1, num_classes, features, ssn_groups, dropout)


@register_model("bcresnet1.5")
def bcresnet1_5(num_classes: int = 12, features: FeatureConfig | None = None,
                ssn_groups: int = 5, dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-1.5 on 40 log-mels (base width 12, 17.2 k parameters)."""
    return _bcresnet(1.5, num_classes, features, ssn_groups, dropout)


@register_model
def bcresnet2(num_classes: int = 12, features: FeatureConfig | None = None, ssn_groups: int = 5,
              dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-2 on 40 log-mels (base width 16, 27.3 k parameters)."""
    return _bcresnet(2, num_classes, features, ssn_groups, dropout)


@register_model
def bcresnet3(num_classes: int = 12, features: FeatureConfig | None = None, ssn_groups: int = 5,
              dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-3 on 40 log-mels (base width 24, 54.2 k parameters)."""
    return _bcresnet(3, num_classes, features, ssn_groups, dropout)


@register_model
def bcresnet6(num_classes: int = 12, features: FeatureConfig | None = None, ssn_groups: int = 5,
              dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-6 on 40 log-mels (base width 48, 188 k parameters)."""
    return _bcresnet(6, num_classes, features, ssn_groups, dropout)


@register_model
def bcresnet8(num_classes: int = 12, features: FeatureConfig | None = None, ssn_groups: int = 5,
              dropout: float = 0.1) -> BCResNet:
    """BC-ResNet-8 on 40 log-mels (base width 64, 321 k parameters)."""
    return _bcresnet(8, num_classes, features, ssn_groups, dropout)
