"""Experiment configuration: dataclasses <-> YAML, overridden by CLI flags.

Unknown keys are errors that list the valid keys, so a typo never silently becomes a default.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from nas_kws.fileio import parse_yaml, read_yaml

T = TypeVar("T")
EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"


@dataclass
class DataConfig:
    dataset: str = "synth"         # synth | gsc | folders
    root: str | None = None        # None with dataset=synth: the cached synthetic set
    version: int = 2               # GSC version (synth is written in the v2 layout)
    task: str = "12class"          # 12class | 35class
    seed: int = 0                  # unknown/silence sampling and synthetic generation
    synth_size: str = "default"
    sample_rate: int = 16000
    duration: float = 1.0


@dataclass
class AugmentConfig:
    shift_ms: float = 100.0        # random time shift, +-
    noise_prob: float = 0.8        # chance a clip gets background noise
    noise_max: float = 0.1         # noise amplitude ~ U(0, noise_max)
    silence_noise_max: float = 1.0  # louder noise for _silence_ clips, as in BC-ResNet
    gain_db: float = 0.0           # random gain ~ U(-gain_db, +gain_db) dB
    freq_masks: int = 0            # SpecAugment
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0


@dataclass
class TrainConfig:
    epochs: int = 200
    batch_size: int = 100
    optimizer: str = "sgd"         # sgd | adam
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-3
    warmup_epochs: int = 5
    label_smoothing: float = 0.0
    balanced: bool = False         # class-balanced sampling
    seed: int = 0
    seeds: int = 1                 # run this many seeds (seed, seed+1, ...) and report mean +- std
    device: str = "auto"           # auto | cpu | cuda
    amp: bool = True               # mixed precision when on CUDA
    channels_last: bool = True
    prefetch: bool = False         # next batch in a helper thread: pays only with a free core
    eval_batch_size: int = 500
    max_steps_per_epoch: int = 0   # 0 = the whole training split
    select_start: bool = False     # fine-tuning: the starting weights compete for `best` (epoch -1)

    # Checked when read (`from_dict`), so a run that could only fail or train on nothing is
    # refused before its run directory exists.
    MINIMUMS: ClassVar[dict[str, int]] = {"epochs": 1, "batch_size": 1, "seeds": 1,
                                          "eval_batch_size": 1, "warmup_epochs": 0,
                                          "max_steps_per_epoch": 0}


@dataclass
class ExperimentConfig:
    model: str = "bcresnet1"       # a registered name or a genotype.yaml path
    model_kwargs: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)  # FeatureConfig overrides; {} = model default
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check a YAML/CLI value against a field type; CLI strings are parsed as YAML scalars."""
    if isinstance(value, str) and tp is not str:
        try:
            value = parse_yaml(value)
        except ValueError as err:
            raise ValueError(f"{where}: {value!r} is not a valid YAML value ({err})") from None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        tp = next(t for t in options if t is not type(None))
        origin = typing.get_origin(tp)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    expected = origin or tp
    if expected is typing.Any:
        return value
    if expected is dict and isinstance(value, dict):   # free-form (model_kwargs): `--set` strings
        return {k: _coerce(v, typing.Any, f"{where}.{k}") for k, v in value.items()}
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ValueError(f"{where}: expected {getattr(expected, '__name__', expected)}, "
                         f"got {value!r}")
    return value


def check_keys(data: Iterable[str], valid: Iterable[str], where: str) -> None:
    """Refuse keys outside `valid`, listing the valid ones: a typo never becomes a default."""
    valid = list(valid)
    unknown = sorted(set(data) - set(valid))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid keys: {valid}")


def check_at_least(value: int, low: int, name: str) -> None:
    """Refuse a count below `low`, naming it (`name` is a config key or a flag)."""
    if value < low:
        raise ValueError(f"{name}: expected >= {low}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "config") -> T:
    """Build a (nested) config dataclass from a mapping; unknown keys and values below a class's
    `MINIMUMS` are errors."""
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    check_keys(data, [f.name for f in fields(cls)], where)
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        key = f"{where}.{name}"
        kwargs[name] = (from_dict(tp, value, key) if _is_dataclass_type(tp)
                        else _coerce(value, tp, key))
    obj = cls(**kwargs)
    for name, low in getattr(cls, "MINIMUMS", {}).items():
        check_at_least(getattr(obj, name), low, f"{where}.{name}")
    return obj


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys ("train.lr") in a nested mapping; values are validated by from_dict later."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        node = out
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {dotted}: {part} is not a section")
        node[last] = value
    return out


def read_config_file(path: str | Path | None) -> tuple[dict[str, Any], str]:
    """(mapping, name for error messages) of a YAML config file; ({}, "config") for None."""
    if path is None:
        return {}, "config"
    data = read_yaml(path, "config file") or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of config sections, got "
                         f"{type(data).__name__}")
    return data, str(path)


def default_config_for(model: str) -> str | None:
    """experiments/<model>.yaml when it exists, so `--model bcresnet8` gets the paper recipe."""
    path = EXPERIMENTS_DIR / f"{model}.yaml"
    return str(path) if path.is_file() else None


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> T:
    """YAML file (optional) + dotted overrides -> a validated config dataclass."""
    data, where = read_config_file(path)
    return from_dict(cls, apply_overrides(data, overrides or {}), where)


def parse_set_flags(pairs: list[str]) -> dict[str, Any]:
    """`--set train.lr=0.05 data.root=/x` -> {"train.lr": "0.05", ...}."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. train.lr=0.05")
        out[key] = value
    return out
