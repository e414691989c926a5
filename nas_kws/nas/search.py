"""The architecture search (ProxylessNAS, as Peter et al. ran it for keyword spotting).

Warm-up epochs train the supernet's weights on uniformly sampled paths. Search epochs then
alternate: weight steps on the training split (paths drawn from the architecture's
probabilities) and, every k weight steps, one architecture step (Adam, beta1 = 0) on a held-out
slice of the *training* split; the validation split only reports how the derived net is doing.
Each epoch ends with an atomic checkpoint, the derived genotype.yaml, a row of
arch_history.csv and TensorBoard scalars/images, so an interrupted search resumes exactly.

    python arch_search.py --flops_ref_value 20e6 --n_mfcc 10          # or: nas-kws search ...
    python arch_search.py --preset paper --grad_reg_loss_beta 4       # Peter et al.'s mul#log

By default `--flops_ref_value` is a budget: the derived net lands within +-10% of it
(`--grad_reg_loss_type budget`); mul#log and add#linear are Peter et al.'s soft penalties.
"""
from __future__ import annotations

import argparse
import csv
import io
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas_kws.config import (AugmentConfig, DataConfig, ExperimentConfig, TrainConfig,
                            apply_overrides, from_dict, parse_set_flags, read_config_file,
                            to_dict)
from nas_kws.data.loader import BatchLoader, open_dataset
from nas_kws.device import pick_device, rng_state, seed_everything, set_rng_state, set_threads
from nas_kws.evaluation import evaluate
from nas_kws.fileio import write_text
from nas_kws.models.genotype import build_from_genotype, describe_block, save_genotype
from nas_kws.nas.arch_loss import REG_LOSS_TYPES, BudgetMultiplier, arch_loss
from nas_kws.nas.cost import MacsTable, macs_table
from nas_kws.nas.derive import derive_picks
from nas_kws.nas.mixed_op import BINARY_MODES
from nas_kws.nas.space import SearchSpace, load_space
from nas_kws.nas.supernet import Supernet
from nas_kws.runs import RunDir
from nas_kws.train import NonFiniteLossError, Pipeline, build_optimizer

TARGETS = ("flops", "none")
RECALIBRATION_BATCHES = 4    # held-out batches that re-estimate BN statistics of the derived path


@dataclass
class ArchSearchConfig:
    """The `search:` section; keys are Peter et al.'s flag names where they have one."""
    search_space: str = "proxyless_kws"   # bundled name or a .yaml file
    width_mult: float = 1.0
    warmup_epochs: int = 5                # weights only, uniform paths
    n_epochs: int = 15                    # search epochs
    warmup_lr: float = 0.2                # weight lr of the warm-up (cosine); search uses train.lr
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
    cfg.train.epochs, cfg.train.warmup_epochs = s.warmup_epochs + s.n_epochs, 0
    return cfg


def _check(cfg: SearchConfig) -> None:
    s = cfg.search
    checks = [
        (s.grad_binary_mode in BINARY_MODES, "grad_binary_mode", f"one of {BINARY_MODES}"),
        (s.grad_reg_loss_type in REG_LOSS_TYPES, "grad_reg_loss_type", f"one of {REG_LOSS_TYPES}"),
        (s.target_hardware in TARGETS, "target_hardware", f"one of {TARGETS}"),
        (s.flops_ref_value > 1, "flops_ref_value", "a MAC count > 1, e.g. 20e6"),
        (s.warmup_epochs >= 0, "warmup_epochs", ">= 0"),
        (s.n_epochs >= 1, "n_epochs", ">= 1"),
        (s.grad_update_arch_param_every >= 1, "grad_update_arch_param_every", ">= 1"),
        (0 < s.arch_fraction < 1, "arch_fraction", "a fraction in (0, 1)"),
        (0 < s.budget_tolerance < 1, "budget_tolerance", "a fraction in (0, 1)"),
        (s.width_mult > 0, "width_mult", "> 0"),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ValueError(f"search.{key}: expected {expected}, got {getattr(s, key)!r}")
    if s.grad_reg_loss_type == "budget" and s.target_hardware != "flops":
        raise ValueError("search.grad_reg_loss_type budget needs target_hardware flops")


def open_space(cfg: SearchConfig) -> SearchSpace:
    space = load_space(cfg.search.search_space, cfg.search.width_mult, cfg.features)
    if space.features.kind != "mfcc" and "n_mfcc" in cfg.features:
        raise ValueError(f"n_mfcc {cfg.features['n_mfcc']}: search space {space.name} uses "
                         f"{space.features.kind} features; n_mfcc applies to MFCC spaces only")
    return space


# --- data ---------------------------------------------------------------------------------------

def split_training(n: int, fraction: float, batch_size: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(weight indices, architecture indices): a seeded random `fraction` of the training split
    is held out for architecture steps; it never overlaps the weight batches."""
    n_arch = max(1, int(round(n * fraction)))
    if n - n_arch < batch_size:
        raise ValueError(f"training split has {n} clips: {n - n_arch} left for weight steps after "
                         f"holding out {n_arch} for architecture steps, fewer than batch_size "
                         f"{batch_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_arch:]), np.sort(order[:n_arch])


def endless(loader: BatchLoader, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches over and over, in an order fixed by the epoch (resumable)."""
    for rounds in range(sys.maxsize):
        loader.set_epoch(epoch * 10_000 + rounds)
        yield from loader


def cosine(step: int, total: int, peak: float) -> float:
    return 0.5 * peak * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


# --- logging ------------------------------------------------------------------------------------

def position_names(space: SearchSpace) -> list[str]:
    return [f"pos{p.index}" for p in space.searchable]


SUMMARY_COLUMNS = ["epoch", "phase", "train_loss", "train_acc", "arch_loss", "expected_macs",
                   "derived_macs", "entropy", "valid_acc", "lr", "multiplier", "seconds"]


def history_columns(space: SearchSpace) -> list[str]:
    """The summary, then per position its entropy and the probability of every choice."""
    cols = list(SUMMARY_COLUMNS)
    for name, position in zip(position_names(space), space.searchable):
        cols.append(f"{name}:entropy")
        cols += [f"{name}:{label}" for label in position.labels]
    return cols


def write_history_csv(path: Path, columns: list[str], rows: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def probability_figure(space: SearchSpace, probs: list[torch.Tensor], title: str):
    """Heatmap of op probabilities, one row per searchable position, the argmax op named."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(len(p) for p in probs)
    grid = np.full((len(probs), width), np.nan)
    for i, p in enumerate(probs):
        grid[i, :len(p)] = p.detach().cpu().numpy()
    fig, ax = plt.subplots(figsize=(3 + 0.25 * width, 1 + 0.4 * len(probs)))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    names = position_names(space)
    labels = [f"{name}: {position.labels[int(p.argmax())]}"
              for name, position, p in zip(names, space.searchable, probs)]
    ax.set_yticks(range(len(probs)), labels, fontsize=7)
    ax.set_xlabel("choice index (order of the search space YAML)")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.03)
    fig.tight_layout()
    return fig


# --- the search ---------------------------------------------------------------------------------

class _Search:
    """The state of one run: supernet, optimizers, data, costs and history."""

    def __init__(self, cfg: SearchConfig, run_dir: str | Path, store, progress: bool):
        self.cfg, self.s, self.t = cfg, cfg.search, cfg.train
        self.run = RunDir(run_dir)
        self.progress = progress
        self.device = pick_device(self.t.device)
        self.space = open_space(cfg)
        self.store = store if store is not None else open_dataset(cfg.data, progress=progress)
        self.classes = list(self.store.classes)
        seed_everything(self.t.seed)
        self.supernet = Supernet(self.space, len(self.classes))
        self.table: MacsTable = macs_table(self.supernet)
        self.memory_format = (torch.channels_last if self.t.channels_last
                              else torch.contiguous_format)
        self.supernet.to(self.device, memory_format=self.memory_format)
        ref = self.s.flops_ref_value
        self.budget: BudgetMultiplier | None = None
        self.band: tuple[float, float] | None = None     # budget mode: allowed derived MACs
        if self.s.grad_reg_loss_type == "budget":
            self.budget = BudgetMultiplier(ref, self.s.budget_tolerance, self.s.budget_rate)
            self.band = (ref * (1 - self.s.budget_tolerance), ref * (1 + self.s.budget_tolerance))
            if self.table.smallest() > self.band[1] or self.table.largest() < self.band[0]:
                raise ValueError(
                    f"flops_ref_value {ref:,.0f}: the budget band {self.band[0]:,.0f}.."
                    f"{self.band[1]:,.0f} MACs is out of reach of {self.space.name} "
                    f"({self.table.smallest():,} .. {self.table.largest():,} MACs)")
        experiment = ExperimentConfig(data=cfg.data, augment=cfg.augment, train=cfg.train)
        self.pipe = Pipeline(self.store, experiment, self.space.features, self.device)
        train = self.store.split("train")
        weight_idx, arch_idx = split_training(len(train), self.s.arch_fraction,
                                              self.t.batch_size, self.t.seed)
        self.weight_loader = BatchLoader(train.audio, train.labels, self.t.batch_size,
                                         shuffle=True, seed=self.t.seed, drop_last=True,
                                         indices=weight_idx)
        self.arch_loader = BatchLoader(train.audio, train.labels, self.t.batch_size,
                                       shuffle=True, seed=self.t.seed + 1, indices=arch_idx)
        self.valid_loader = self.pipe.loader("valid", self.t.eval_batch_size)
        self.steps = len(self.weight_loader) if not self.t.max_steps_per_epoch else min(
            self.t.max_steps_per_epoch, len(self.weight_loader))
        self.weight_opt = build_optimizer(self.supernet.weight_parameters(), self.t)
        self.arch_opt = torch.optim.Adam(self.supernet.arch_parameters(), lr=self.s.arch_lr,
                                         betas=(self.s.arch_adam_beta1, self.s.arch_adam_beta2),
                                         eps=self.s.arch_adam_eps)
        self.columns = history_columns(self.space)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.writer = None      # TensorBoard, opened by `search`

    # state --------------------------------------------------------------------------------------
    def state(self, epoch: int) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "epoch": epoch, "rng": rng_state(),
                "weight_optimizer": self.weight_opt.state_dict(),
                "arch_optimizer": self.arch_opt.state_dict(),
                "multiplier": self.budget.value if self.budget else None,
                "history": self.history, "config": to_dict(self.cfg), "space": self.space.name,
                "features": self.space.features.to_dict(), "classes": self.classes}

    def restore(self) -> None:
        state = self.run.load_checkpoint("last")
        self.supernet.load_state_dict(state["supernet"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        self.arch_opt.load_state_dict(state["arch_optimizer"])
        set_rng_state(state["rng"])
        if self.budget:
            self.budget.value = state["multiplier"]
        self.history, self.start_epoch = state["history"], state["epoch"] + 1

    # steps --------------------------------------------------------------------------------------
    def expected_macs(self) -> torch.Tensor | None:
        if self.s.target_hardware == "none":
            return None
        return self.table.expected(self.supernet.probs())

    def picks(self) -> list[int]:
        probs = [p.detach() for p in self.supernet.probs()]
        return derive_picks(probs, self.table, self.band)

    def weight_step(self, feats: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    uniform: bool, where: str) -> tuple[float, int]:
        self.supernet.sample_paths(generator, uniform)
        logits = self.supernet(feats)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.t.label_smoothing)
        if not torch.isfinite(loss):
            raise NonFiniteLossError(f"{where}: loss is {loss.item()}; stopped, the last good "
                                     f"checkpoint {self.run.checkpoint_path('last')} is intact")
        self.weight_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.weight_opt.step()
        return loss.item(), int((logits.argmax(1) == labels).sum())

    @torch.no_grad()
    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Clean (not augmented) features, as the architecture steps see them."""
        feats = self.pipe.frontend(waves.to(self.device))
        return feats.contiguous(memory_format=self.memory_format)

    def held_out_features(self, epoch: int) -> Iterator[torch.Tensor]:
        """Up to RECALIBRATION_BATCHES batches of the held-out slice, in an epoch-fixed order."""
        self.arch_loader.set_epoch(epoch)
        for _, (waves, _) in zip(range(RECALIBRATION_BATCHES), self.arch_loader):
            yield self.features(waves)

    def arch_step(self, waves: torch.Tensor, labels: torch.Tensor,
                  generator: torch.Generator) -> tuple[float, float]:
        feats = self.features(waves)
        labels = labels.to(self.device)
        self.supernet.sample_gates(self.s.grad_binary_mode, generator)
        ce = F.cross_entropy(self.supernet(feats), labels)
        expected = self.expected_macs()
        loss = arch_loss(ce, expected, self.s.grad_reg_loss_type, self.s.flops_ref_value,
                         self.s.grad_reg_loss_alpha, self.s.grad_reg_loss_beta,
                         self.s.grad_reg_loss_lambda, self.budget.value if self.budget else 0.0)
        self.arch_opt.zero_grad(set_to_none=True)
        self.supernet.arch_backward(loss)
        self.arch_opt.step()
        if self.s.grad_binary_mode == "two":
            self.supernet.rescale_two()
        self.supernet.choose(self.supernet.argmax())   # drops the gates
        if self.budget:
            self.budget.update(self.table.of(self.supernet.argmax()))
        return loss.item(), ce.item()

    # epochs -------------------------------------------------------------------------------------
    def run_epoch(self, epoch: int) -> dict[str, Any]:
        warm = epoch < self.s.warmup_epochs
        phase_start, phase_epochs, peak = ((0, self.s.warmup_epochs, self.s.warmup_lr) if warm else
                                           (self.s.warmup_epochs, self.s.n_epochs, self.t.lr))
        self.supernet.train()
        self.weight_loader.set_epoch(epoch)
        augment_gen = self.pipe.generator(epoch)
        path_gen = torch.Generator().manual_seed(self.t.seed * 104_729 + epoch)
        arch_batches = endless(self.arch_loader, epoch)
        started = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        arch_losses = []
        batches = tqdm(self.weight_loader, total=self.steps, leave=False, disable=not self.progress,
                       desc=f"{'warm-up' if warm else 'search'} epoch {epoch}")
        for step, (waves, labels) in enumerate(batches):
            if step == self.steps:
                break
            lr = cosine((epoch - phase_start) * self.steps + step, phase_epochs * self.steps, peak)
            for group in self.weight_opt.param_groups:
                group["lr"] = lr
            feats, labels = self.pipe.train_batch(waves, labels, augment_gen)
            feats = feats.contiguous(memory_format=self.memory_format)
            loss, hits = self.weight_step(feats, labels, path_gen, warm,
                                          f"epoch {epoch} step {step}")
            loss_sum += loss * len(labels)
            correct += hits
            seen += len(labels)
            if not warm and (step + 1) % self.s.grad_update_arch_param_every == 0:
                arch_losses.append(self.arch_step(*next(arch_batches), path_gen)[0])
            batches.set_postfix(loss=f"{loss:.3f}")
        return self.end_epoch(epoch, warm, loss_sum / seen, correct / seen,
                              float(np.mean(arch_losses)) if arch_losses else float("nan"),
                              lr, time.time() - started)

    def end_epoch(self, epoch: int, warm: bool, train_loss: float, train_acc: float,
                  arch_loss_value: float, lr: float, seconds: float) -> dict[str, Any]:
        probs = [p.detach().cpu() for p in self.supernet.probs()]
        picks = self.picks()
        self.supernet.choose(picks)
        self.supernet.recalibrate_bn(self.held_out_features(epoch))
        valid = evaluate(self.supernet, self.pipe.frontend, self.valid_loader, self.device,
                         len(self.classes))
        self.supernet.train()
        entropies = self.supernet.entropies()
        expected = self.table.expected(probs)
        row: dict[str, Any] = {
            "epoch": epoch, "phase": "warmup" if warm else "search", "train_loss": train_loss,
            "train_acc": train_acc, "arch_loss": arch_loss_value, "expected_macs": float(expected),
            "derived_macs": self.table.of(picks), "entropy": float(np.mean(entropies)),
            "valid_acc": valid.accuracy, "lr": lr,
            "multiplier": self.budget.value if self.budget else "", "seconds": round(seconds, 2)}
        for name, position, p, h in zip(position_names(self.space), self.space.searchable, probs,
                                        entropies):
            row[f"{name}:entropy"] = h
            row.update({f"{name}:{label}": float(v) for label, v in zip(position.labels, p)})
        self.history.append(row)
        write_history_csv(self.run.path / "arch_history.csv", self.columns, self.history)
        save_genotype(self.run.path / "genotype.yaml",
                      self.space.genotype(picks, len(self.classes), self.classes))
        self.log_tensorboard(epoch, row, probs, entropies)
        self.run.save_checkpoint("last", self.state(epoch))
        return row

    def log_tensorboard(self, epoch: int, row: dict[str, Any], probs: list[torch.Tensor],
                        entropies: list[float]) -> None:
        import matplotlib.pyplot as plt

        w = self.writer
        for key in ("train_loss", "train_acc", "valid_acc", "lr"):
            w.add_scalar(key.replace("_", "/", 1), row[key], epoch)
        w.add_scalar("macs/expected", row["expected_macs"], epoch)
        w.add_scalar("macs/derived", row["derived_macs"], epoch)
        w.add_scalar("macs/ref", self.s.flops_ref_value, epoch)
        w.add_scalar("entropy/mean", row["entropy"], epoch)
        for name, h in zip(position_names(self.space), entropies):
            w.add_scalar(f"entropy/{name}", h, epoch)
        if row["phase"] == "search":
            w.add_scalar("arch/loss", row["arch_loss"], epoch)
        if self.budget:
            w.add_scalar("arch/multiplier", self.budget.value, epoch)
        fig = probability_figure(self.space, probs, f"epoch {epoch}")
        w.add_figure("arch/probabilities", fig, epoch)
        plt.close(fig)

    def finish(self, seconds: float) -> dict[str, Any]:
        from nas_kws.profiling import profile_model

        picks = self.picks()
        genotype = self.space.genotype(picks, len(self.classes), self.classes)
        path = save_genotype(self.run.path / "genotype.yaml", genotype)
        derived = profile_model(build_from_genotype(genotype))
        ref = self.s.flops_ref_value
        return {
            "search_space": self.space.name, "genotype": str(path),
            "blocks": [describe_block(b) for b in genotype["blocks"]],
            "derived_macs": derived.macs, "derived_params": derived.params,
            "expected_macs": self.history[-1]["expected_macs"], "flops_ref_value": ref,
            "macs_vs_ref": derived.macs / ref,
            "within_budget": abs(derived.macs - ref) <= self.s.budget_tolerance * ref,
            "supernet_valid_acc": self.history[-1]["valid_acc"], "search_seconds": seconds,
            "space_macs_range": [self.table.smallest(), self.table.largest()],
            "history": [{k: r[k] for k in SUMMARY_COLUMNS} for r in self.history]}


def search(cfg: SearchConfig, run_dir: str | Path, resume: bool = False, store=None,
           progress: bool = True, stop_after_epoch: int | None = None) -> dict[str, Any]:
    """Run (or resume) a search in `run_dir`; returns (and writes) metrics.json.
    `stop_after_epoch` ends the job after that epoch with its checkpoint written."""
    from torch.utils.tensorboard import SummaryWriter

    job = _Search(cfg, run_dir, store, progress)
    if resume:
        job.restore()
    else:
        job.run.write_setup(to_dict(cfg), job.space.features, job.classes)
    total = job.s.warmup_epochs + job.s.n_epochs
    job.writer = SummaryWriter(str(job.run.tb_dir))
    started = time.time()
    try:
        for epoch in tqdm(range(job.start_epoch, total), desc="search", disable=not progress,
                          initial=job.start_epoch, total=total):
            job.run_epoch(epoch)
            if stop_after_epoch is not None and epoch >= stop_after_epoch and epoch + 1 < total:
                return {"stopped_after_epoch": epoch}
        metrics = job.finish(time.time() - started)
    finally:
        job.writer.close()
    job.run.write_metrics(metrics)
    return metrics


# --- command line ---------------------------------------------------------------------------------

FLAG_KEYS = {  # flag -> config key (Peter et al.'s flag names where they exist)
    "search_space": "search.search_space", "width_mult": "search.width_mult",
    "n_epochs": "search.n_epochs", "warmup_epochs": "search.warmup_epochs",
    "arch_lr": "search.arch_lr",
    "grad_update_arch_param_every": "search.grad_update_arch_param_every",
    "grad_binary_mode": "search.grad_binary_mode", "target_hardware": "search.target_hardware",
    "flops_ref_value": "search.flops_ref_value", "grad_reg_loss_type": "search.grad_reg_loss_type",
    "grad_reg_loss_alpha": "search.grad_reg_loss_alpha",
    "grad_reg_loss_beta": "search.grad_reg_loss_beta",
    "grad_reg_loss_lambda": "search.grad_reg_loss_lambda",
    "budget_tolerance": "search.budget_tolerance", "init_lr": "train.lr",
    "train_batch_size": "train.batch_size", "manual_seed": "train.seed", "device": "train.device",
    "dataset": "data.dataset", "data_root": "data.root", "n_mfcc": "features.n_mfcc",
}


def add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", help="run directory (default runs/search-<space>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the search in --path")
    p.add_argument("--config", help="search config YAML (sections data, augment, train, search)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="paper: Peter et al.'s schedule and loss (40 warm-up + 120 search "
                        "epochs, full_v2, arch lr 4e-3, mul#log)")
    p.add_argument("--search_space", help="proxyless_kws (default), bcresnet, hybrid or a .yaml")
    p.add_argument("--width_mult", type=float)
    p.add_argument("--n_mfcc", type=int, help="MFCC count for MFCC spaces (default: the space's)")
    p.add_argument("--dataset", help="synth (default, embedded synthetic set), gsc or folders")
    p.add_argument("--data_root")
    p.add_argument("--target_hardware", choices=TARGETS)
    p.add_argument("--flops_ref_value", type=float, help="MAC reference/budget, e.g. 20e6")
    p.add_argument("--grad_reg_loss_type", choices=REG_LOSS_TYPES,
                   help="budget (default: land within +-budget_tolerance of flops_ref_value), "
                        "mul#log or add#linear (Peter et al.)")
    p.add_argument("--grad_reg_loss_alpha", type=float)
    p.add_argument("--grad_reg_loss_beta", type=float)
    p.add_argument("--grad_reg_loss_lambda", type=float)
    p.add_argument("--budget_tolerance", type=float, help="budget mode: +- fraction (0.1)")
    p.add_argument("--arch_lr", type=float)
    p.add_argument("--warmup_epochs", type=int)
    p.add_argument("--n_epochs", type=int)
    p.add_argument("--grad_update_arch_param_every", type=int)
    p.add_argument("--grad_binary_mode", choices=BINARY_MODES)
    p.add_argument("--init_lr", type=float, help="weight lr of the search epochs")
    p.add_argument("--train_batch_size", type=int)
    p.add_argument("--manual_seed", type=int)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any other config key, e.g. --set train.max_steps_per_epoch=10")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    overrides = {key: getattr(args, flag) for flag, key in FLAG_KEYS.items()
                 if getattr(args, flag) is not None}
    overrides.update(parse_set_flags(args.set))
    return load_search_config(args.config, overrides, args.preset)


def print_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    print(f"derived net ({metrics['search_space']}):")
    for i, label in enumerate(metrics["blocks"]):
        print(f"  block {i:2d}  {label}")
    ref = metrics["flops_ref_value"]
    print(f"MACs {metrics['derived_macs']:,} ({metrics['derived_macs'] / 1e6:.2f} M) against "
          f"flops_ref_value {ref / 1e6:.2f} M ({metrics['macs_vs_ref']:.2f}x); params "
          f"{metrics['derived_params']:,}")
    print(f"derived path in the supernet: valid accuracy {metrics['supernet_valid_acc']:.4f}")
    print(f"genotype: {metrics['genotype']}\nretrain:  python run_exp.py --path {run_dir} --train")


def run_command(args: argparse.Namespace) -> int:
    if args.resume:
        if not args.path:
            raise ValueError("--resume needs --path RUN_DIR")
        cfg = load_search_config(RunDir(args.path).config_path)
        run_dir = Path(args.path)
    else:
        cfg = config_from_args(args)
        run_dir = Path(args.path or f"runs/search-{Path(cfg.search.search_space).stem}-"
                                    f"{time.strftime('%Y%m%d-%H%M%S')}")
        if RunDir(run_dir).config_path.is_file():
            raise ValueError(f"{run_dir} already holds a run; use --resume or another --path")
    metrics = search(cfg, run_dir, resume=args.resume, progress=not args.quiet)
    print_summary(metrics, run_dir)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="ProxylessNAS architecture search (arch_search.py)")
    add_search_flags(p)
    p.set_defaults(func=run_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arch_search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_flags(parser)
    args = parser.parse_args(argv)
    set_threads()
    try:
        return run_command(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"arch_search.py: error: {err}", file=sys.stderr)
        return 2

