"""Weight sharing across the candidates of one position (Once-for-All's elastic kernel and width,
Single-Path NAS's superkernel): every candidate of a block family (all BC-ResNet blocks, all
MBConv cells of the position) runs its convolutions with slices of the family's largest
candidate's weights: the first output/input channels and the centred kernel window. A weight
step on any path of the family then trains the weights every other path of it uses, so the
supernet learns as fast as one net instead of one tenth as fast. Batch norms stay private to
each candidate (their statistics differ per width and kernel).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.models.layers import normalize_in_default_layout


class SlicedConv(nn.Module):
    """A conv layer's hyper-parameters with its weight sliced out of `source`'s."""

    def __init__(self, conv: nn.Conv2d, source: nn.Conv2d):
        super().__init__()
        self.source = source
        out_c, in_c, kh, kw = conv.weight.shape
        big_h, big_w = source.weight.shape[2:]
        self.window = (slice(0, out_c), slice(0, in_c),
                       slice((big_h - kh) // 2, (big_h - kh) // 2 + kh),
                       slice((big_w - kw) // 2, (big_w - kw) // 2 + kw))
        self.has_bias = conv.bias is not None
        self.stride, self.padding = conv.stride, conv.padding
        self.dilation, self.groups = conv.dilation, conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.source.weight[self.window]
        bias = self.source.bias[:weight.shape[0]] if self.has_bias else None
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SlicedBatchNorm(nn.BatchNorm2d):
    """A batch norm with its own running statistics and the first channels of `source`'s
    affine parameters (Once-for-All shares them across kernel sizes and slices them by width)."""

    def __init__(self, norm: nn.BatchNorm2d, source: nn.BatchNorm2d):
        super().__init__(norm.num_features, norm.eps, norm.momentum, affine=False)
        self.source = source

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return normalize_in_default_layout(self._normalize, x, self.training)

    def _normalize(self, x: torch.Tensor) -> torch.Tensor:
        n = self.num_features
        factor = 0.0
        if self.training:
            self.num_batches_tracked += 1
            factor = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                      else self.momentum)
        return F.batch_norm(x, self.running_mean, self.running_var, self.source.weight[:n],
                            self.source.bias[:n], self.training, factor, self.eps)


def _layers(module: nn.Module, kind: type) -> list[tuple[nn.Module, str, nn.Module]]:
    """(parent, attribute, layer) of every `kind` layer inside `module`, in forward order."""
    found = []
    for parent in module.modules():
        for name, child in parent.named_children():
            if isinstance(child, kind):
                found.append((parent, name, child))
    return found


def _convs(module: nn.Module) -> list[tuple[nn.Module, str, nn.Conv2d]]:
    return _layers(module, nn.Conv2d)


def _fits(conv: nn.Conv2d, source: nn.Conv2d) -> bool:
    """Same role (depthwise or not, same stride and bias) and no dimension larger."""
    depthwise = conv.groups == conv.in_channels > 1
    source_depthwise = source.groups == source.in_channels > 1
    return (depthwise == source_depthwise and conv.stride == source.stride
            and (conv.bias is None) == (source.bias is None)
            and all(a <= b for a, b in zip(conv.weight.shape, source.weight.shape)))


def share_family_weights(choices: list[dict[str, Any]], candidates: list[nn.Module]) -> int:
    """Make the candidates of each op family slice the convs of the family's largest member.
    Convs are matched from the block's output backwards (an MBConv without expansion lacks the
    first 1x1); a pair that does not fit keeps its own weights. Returns the convs now shared."""
    shared = 0
    families: dict[str, list[nn.Module]] = {}
    for choice, candidate in zip(choices, candidates):
        families.setdefault(choice["op"], []).append(candidate)
    for members in families.values():
        largest = max(members, key=lambda m: sum(c.weight.numel() for _, _, c in _convs(m)))
        sources = [conv for _, _, conv in _convs(largest)]
        for member in members:
            if member is largest:
                continue
            for (parent, name, conv), source in zip(reversed(_convs(member)), reversed(sources)):
                if _fits(conv, source):
                    setattr(parent, name, SlicedConv(conv, source))
                    shared += 1
            norms = [n for _, _, n in _layers(largest, nn.BatchNorm2d)]
            for (parent, name, norm), source in zip(reversed(_layers(member, nn.BatchNorm2d)),
                                                    reversed(norms)):
                if norm.num_features <= source.num_features:
                    setattr(parent, name, SlicedBatchNorm(norm, source))
    return shared
