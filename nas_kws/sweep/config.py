"""The sweep YAML: which study to run (sampler, pruner, objectives, trial count), which lab
pipeline a trial is (search -> train -> optional QAT) and what each trial samples.

    study:    {n_trials, sampler, objectives, pruner, seed, ...}        (StudyConfig)
    search:   {config, set, sample}           optional: a search run whose net is trained
    train:    {config, model, set, sample}    the training (of the searched net, or `model`),
              or {run}                        a finished training run, for QAT-only sweeps
    quantize: {spec, epochs, lr, set, sample} optional: Brevitas QAT of the trained net
    out:      the sweep folder (default runs/sweeps/<yaml name>)

`set` fixes config keys of a step (what `--set KEY=VALUE` would); `sample` maps a step's config
keys to distributions: `{low, high}` (+ `log: true`, `step`) or `{choices: [...]}`. Unknown keys,
empty ranges and keys a step's config does not have are errors at load time, naming the key, so
a typo never costs a trial.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from nas_kws.config import ExperimentConfig, check_keys, from_dict, load_config, read_config_file

OBJECTIVES = {"valid_acc": "maximize", "macs": "minimize", "size_bits": "minimize"}
SAMPLERS = ("tpe", "nsga2", "random", "grid")
PRUNERS = ("none", "median", "hyperband")
SECTIONS = ("out", "study", "search", "train", "quantize")
# study keys that tune how this process runs, not what the study is: they may differ between
# the machines that join one study
RUN_KEYS = ("n_trials", "heartbeat_interval", "grace_period", "max_retries")
RANGE_KEYS = ("low", "high", "log", "step")


@dataclass
class StudyConfig:
    n_trials: int = 10                  # trials to finish (complete, pruned or failed)
    sampler: str = "tpe"                # tpe | nsga2 | random | grid
    objectives: list = field(default_factory=lambda: ["valid_acc"])   # of OBJECTIVES
    pruner: str = "none"                # none | median | hyperband (one objective only)
    seed: int = 0                       # sampler seed (worker k of a host adds k)
    startup_trials: int = 5             # tpe / median: random or unpruned trials first
    population: int = 8                 # nsga2: population size
    prune_warmup_epochs: int = 1        # median: epochs a trial trains before it may be pruned
    heartbeat_interval: int = 30        # seconds between a running trial's heartbeats
    grace_period: int = 90              # seconds without a heartbeat before a trial is stale
    max_retries: int = 2                # re-queues of a trial whose worker died

    MINIMUMS: ClassVar[dict[str, int]] = {"n_trials": 1, "startup_trials": 0, "population": 2,
                                          "prune_warmup_epochs": 0, "heartbeat_interval": 1,
                                          "grace_period": 1, "max_retries": 0}


@dataclass
class StepConfig:
    config: str | None = None           # the step's config YAML, relative to the sweep YAML
    set: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)


@dataclass
class TrainStepConfig(StepConfig):
    model: str | None = None            # without a search: a registered name or genotype.yaml
    run: str | None = None              # instead of training: a finished run that each trial
    #                                     quantizes (bit-width sweeps)


@dataclass
class QuantizeStepConfig:
    spec: dict = field(default_factory=dict)   # QuantSpec keys: weight_bits, act_bits, layers..
    epochs: int = 3
    lr: float | None = None
    set: dict = field(default_factory=dict)
    sample: dict = field(default_factory=dict)  # QuantSpec keys, layers.<glob>.weight_bits


@dataclass(frozen=True)
class Param:
    """One sampled value: Optuna parameter `name` (`step:key`) sets `key` of `step`."""
    step: str
    key: str
    distribution: BaseDistribution

    @property
    def name(self) -> str:
        return f"{self.step}:{self.key}"


@dataclass
class SweepConfig:
    path: Path
    out: Path
    study: StudyConfig
    train: TrainStepConfig
    search: StepConfig | None = None
    quantize: QuantizeStepConfig | None = None
    params: list[Param] = field(default_factory=list)
    definition: dict = field(default_factory=dict)   # what joining workers must agree on

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.study.objectives]

    def resolve(self, path: str) -> Path:
        """A path of the sweep YAML, relative to its folder."""
        return (self.path.parent / path).resolve()


def _number(value: Any, where: str) -> float | int:
    if isinstance(value, str):  # YAML reads 2e6 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: expected a number, got {value!r}")
    return value


def parse_distribution(spec: Any, where: str) -> BaseDistribution:
    """{choices: [...]} or {low, high[, log][, step]}: integers when low, high (and step) are."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: expected {{low: A, high: B}} or {{choices: [...]}}, "
                         f"got {spec!r}")
    if "choices" in spec:
        check_keys(spec, ["choices"], where)
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ValueError(f"{where}.choices: expected a non-empty list, got {choices!r}")
        if any(isinstance(c, (dict, list)) for c in choices):
            raise ValueError(f"{where}.choices: expected scalars, got {choices!r}")
        return CategoricalDistribution(choices)
    check_keys(spec, RANGE_KEYS, where)
    missing = [k for k in ("low", "high") if k not in spec]
    if missing:
        raise ValueError(f"{where}: missing {missing}; expected {{low: A, high: B}} or "
                         "{choices: [...]}")
    low, high = (_number(spec[k], f"{where}.{k}") for k in ("low", "high"))
    step = None if spec.get("step") is None else _number(spec["step"], f"{where}.step")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ValueError(f"{where}.log: expected true or false, got {log!r}")
    if not low < high:
        raise ValueError(f"{where}: empty range, low {low!r} must be below high {high!r}")
    if log and low <= 0:
        raise ValueError(f"{where}: log: true needs low > 0, got {low!r}")
    if log and step is not None:
        raise ValueError(f"{where}: give log or step, not both")
    if step is not None and step <= 0:
        raise ValueError(f"{where}.step: expected > 0, got {step!r}")
    if all(isinstance(v, int) for v in (low, high, step if step is not None else 1)):
        return IntDistribution(low, high, log=log, step=step or 1)
    return FloatDistribution(float(low), float(high), log=log,
                             step=None if step is None else float(step))


def grid_values(dist: BaseDistribution, name: str) -> list:
    """The points of one parameter on the grid sampler's grid."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution) and not dist.log:
        return list(range(dist.low, dist.high + 1, dist.step))
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        count = int(round((dist.high - dist.low) / dist.step)) + 1
        return [dist.low + i * dist.step for i in range(count)]
    raise ValueError(f"{name}: the grid sampler needs choices, or low/high with a step")


def candidates(dist: BaseDistribution) -> list:
    """Values that stand for a distribution when a step's config is checked at load time."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def quant_spec_with(spec: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """`spec` (QuantSpec keys) with one sampled key set; `layers.<glob>.weight_bits` (or
    act_bits) sets the bits of the layers whose names match the glob (dots and all)."""
    out = copy.deepcopy(spec)
    glob, _, leaf = key.removeprefix("layers.").rpartition(".")
    if key.startswith("layers.") and glob and leaf in ("weight_bits", "act_bits"):
        out.setdefault("layers", {}).setdefault(glob, {})[leaf] = value
    else:
        out[key] = value
    return out


def _params(step_name: str, step: StepConfig | QuantizeStepConfig, where: str) -> list[Param]:
    return [Param(step_name, key, parse_distribution(spec, f"{where}: {step_name}.sample.{key}"))
            for key, spec in step.sample.items()]


def _check_study(s: StudyConfig, params: list[Param], where: str) -> None:
    unknown = [o for o in s.objectives if o not in OBJECTIVES]
    if not s.objectives or unknown or len(set(s.objectives)) != len(s.objectives):
        test = " (test accuracy is never an objective)" if any("test" in str(o)
                                                               for o in unknown) else ""
        raise ValueError(f"{where}: study.objectives: expected distinct names from "
                         f"{list(OBJECTIVES)}, got {s.objectives!r}{test}")
    if s.sampler not in SAMPLERS:
        raise ValueError(f"{where}: study.sampler: expected one of {SAMPLERS}, got {s.sampler!r}")
    if s.pruner not in PRUNERS:
        raise ValueError(f"{where}: study.pruner: expected one of {PRUNERS}, got {s.pruner!r}")
    if s.pruner != "none" and len(s.objectives) > 1:
        raise ValueError(f"{where}: study.pruner {s.pruner}: pruning needs one objective, got "
                         f"{s.objectives}")
    if not params:
        raise ValueError(f"{where}: nothing to sample; add `sample:` to search, train or "
                         "quantize")
    if s.sampler == "grid":
        size = math.prod(len(grid_values(p.distribution, p.name)) for p in params)
        if s.n_trials > size:
            raise ValueError(f"{where}: study.n_trials {s.n_trials}: the grid has {size} "
                             "points only")


def check_steps(cfg: SweepConfig) -> None:
    """Build each step's config with every sampled key at its candidate values, so an unknown
    or badly typed key fails now, named, and not in a trial."""
    from nas_kws.nas.search_config import load_search_config

    def check(step: str, build: Callable[[dict[str, Any]], Any]) -> None:
        """`build` the step's config with no sampled value, then with each candidate."""
        tries = [{}] + [{p.key: v} for p in cfg.params if p.step == step
                        for v in candidates(p.distribution)]
        for sampled in tries:
            try:
                build(sampled)
            except ValueError as err:
                shown = ", ".join(f"{k}={v!r}" for k, v in sampled.items())
                raise ValueError(f"{cfg.path}: {step}{f' with {shown}' if shown else ''}: "
                                 f"{err}") from None

    if cfg.search is not None:
        search = cfg.resolve(cfg.search.config) if cfg.search.config else None
        check("search", lambda sampled: load_search_config(search,
                                                           {**cfg.search.set, **sampled}))
    if cfg.train.run is None:
        train = cfg.resolve(cfg.train.config) if cfg.train.config else None
        model = cfg.train.model or "bcresnet1"
        check("train", lambda sampled: load_config(
            ExperimentConfig, train, {**cfg.train.set, **sampled, "model": model}))
    if cfg.quantize is not None:
        from nas_kws.quant.qat import QuantSpec  # Brevitas: slow to import

        def quant_spec(sampled: dict[str, Any]) -> QuantSpec:
            spec = cfg.quantize.spec
            for key, value in sampled.items():
                spec = quant_spec_with(spec, key, value)
            return QuantSpec.from_dict(spec, where="spec")

        check("quantize", quant_spec)


def load_sweep(path: str | Path, out: str | None = None,
               n_trials: int | None = None) -> SweepConfig:
    """The sweep YAML, checked; `out` and `n_trials` (command-line values) win over the file."""
    path = Path(path)
    data, where = read_config_file(path)
    check_keys(data, SECTIONS, where)
    if "train" not in data:
        raise ValueError(f"{where}: missing section train (what each trial trains)")
    study_data = dict(data.get("study") or {})
    if n_trials is not None:
        study_data["n_trials"] = n_trials
    study = from_dict(StudyConfig, study_data, f"{where}: study")
    search = from_dict(StepConfig, data["search"], f"{where}: search") if "search" in data else None
    train = from_dict(TrainStepConfig, data["train"], f"{where}: train")
    quantize = (from_dict(QuantizeStepConfig, data["quantize"], f"{where}: quantize")
                if data.get("quantize") is not None else None)
    if search is not None and train.model:
        raise ValueError(f"{where}: train.model {train.model!r}: a sweep with a search trains "
                         "the searched net; remove train.model or the search section")
    if train.run is not None:
        given = [k for k, v in (("search", search), ("train.model", train.model),
                                ("train.config", train.config), ("train.set", train.set),
                                ("train.sample", train.sample)) if v]
        if given or quantize is None:
            raise ValueError(f"{where}: train.run {train.run!r} quantizes a finished run: it "
                             f"needs a quantize section and no {' / '.join(given) or 'other'} "
                             "keys")
    elif search is None and not train.model:
        raise ValueError(f"{where}: train.model: name the net to train (a registered model or "
                         "a genotype.yaml), or add a search section")
    params = [p for name, step in (("search", search), ("train", train),
                                   ("quantize", quantize)) if step is not None
              for p in _params(name, step, where)]
    _check_study(study, params, where)
    definition = {k: v for k, v in data.items() if k != "out"}
    definition["study"] = {k: v for k, v in (data.get("study") or {}).items()
                           if k not in RUN_KEYS}
    folder = Path(out or data.get("out") or Path("runs/sweeps") / path.stem)
    cfg = SweepConfig(path=path.resolve(), out=folder, study=study, train=train, search=search,
                      quantize=quantize, params=params, definition=definition)
    check_steps(cfg)
    return cfg


def grid_space(cfg: SweepConfig) -> dict[str, list]:
    return {p.name: grid_values(p.distribution, p.name) for p in cfg.params}

