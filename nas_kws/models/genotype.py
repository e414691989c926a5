"""A derived net as data: `genotype.yaml` names the features, stem, blocks and head, so a search
result can be rebuilt, trained, profiled and exported without the search code.

    name: proxyless_kws_w1_k3_e3         # optional
    features: {kind: mfcc, n_mfcc: 10, n_fft: 640, win_length: 640, hop_length: 320, n_mels: 128}
    num_classes: 12                      # or classes: [yes, no, ...]
    stem: {out_channels: 72, kernel: [5, 11], stride: [1, 2], act: relu6}
    blocks:
      - {op: mbconv, out_channels: 72, kernel: 3, expand: 3, stride: 2}
      - {op: bcres, out_channels: 72, freq_kernel: 3, time_kernel: 5, dilation: 2, ssn_groups: 5}
      - {op: zero}                       # the block is skipped (identity)
    head: {type: pool_linear, channels: 144}   # or {type: bcresnet, channels: 32}

Tensors are (batch, channels, frequency bins, frames). `check_block` infers every block's output
shape and rejects what cannot be built (SubSpectralNorm heights, strides, channel changes); the
search spaces reuse it to validate each choice.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import yaml
from torch import nn

from nas_kws.config import check_keys
from nas_kws.features import FeatureConfig
from nas_kws.fileio import read_yaml, write_text
from nas_kws.models import checks
from nas_kws.models.bcresnet import BCResBlock, BCResBottleneck
from nas_kws.models.checks import REQUIRED, check_args
from nas_kws.models.layers import BatchNorm2d, as_pair, conv_out
from nas_kws.models.mbconv import MBConv

Shape = tuple[int, int, int]          # (channels, bins, frames)
TOP_KEYS = ("name", "features", "num_classes", "classes", "stem", "blocks", "head")
STEM_ACTS: dict[str, Callable[[], nn.Module]] = {"relu": lambda: nn.ReLU(inplace=True),
                                                 "relu6": lambda: nn.ReLU6(inplace=True)}
HEAD_TYPES = ["pool_linear", "bcresnet"]


# --- blocks ------------------------------------------------------------------------------------

def _mbconv_shape(args: dict, shape: Shape, where: str) -> Shape:
    _, bins, frames = shape
    sf, st = as_pair(args["stride"])
    kernel = args["kernel"]
    return args["out_channels"], conv_out(bins, kernel, sf), conv_out(frames, kernel, st)


def _bcres_shape(args: dict, shape: Shape, where: str) -> Shape:
    channels, bins, frames = shape
    out_bins = conv_out(bins, args["freq_kernel"], args["freq_stride"])
    groups = args["ssn_groups"]
    if groups > 1 and out_bins % groups:
        raise ValueError(f"{where}.ssn_groups: SubSpectralNorm with {groups} groups needs the "
                         f"block's frequency height ({out_bins} = {bins} bins / stride "
                         f"{args['freq_stride']}) to be divisible by {groups}; use "
                         f"ssn_groups 0 (BatchNorm) or a divisor of {out_bins}")
    if args["width"] != 1 and args["out_channels"] != channels:
        raise ValueError(f"{where}.width: a width multiplier ({args['width']:g}) needs a "
                         f"non-transition block (out_channels == in_channels {channels}), got "
                         f"out_channels {args['out_channels']}")
    return args["out_channels"], out_bins, frames


def _build_mbconv(args: dict, in_channels: int) -> nn.Module:
    return MBConv(in_channels, args["out_channels"], args["kernel"], args["expand"],
                  as_pair(args["stride"]))


def _build_bcres(args: dict, in_channels: int) -> nn.Module:
    block_args = {k: args[k] for k in ("freq_stride", "dilation", "freq_kernel", "time_kernel",
                                       "ssn_groups", "dropout")}
    if args["width"] == 1:
        return BCResBlock(in_channels, args["out_channels"], **block_args)
    return BCResBottleneck(in_channels, max(1, round(in_channels * args["width"])), **block_args)


BLOCK_OPS: dict[str, dict[str, Any]] = {
    "mbconv": {
        "args": {"out_channels": (checks.positive_int, REQUIRED),
                 "kernel": (checks.odd_kernel, 3), "expand": (checks.positive_int, 1),
                 "stride": (checks.stride, 1)},
        "shape": _mbconv_shape, "build": _build_mbconv},
    "bcres": {
        "args": {"out_channels": (checks.positive_int, REQUIRED),
                 "freq_stride": (checks.freq_stride, 1),
                 "dilation": (checks.positive_int, 1), "freq_kernel": (checks.odd_kernel, 3),
                 "time_kernel": (checks.odd_kernel, 3), "ssn_groups": (checks.ssn_groups, 5),
                 "dropout": (checks.dropout, 0.1), "width": (checks.width, 1.0)},
        "shape": _bcres_shape, "build": _build_bcres},
    "zero": {"args": {}, "shape": lambda args, shape, where: shape,
             "build": lambda args, in_channels: nn.Identity()},
}


def check_block(block: Any, in_shape: Shape, where: str) -> tuple[dict[str, Any], Shape]:
    """(the block with defaults filled in, its output shape) or a ValueError naming `where`."""
    if not isinstance(block, dict) or "op" not in block:
        raise ValueError(f"{where}: expected a mapping with 'op' (one of {list(BLOCK_OPS)}), "
                         f"got {block!r}")
    op = block["op"]
    if op not in BLOCK_OPS:
        raise ValueError(f"{where}.op: expected one of {list(BLOCK_OPS)}, got {op!r}")
    args = check_args(BLOCK_OPS[op]["args"], {k: v for k, v in block.items() if k != "op"},
                      f"{where} ({op})")
    return {"op": op, **args}, BLOCK_OPS[op]["shape"](args, in_shape, f"{where} ({op})")


def build_block(block: dict[str, Any], in_channels: int) -> nn.Module:
    """The module of a block already normalised by `check_block`."""
    return BLOCK_OPS[block["op"]]["build"](block, in_channels)


def describe_block(block: dict[str, Any]) -> str:
    """A short label for tables and plots, e.g. 'mbconv_k5_e3' or 'bcres_f3t5_d2_w1.5'."""
    if block["op"] == "mbconv":
        stride = as_pair(block["stride"])
        tail = "" if stride == (1, 1) else f"_s{stride[0]}x{stride[1]}"
        return f"mbconv_k{block['kernel']}_e{block['expand']}{tail}"
    if block["op"] == "bcres":
        ssn = f"_ssn{block['ssn_groups']}" if block["ssn_groups"] > 1 else "_bn"
        tail = f"_w{block['width']:g}" if block["width"] != 1 else ""
        return (f"bcres_f{block['freq_kernel']}t{block['time_kernel']}_d{block['dilation']}"
                f"{ssn}{tail}")
    return block["op"]


# --- stem and head -----------------------------------------------------------------------------

STEM_ARGS = {"out_channels": (checks.positive_int, REQUIRED), "kernel": (checks.kernel_pair, 3),
             "stride": (checks.stride, 1), "act": (checks.one_of(sorted(STEM_ACTS)), "relu")}
HEAD_ARGS = {"type": (checks.one_of(HEAD_TYPES), REQUIRED),
             "channels": (checks.positive_int, REQUIRED)}


def check_stem(stem: Any, in_shape: Shape, where: str) -> tuple[dict[str, Any], Shape]:
    if not isinstance(stem, dict):
        raise ValueError(f"{where}: expected a mapping, got {stem!r}")
    args = check_args(STEM_ARGS, stem, where)
    (kf, kt), (sf, st) = as_pair(args["kernel"]), as_pair(args["stride"])
    _, bins, frames = in_shape
    return args, (args["out_channels"], conv_out(bins, kf, sf), conv_out(frames, kt, st))


def build_stem(stem: dict[str, Any], in_channels: int = 1) -> nn.Module:
    kernel = as_pair(stem["kernel"])
    return nn.Sequential(
        nn.Conv2d(in_channels, stem["out_channels"], kernel, stride=as_pair(stem["stride"]),
                  padding=(kernel[0] // 2, kernel[1] // 2), bias=False),
        BatchNorm2d(stem["out_channels"]),
        STEM_ACTS[stem["act"]](),
    )


def check_head(head: Any, where: str) -> dict[str, Any]:
    if not isinstance(head, dict):
        raise ValueError(f"{where}: expected a mapping, got {head!r}")
    return check_args(HEAD_ARGS, head, where)


def build_head(head: dict[str, Any], in_shape: Shape, num_classes: int) -> nn.Module:
    """pool_linear (Peter et al.): 1x1 conv, BN, ReLU6, average pool, linear. bcresnet: depthwise
    conv over all remaining bins x 5 frames, 1x1 conv, BN, ReLU, average pool, 1x1 classifier."""
    channels, bins, _ = in_shape
    width = head["channels"]
    if head["type"] == "pool_linear":
        return nn.Sequential(
            nn.Conv2d(channels, width, 1, bias=False), BatchNorm2d(width),
            nn.ReLU6(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            nn.Linear(width, num_classes))
    return nn.Sequential(
        nn.Conv2d(channels, channels, (bins, 5), padding=(0, 2), groups=channels, bias=False),
        nn.Conv2d(channels, width, 1, bias=False), BatchNorm2d(width), nn.ReLU(inplace=True),
        nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, num_classes, 1), nn.Flatten())


class KWSNet(nn.Module):
    """stem -> blocks -> head on (B, 1, bins, frames) features; returns logits (B, classes)."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.blocks = nn.Sequential(*blocks)
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


# --- the genotype as a whole -------------------------------------------------------------------

def input_shape(features: FeatureConfig) -> Shape:
    bins, frames = features.shape
    return 1, bins, frames


def check_net_keys(data: Any, valid: tuple[str, ...], where: str) -> None:
    """The top level shared by genotypes and search spaces: known keys, the four required
    sections, and features as a mapping."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {list(valid)}, got {data!r}")
    check_keys(data, valid, where)
    for key in ("features", "stem", "blocks", "head"):
        if key not in data:
            raise ValueError(f"{where}: missing required key {key!r}")
    if not isinstance(data["features"], dict):
        raise ValueError(f"{where}: features: expected a mapping of FeatureConfig keys, "
                         f"got {data['features']!r}")


def check_genotype(genotype: Any, where: str = "genotype") -> dict[str, Any]:
    """The genotype with every default filled in, or a ValueError naming the key or position."""
    check_net_keys(genotype, TOP_KEYS, where)
    features = FeatureConfig.from_dict(genotype["features"], where=f"{where}: features")
    out: dict[str, Any] = {}
    if "name" in genotype:
        out["name"] = str(genotype["name"])
    out["features"] = features.to_dict()
    out.update(_check_classes(genotype, where))
    out["stem"], shape = check_stem(genotype["stem"], input_shape(features), f"{where}: stem")
    blocks = genotype["blocks"]
    if not isinstance(blocks, list) or not blocks:
        raise ValueError(f"{where}: blocks: expected a non-empty list of blocks, got {blocks!r}")
    out["blocks"] = []
    for i, block in enumerate(blocks):
        block, shape = check_block(block, shape, f"{where}: blocks[{i}]")
        out["blocks"].append(block)
    out["head"] = check_head(genotype["head"], f"{where}: head")
    return out


def _check_classes(genotype: dict[str, Any], where: str) -> dict[str, Any]:
    classes = genotype.get("classes")
    if classes is not None and (not isinstance(classes, list) or not classes
                                or not all(isinstance(c, str) for c in classes)):
        raise ValueError(f"{where}: classes: expected a list of class names, got {classes!r}")
    num_classes = genotype.get("num_classes", len(classes) if classes else 12)
    checks.positive_int(num_classes, f"{where}: num_classes")
    if classes and len(classes) != num_classes:
        raise ValueError(f"{where}: num_classes: {num_classes} does not match the {len(classes)} "
                         f"names in classes")
    return {"num_classes": num_classes, **({"classes": list(classes)} if classes else {})}


def build_from_genotype(genotype: dict[str, Any], num_classes: int | None = None,
                        features: FeatureConfig | dict[str, Any] | None = None) -> KWSNet:
    """The net a genotype describes, with `.feature_config`, `.num_classes` and `.spec`.
    `num_classes` overrides the genotype's (e.g. to retrain on another task); `features` (a
    FeatureConfig, or a dict of the keys to change such as {"n_mfcc": 20}) its input features."""
    genotype = check_genotype(genotype)
    if features is not None:
        changes = features.to_dict() if isinstance(features, FeatureConfig) else features
        genotype["features"] = FeatureConfig.from_dict({**genotype["features"], **changes},
                                                       where="features").to_dict()
    if num_classes is not None and num_classes != genotype["num_classes"]:
        genotype["num_classes"] = num_classes
        genotype.pop("classes", None)
    features = FeatureConfig.from_dict(genotype["features"])
    _, shape = check_stem(genotype["stem"], input_shape(features), "stem")
    blocks = []
    for block in genotype["blocks"]:
        blocks.append(build_block(block, shape[0]))
        _, shape = check_block(block, shape, "block")
    model = KWSNet(build_stem(genotype["stem"]), blocks,
                   build_head(genotype["head"], shape, genotype["num_classes"]))
    model.feature_config = features
    model.num_classes = genotype["num_classes"]
    model.spec = {"genotype": genotype}
    return model


def load_genotype(path: str | Path) -> dict[str, Any]:
    return check_genotype(read_yaml(path, "genotype file"), where=str(path))


def save_genotype(path: str | Path, genotype: dict[str, Any]) -> Path:
    """Validate, then write atomically (a crash never leaves half a genotype); one line per
    block."""
    genotype = check_genotype(genotype, where=str(path))
    return write_text(path, yaml.safe_dump(genotype, sort_keys=False, default_flow_style=None))
