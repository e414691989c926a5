"""The search's configuration: the `search:` section (Peter et al.'s flag names where they have
one), the weight optimizer's defaults and presets, and the search space it opens.

Layers of a search config: SEARCH_DEFAULTS < `--preset` < the YAML file < CLI overrides; unknown
keys are errors naming the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_kws.config import (
    AugmentConfig,
    DataConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    read_config_file,
)
from nas_kws.models.genotype import BLOCK_OPS
from nas_kws.nas.arch_loss import REG_LOSS_TYPES
from nas_kws.nas.mixed_op import BINARY_MODES
from nas_kws.nas.space import SearchSpace, SpaceUnion, load_variants

TARGETS = ("flops", "none")
STRATEGIES = ("proxyless", "evolution", "halving", "random")
PATH_SAMPLING = ("band", "position")


@dataclass
class ArchSearchConfig:
    """The `search:` section; keys are Peter et al.'s flag names where they have one."""
    # proxyless: gradient steps on the architecture (Peter et al.); evolution: train the
    # supernet on the band's nets, then evolve nets scored by supernet validation accuracy;
    # halving: successive halving of nets drawn from the band, each trained alone (halving.py);
    # random: the baseline, nets drawn uniformly from the band
    strategy: str = "proxyless"
    n_random: int = 5                     # strategy random: how many nets to draw
    search_space: str = "proxyless_kws"   # bundled name or a .yaml file
    width_mult: float = 1.0
    warmup_epochs: int = 5                # weights only, uniform paths
    n_epochs: int = 15                    # search epochs
    warmup_lr: float = 0.2                # weight lr of the warm-up (cosine); search uses train.lr
    lr_warmup_epochs: int = 0             # linear lr warm-up at the start of the warm-up phase
    path_sampling: str = "position"       # weight-step paths before p is learned: position
    #                                       (uniform per position) | band (uniform over the
    #                                       budget band's nets; budget loss only)
    share_weights: bool = False           # candidates of a family slice one set of conv
    #                                       weights and batch-norm affines
    teacher_op: str = "largest"           # the teacher path (sandwich.py): per position the
    #                                       candidate with most MACs, or of this op (bcres)
    teacher_epochs: int = 0               # first warm-up epochs train the teacher path only
    open_epochs: int = 0                  # then over these epochs each position of a sampled
    #                                       path leaves the teacher's pick ever more often
    sandwich_paths: int = 0               # >0: each warm-up weight step trains the teacher
    #                                       path and this many sampled paths distilled from it
    evo_population: int = 16              # strategy evolution: nets per generation
    evo_generations: int = 6
    evo_parents: int = 6                  # best nets kept as parents
    evo_mutation_rate: float = 0.15       # per position
    halving_nets: int = 18                # strategy halving: nets of the first rung
    halving_epochs: list = field(default_factory=lambda: [3, 8, 16])   # epochs per rung
    halving_eta: int = 3                  # each rung keeps the best 1/eta
    halving_workers: int = 1              # nets of a rung trained at once (processes)
    halving_per_variant: bool = False     # rung 0 split evenly over the space's variants
    arch_lr: float = 0.02
    arch_adam_beta1: float = 0.0
    arch_adam_beta2: float = 0.999
    arch_adam_eps: float = 1e-8
    grad_update_arch_param_every: int = 5
    grad_binary_mode: str = "two"         # two | full_v2 (7x the cost per architecture step)
    target_hardware: str = "flops"        # flops | none (cross-entropy only)
    flops_ref_value: float = 20e6         # MACs
    grad_reg_loss_type: str = "budget"    # budget | mul#log | add#linear
    grad_reg_loss_alpha: float = 1.0
    grad_reg_loss_beta: float = 4.0
    grad_reg_loss_lambda: float = 0.1
    budget_tolerance: float = 0.1         # budget mode: derived MACs within ref * (1 +- this)
    budget_rate: float = 0.5              # budget mode: multiplier step per architecture step
    max_flash_kb: float = 0.0             # derived / sampled nets' MCU flash bound (0: none)
    max_sram_kb: float = 0.0              # derived / sampled nets' MCU peak SRAM bound (0: none)
    memory_penalty_weight: float = 1.0    # proxyless, with a bound: architecture loss +
    #                                       w * relu(E[flash] / max_flash - 1) + w * relu(E[peak
    #                                       SRAM] / max_sram - 1) (arch_loss.py); 0: the bounds
    #                                       act at derivation only
    arch_fraction: float = 0.1            # share of the training split held out for arch steps


@dataclass
class SearchConfig:
    """A search run. `train` holds the weight optimizer (SGD; lr, momentum, Nesterov, weight
    decay, label smoothing, batch size, seed, device, max_steps_per_epoch); its epochs and
    warm-up are set from `search.warmup_epochs + search.n_epochs` (written to config.yaml)."""
    features: dict = field(default_factory=dict)  # overrides of the space's features (n_mfcc)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: ArchSearchConfig = field(default_factory=ArchSearchConfig)


# Peter et al.'s weight optimizer. The default schedule is short, sized for the default
# synthetic set on 2 CPU cores (binary mode `two`, a larger architecture lr and warm-up lr to
# make up for few steps), and `--flops_ref_value` is a budget the derived net lands in;
# `--preset paper` is Peter et al.'s schedule and loss (mul#log; set its beta).
SEARCH_DEFAULTS = {"train.lr": 0.2, "train.nesterov": True, "train.momentum": 0.9,
                   "train.weight_decay": 4e-5, "train.label_smoothing": 0.1,
                   "train.batch_size": 100}
PRESETS = {"paper": {"search.warmup_epochs": 40, "search.n_epochs": 120, "search.warmup_lr": 0.05,
                     "search.arch_lr": 4e-3, "search.grad_binary_mode": "full_v2",
                     "search.grad_reg_loss_type": "mul#log",
                     "train.lr": 0.2, "train.batch_size": 100, "train.max_steps_per_epoch": 0}}


def _dotted(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} -> {"train.lr": 1}; the `features` mapping stays one value."""
    out = {}
    for key, value in data.items():
        if isinstance(value, dict) and key != "features":
            out.update(_dotted(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def load_search_config(path: str | Path | None = None, overrides: dict[str, Any] | None = None,
                       preset: str | None = None) -> SearchConfig:
    """Defaults < preset < YAML file < overrides; unknown keys are errors naming the key."""
    data, where = read_config_file(path)
    merged: dict[str, Any] = {}
    for layer in (SEARCH_DEFAULTS, PRESETS[preset] if preset else {}, _dotted(data),
                  overrides or {}):
        merged = apply_overrides(merged, layer)
    cfg = from_dict(SearchConfig, merged, where)
    _check(cfg)
    s = cfg.search
    if s.strategy != "halving":   # halving trains each net with train's own schedule
        cfg.train.epochs, cfg.train.warmup_epochs = s.warmup_epochs + s.n_epochs, 0
    return cfg


def _check(cfg: SearchConfig) -> None:
    s = cfg.search
    checks = [
        (s.strategy in STRATEGIES, "strategy", f"one of {STRATEGIES}"),
        (s.n_random >= 1, "n_random", ">= 1"),
        (s.path_sampling in PATH_SAMPLING, "path_sampling", f"one of {PATH_SAMPLING}"),
        (s.lr_warmup_epochs >= 0, "lr_warmup_epochs", ">= 0"),
        (0 <= s.teacher_epochs <= s.warmup_epochs + (s.n_epochs if s.strategy == "evolution"
                                                      else 0),
         "teacher_epochs", ">= 0 and at most the epochs that train weights only"),
        (s.sandwich_paths >= 0, "sandwich_paths", ">= 0"),
        (s.open_epochs >= 0, "open_epochs", ">= 0"),
        (s.teacher_op in ("largest", *BLOCK_OPS), "teacher_op",
         f"largest or a block op: {sorted(BLOCK_OPS)}"),
        (s.evo_population > s.evo_parents >= 2, "evo_population",
         f"more than evo_parents ({s.evo_parents}, itself >= 2)"),
        (s.evo_generations >= 0, "evo_generations", ">= 0"),
        (0 < s.evo_mutation_rate <= 1, "evo_mutation_rate", "a fraction in (0, 1]"),
        (s.halving_nets >= 1, "halving_nets", ">= 1"),
        (bool(s.halving_epochs) and all(isinstance(e, int) and not isinstance(e, bool) and e >= 1
                                        for e in s.halving_epochs), "halving_epochs",
         "a non-empty list of epoch counts >= 1, e.g. [3, 8, 16]"),
        (s.halving_eta >= 2, "halving_eta", ">= 2"),
        (s.halving_workers >= 1, "halving_workers", ">= 1"),
        (s.grad_binary_mode in BINARY_MODES, "grad_binary_mode", f"one of {BINARY_MODES}"),
        (s.grad_reg_loss_type in REG_LOSS_TYPES, "grad_reg_loss_type", f"one of {REG_LOSS_TYPES}"),
        (s.target_hardware in TARGETS, "target_hardware", f"one of {TARGETS}"),
        (s.flops_ref_value > 1, "flops_ref_value", "a MAC count > 1, e.g. 20e6"),
        (s.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
        (s.n_epochs >= (1 if s.strategy == "proxyless" else 0), "n_epochs",
         ">= 1 (>= 0 for strategy evolution, whose warm-up trains the supernet)"),
        (s.grad_update_arch_param_every >= 1, "grad_update_arch_param_every", ">= 1"),
        (0 < s.arch_fraction < 1, "arch_fraction", "a fraction in (0, 1)"),
        (0 < s.budget_tolerance < 1, "budget_tolerance", "a fraction in (0, 1)"),
        (s.width_mult > 0, "width_mult", "> 0"),
        (s.max_flash_kb >= 0, "max_flash_kb", "KiB >= 0 (0: no bound)"),
        (s.max_sram_kb >= 0, "max_sram_kb", "KiB >= 0 (0: no bound)"),
        (s.memory_penalty_weight >= 0, "memory_penalty_weight", ">= 0"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ValueError(f"search.{key}: expected {expected}, got {getattr(s, key)!r}")
    if s.strategy != "proxyless" and s.grad_reg_loss_type != "budget":
        raise ValueError(f"search.strategy {s.strategy} draws nets from the budget band: it "
                         f"needs grad_reg_loss_type budget, got {s.grad_reg_loss_type}")
    if s.grad_reg_loss_type == "budget" and s.target_hardware != "flops":
        raise ValueError("search.grad_reg_loss_type budget needs target_hardware flops")


def open_variants(cfg: SearchConfig) -> SpaceUnion:
    union = load_variants(cfg.search.search_space, cfg.search.width_mult, cfg.features)
    if union.features.kind != "mfcc" and "n_mfcc" in cfg.features:
        raise ValueError(f"n_mfcc {cfg.features['n_mfcc']}: search space {union.name} uses "
                         f"{union.features.kind} features; n_mfcc applies to MFCC spaces only")
    return union


def open_space(cfg: SearchConfig) -> SearchSpace:
    return open_variants(cfg).only()


def budget_band(s: ArchSearchConfig) -> tuple[float, float]:
    """The MACs a budget-mode derived net (or a random net) must land in."""
    ref = s.flops_ref_value
    return ref * (1 - s.budget_tolerance), ref * (1 + s.budget_tolerance)
