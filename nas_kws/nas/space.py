"""Search spaces: a genotype with `choices:` at the searchable positions, checked on load.

    features: {kind: mfcc, n_mfcc: 10, ...}
    channel_divisor: 8                 # --width_mult rounds channels to multiples of this
    stem: {out_channels: 72, kernel: [5, 11], stride: [1, 2], act: relu6}
    blocks:
      - {op: mbconv, out_channels: 72, kernel: 3, expand: 3, stride: 2}   # a fixed block
      - repeat: 11                     # 11 positions with the same choices
        choices:
          - {op: mbconv, out_channels: 72, grid: {kernel: [3, 5, 7], expand: [1, 2, 3]}}
          - {op: zero}
    head: {type: pool_linear, channels: 144}

`grid` expands to the product of its lists (here 9 MBConv choices). Every choice is checked
with the genotype rules, and all choices of a position must give the same output shape, so any
pick of one choice per position is a buildable genotype. Errors name the position and value.

`variants:` makes the space a union of macro variants that differ in what no position can
change, the stem (e.g. a time stride, which changes every later shape) and the width; `base:`
takes every other key from another space:

    base: hybrid
    variants:
      - {name: t1}                                            # the stem and width as given
      - {name: t2, stem: {stride: [2, 2]}, width_mult: 1.4}   # half the frames, 1.4x wider

Each variant is a whole space of its own (`load_variants`); the strategies that draw nets from a
MAC band (random, halving) search their union, the supernet strategies one space at a time.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas_kws.config import check_keys
from nas_kws.features import FeatureConfig
from nas_kws.fileio import read_yaml
from nas_kws.models.genotype import (
    Shape,
    check_block,
    check_head,
    check_net_keys,
    check_stem,
    describe_block,
    input_shape,
)
from nas_kws.models.layers import make_divisible

SPACES_DIR = Path(__file__).resolve().parent.parent.parent / "search_spaces"
SPACE_KEYS = ("name", "description", "features", "channel_divisor", "stem", "blocks", "head",
              "variants")
VARIANT_KEYS = ("name", "stem", "width_mult")
ENTRY_KEYS = ("choices", "repeat")


@dataclass
class Position:
    """One block slot of the net: its candidate blocks (one when the slot is fixed)."""
    index: int
    where: str
    in_shape: Shape
    out_shape: Shape
    choices: list[dict[str, Any]]

    @property
    def searchable(self) -> bool:
        return len(self.choices) > 1

    @property
    def labels(self) -> list[str]:
        return [describe_block(c) for c in self.choices]


@dataclass
class SearchSpace:
    name: str
    source: str
    features: FeatureConfig
    stem: dict[str, Any]
    positions: list[Position]
    head: dict[str, Any]

    @property
    def searchable(self) -> list[Position]:
        return [p for p in self.positions if p.searchable]

    @property
    def head_in_shape(self) -> Shape:
        return self.positions[-1].out_shape

    def size(self) -> int:
        """How many distinct nets the space holds."""
        count = 1
        for position in self.positions:
            count *= len(position.choices)
        return count

    def genotype(self, picks: list[int], num_classes: int = 12,
                 classes: list[str] | None = None) -> dict[str, Any]:
        """The genotype with choice `picks[i]` at searchable position i."""
        searchable = self.searchable
        if len(picks) != len(searchable):
            raise ValueError(f"{self.name}: expected {len(searchable)} picks, got {len(picks)}")
        chosen = dict(zip((p.index for p in searchable), picks))
        blocks = [dict(p.choices[chosen.get(p.index, 0)]) for p in self.positions]
        genotype = {"name": self.name, "features": self.features.to_dict(),
                    "num_classes": num_classes, "stem": dict(self.stem), "blocks": blocks,
                    "head": dict(self.head)}
        if classes:
            genotype["classes"] = list(classes)
        return genotype


def space_path(name_or_path: str | Path) -> Path:
    """A bundled space by name (search_spaces/<name>.yaml) or a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise FileNotFoundError(f"search space file not found: {path}")
        return path
    bundled = SPACES_DIR / f"{name_or_path}.yaml"
    if not bundled.is_file():
        names = sorted(p.stem for p in SPACES_DIR.glob("*.yaml"))
        raise ValueError(f"unknown search space {str(name_or_path)!r}; expected a .yaml file or "
                         f"one of {names}")
    return bundled


@dataclass
class SpaceUnion:
    """The variants of a space as one set of nets; a net is [variant index, *picks]."""
    name: str
    spaces: list[SearchSpace]

    @property
    def features(self) -> FeatureConfig:
        return self.spaces[0].features

    def only(self) -> SearchSpace:
        """The one space, for the strategies that train a supernet over it."""
        if len(self.spaces) > 1:
            raise ValueError(f"search space {self.name}: its variants make a union of "
                             f"{len(self.spaces)} spaces, which only --strategy random and "
                             f"halving search; give the supernet one variant's space")
        return self.spaces[0]

    def genotype(self, net: list[int], num_classes: int = 12,
                 classes: list[str] | None = None) -> dict[str, Any]:
        return self.spaces[net[0]].genotype(net[1:], num_classes, classes)


def load_space(name_or_path: str | Path, width_mult: float = 1.0,
               features: dict[str, Any] | None = None) -> SearchSpace:
    """Read and validate a space; `features` overrides FeatureConfig keys (e.g. n_mfcc)."""
    return load_variants(name_or_path, width_mult, features).only()


def load_variants(name_or_path: str | Path, width_mult: float = 1.0,
                  features: dict[str, Any] | None = None) -> SpaceUnion:
    """The spaces a YAML holds: one per entry of `variants:`, else just the one."""
    path = space_path(name_or_path)
    data = read_yaml(path, "search space file")
    if isinstance(data, dict) and "base" in data:    # another space's net, under these keys
        base = read_yaml(space_path(data["base"]), f"{path}: base space")
        if not isinstance(base, dict) or "base" in base or "variants" in base:
            raise ValueError(f"{path}: base {data['base']!r}: expected a space without its own "
                             f"base or variants")
        data = {**base, **{k: v for k, v in data.items() if k != "base"}}
    if not isinstance(data, dict) or "variants" not in data:
        space = parse_space(data, str(path), width_mult, features or {})
        return SpaceUnion(space.name, [space])
    variants = data["variants"]
    if not isinstance(variants, list) or len(variants) < 2:
        raise ValueError(f"{path}: variants: expected a list of at least 2 mappings, got "
                         f"{variants!r}")
    spaces = []
    for i, variant in enumerate(variants):
        where = f"{path}: variants[{i}]"
        if not isinstance(variant, dict) or not isinstance(variant.get("name"), str) or \
                not isinstance(variant.get("stem", {}), dict) or \
                not isinstance(data.get("stem"), dict):
            raise ValueError(f"{where}: expected a mapping with a name and optionally a stem "
                             f"mapping (over the space's stem mapping) and a width_mult, got "
                             f"{variant!r}")
        check_keys(variant, VARIANT_KEYS, where)
        base = {k: v for k, v in data.items() if k != "variants"}
        merged = {**base, "name": f"{data.get('name', path.stem)}-{variant['name']}",
                  "stem": {**data["stem"], **variant.get("stem", {})}}
        mult = variant.get("width_mult", 1.0)
        if not isinstance(mult, (int, float)) or isinstance(mult, bool):
            raise ValueError(f"{where}.width_mult: expected a number > 0, got {mult!r}")
        spaces.append(parse_space(merged, where, width_mult * mult, features or {}))
    return SpaceUnion(str(data.get("name", path.stem)), spaces)


def parse_space(data: Any, where: str, width_mult: float = 1.0,
                features: dict[str, Any] | None = None) -> SearchSpace:
    check_net_keys(data, SPACE_KEYS, where)
    feature_config = FeatureConfig.from_dict({**data["features"], **(features or {})},
                                             where=f"{where}: features")
    if width_mult <= 0:
        raise ValueError(f"width_mult: expected > 0, got {width_mult}")
    divisor = data.get("channel_divisor", 1)
    if not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"{where}: channel_divisor: expected an integer >= 1, got {divisor!r}")

    def scale(block: dict[str, Any], key: str) -> dict[str, Any]:
        if width_mult == 1 or not isinstance(block, dict) or not isinstance(block.get(key), int):
            return block
        return {**block, key: make_divisible(block[key] * width_mult, divisor)}

    stem, shape = check_stem(scale(data["stem"], "out_channels"), input_shape(feature_config),
                             f"{where}: stem")
    entries = data["blocks"]
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{where}: blocks: expected a non-empty list")
    positions: list[Position] = []
    for i, entry in enumerate(entries):
        entry_where = f"{where}: blocks[{i}]"
        choices, repeat = _entry_choices(entry, entry_where)
        for r in range(repeat):
            at = f"{entry_where} (position {len(positions)})" if repeat > 1 else entry_where
            scaled = [scale(c, "out_channels") for c in choices]
            position = _check_position(len(positions), at, scaled, shape)
            positions.append(position)
            shape = position.out_shape
    head = check_head(_head_channels(data["head"], shape, scale), f"{where}: head")
    return SearchSpace(str(data.get("name", Path(where).stem)), where, feature_config, stem,
                       positions, head)


def _entry_choices(entry: Any, where: str) -> tuple[list[dict[str, Any]], int]:
    """A blocks entry -> (its raw choices with grids expanded, repeat count)."""
    if not isinstance(entry, dict):
        raise ValueError(f"{where}: expected a block mapping or {{choices: [...]}}, got {entry!r}")
    repeat = entry.get("repeat", 1)
    if not isinstance(repeat, int) or isinstance(repeat, bool) or repeat < 1:
        raise ValueError(f"{where}.repeat: expected an integer >= 1, got {repeat!r}")
    if "choices" not in entry:
        return _expand_grid({k: v for k, v in entry.items() if k != "repeat"}, where), repeat
    extra = sorted(set(entry) - set(ENTRY_KEYS))
    if extra:
        raise ValueError(f"{where}: unknown key(s) {extra} next to 'choices'; put block keys "
                         f"inside each choice")
    raw = entry["choices"]
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{where}.choices: expected a non-empty list of blocks, got {raw!r}")
    choices = []
    for j, choice in enumerate(raw):
        choices += _expand_grid(choice, f"{where}.choices[{j}]")
    return choices, repeat


def _expand_grid(block: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(block, dict) or "grid" not in block:
        return [block]
    grid = block["grid"]
    if not isinstance(grid, dict) or not grid or not all(
            isinstance(v, list) and v for v in grid.values()):
        raise ValueError(f"{where}.grid: expected a mapping of key -> non-empty list of values, "
                         f"got {grid!r}")
    clash = sorted(set(grid) & set(block))
    if clash:
        raise ValueError(f"{where}.grid: key(s) {clash} also given outside the grid")
    base = {k: v for k, v in block.items() if k != "grid"}
    return [{**base, **dict(zip(grid, combo))} for combo in itertools.product(*grid.values())]


def _check_position(index: int, where: str, raw: list[Any], in_shape: Shape) -> Position:
    choices: list[dict[str, Any]] = []
    out_shape: Shape | None = None
    for j, choice in enumerate(raw):
        block, shape = check_block(choice, in_shape, f"{where} choice {j}")
        label = describe_block(block)
        if block in choices:
            raise ValueError(f"{where} choice {j} ({label}): listed twice")
        if out_shape is not None and shape != out_shape:
            hint = ("; zero (skip) is only possible where a block keeps its input shape "
                    f"{in_shape}" if "zero" in (block["op"], choices[0]["op"]) else "")
            raise ValueError(f"{where} choice {j} ({label}): output shape (channels, bins, "
                             f"frames) {shape} differs from choice 0 ({describe_block(choices[0])})"
                             f" {out_shape}; all choices of a position must agree{hint}")
        out_shape = shape
        choices.append(block)
    return Position(index, where, in_shape, out_shape, choices)


def _head_channels(head: Any, in_shape: Shape, scale: Any) -> Any:
    """`channels_mult: k` makes the head k x the channels entering it at every width (Peter et
    al.'s head is exactly 2C); plain `channels` scale with the width like the blocks."""
    if not isinstance(head, dict) or "channels_mult" not in head:
        return scale(head, "channels")
    mult = head["channels_mult"]
    if not isinstance(mult, int) or isinstance(mult, bool) or mult < 1 or "channels" in head:
        raise ValueError(f"head.channels_mult: expected an integer >= 1 instead of 'channels', "
                         f"got {mult!r}")
    rest = {k: v for k, v in head.items() if k != "channels_mult"}
    return {**rest, "channels": mult * in_shape[0]}
