"""The architecture search (ProxylessNAS, as Peter et al. ran it for keyword spotting).

Warm-up epochs train the supernet's weights on uniformly sampled paths. Search epochs then
alternate: weight steps on the training split (paths drawn from the architecture's
probabilities) and, every k weight steps, one architecture step (Adam, beta1 = 0) on a held-out
slice of the *training* split; the validation split only reports how the derived net is doing.
Weight steps are the trainer's `train_step` under its learning-rate curve (a cosine per phase).
Each epoch ends with an atomic checkpoint, the derived genotype.yaml, a row of
arch_history.csv and TensorBoard scalars/images, so an interrupted search resumes exactly.
By default `flops_ref_value` is a budget: the derived net lands within +-10% of it; mul#log and
add#linear are Peter et al.'s soft penalties (arch_loss.py). The CLI is in nas/commands.py.

In a torchrun job of several processes (nas_kws.distributed) every process draws the same paths
and gates (shared seeded generators), trains on its part of every global batch and averages the
gradients that exist (weights of the sampled path, then architecture parameters) before each
update; rank 0 alone validates, derives and writes the run.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from nas_kws import distributed
from nas_kws.config import ExperimentConfig, to_dict
from nas_kws.data.loader import BatchLoader, open_dataset
from nas_kws.data.pipeline import Pipeline
from nas_kws.device import pick_device, rng_state, seed_everything, set_rng_state
from nas_kws.evaluation import evaluate
from nas_kws.fileio import write_csv
from nas_kws.models.genotype import build_from_genotype, describe_block, save_genotype
from nas_kws.nas.arch_loss import BudgetMultiplier, arch_loss, bound_penalty
from nas_kws.nas.cost import MacsTable, macs_table
from nas_kws.nas.derive import derive_picks
from nas_kws.nas.evolution import Scored, evolve
from nas_kws.nas.history import (
    SUMMARY_COLUMNS,
    history_columns,
    log_tensorboard,
    position_names,
)
from nas_kws.nas.sample import BandSampler
from nas_kws.nas.sandwich import sandwich_step, teacher_picks, warmup_path
from nas_kws.nas.search_config import SearchConfig, budget_band, open_space
from nas_kws.nas.supernet import Supernet
from nas_kws.runs import RunDir
from nas_kws.train import (
    build_optimizer,
    lr_factor,
    steps_per_epoch,
    stops_after,
    train_batches,
    train_step,
)

RECALIBRATION_BATCHES = 4    # held-out batches that re-estimate BN statistics of the derived path
# the settings a warm-up depends on: a search may start from another run's warm-up
# (--warmup_from) only when they match; the search epochs' settings may differ
WARMUP_KEYS = ("features", "data", "augment", "train.seed", "train.batch_size",
               "train.momentum", "train.nesterov", "train.weight_decay", "train.label_smoothing",
               "train.max_steps_per_epoch", "search.search_space", "search.width_mult",
               "search.warmup_epochs", "search.warmup_lr", "search.lr_warmup_epochs",
               "search.path_sampling", "search.share_weights", "search.teacher_op",
               "search.teacher_epochs", "search.open_epochs", "search.sandwich_paths",
               "search.flops_ref_value", "search.budget_tolerance", "search.arch_fraction",
               "search.max_flash_kb", "search.max_sram_kb")


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


def _dotted_get(config: dict[str, Any], key: str) -> Any:
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def endless(loader: BatchLoader, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The loader's batches over and over, in an order fixed by the epoch (resumable)."""
    for rounds in range(sys.maxsize):
        loader.set_epoch(epoch * 10_000 + rounds)
        yield from loader



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
        self.supernet = Supernet(self.space, len(self.classes), self.s.share_weights)
        self.table: MacsTable = macs_table(self.supernet).bounded(self.s.max_flash_kb,
                                                                  self.s.max_sram_kb)
        self.memory_format = (torch.channels_last if self.t.channels_last
                              else torch.contiguous_format)
        self.supernet.to(self.device, memory_format=self.memory_format)
        ref = self.s.flops_ref_value
        self.budget: BudgetMultiplier | None = None
        self.band: tuple[float, float] | None = None     # budget mode: allowed derived MACs
        if self.s.grad_reg_loss_type == "budget":
            self.budget = BudgetMultiplier(ref, self.s.budget_tolerance, self.s.budget_rate)
            self.band = budget_band(self.s)
            if self.table.smallest() > self.band[1] or self.table.largest() < self.band[0]:
                raise ValueError(
                    f"flops_ref_value {ref:,.0f}: the budget band {self.band[0]:,.0f}.."
                    f"{self.band[1]:,.0f} MACs is out of reach of {self.space.name} "
                    f"({self.table.smallest():,} .. {self.table.largest():,} MACs)")
        # paths of the weight steps: uniform over the band's nets (SPOS's constrained sampling)
        # where the search has a budget and asks for it, else uniform per position / by p
        self.sampler = BandSampler(self.table, *self.band) if self.band else None
        self.teacher = teacher_picks(self.space, self.table, self.s.teacher_op)
        experiment = ExperimentConfig(data=cfg.data, augment=cfg.augment, train=cfg.train)
        shard = distributed.shard()
        self.pipe = Pipeline(self.store, experiment, self.space.features, self.device, shard)
        train = self.store.split("train")
        weight_idx, arch_idx = split_training(len(train), self.s.arch_fraction,
                                              self.t.batch_size, self.t.seed)
        self.weight_loader = BatchLoader(train.audio, train.labels, self.t.batch_size,
                                         shuffle=True, seed=self.t.seed, drop_last=True,
                                         indices=weight_idx, split="train (weight steps)",
                                         shard=shard)
        held_out = dict(audio=train.audio, labels=train.labels, batch_size=self.t.batch_size,
                        shuffle=True, seed=self.t.seed + 1, indices=arch_idx,
                        split="train (architecture steps)")
        self.arch_loader = BatchLoader(**held_out, shard=shard)
        self.recalibration_loader = BatchLoader(**held_out)    # whole batches, for rank 0
        self.valid_loader = self.pipe.loader("valid", self.t.eval_batch_size)
        self.steps = steps_per_epoch(len(self.weight_loader), self.t)
        self.weight_opt = build_optimizer(self.supernet.weight_parameters(), self.t)
        self.arch_opt = torch.optim.Adam(self.supernet.arch_parameters(), lr=self.s.arch_lr,
                                         betas=(self.s.arch_adam_beta1, self.s.arch_adam_beta2),
                                         eps=self.s.arch_adam_eps)
        self.columns = history_columns(self.space)
        self.history: list[dict[str, Any]] = []
        self.start_epoch = 0
        self.rank_rngs: dict[str, Any] = {}  # every process's RNG states, in a job of several
        self.writer = None      # TensorBoard, opened by `search`
        distributed.seed_ranks(self.t.seed)

    # state --------------------------------------------------------------------------------------
    def state(self, epoch: int) -> dict[str, Any]:
        return {"supernet": self.supernet.state_dict(), "epoch": epoch, "rng": rng_state(),
                "weight_optimizer": self.weight_opt.state_dict(),
                "arch_optimizer": self.arch_opt.state_dict(),
                **self.rank_rngs, "multiplier": self.budget.value if self.budget else None,
                "history": self.history, "config": to_dict(self.cfg), "space": self.space.name,
                "features": self.space.features.to_dict(), "classes": self.classes}

    def restore(self, warmup_from: RunDir | None = None) -> None:
        """Continue from this run's last checkpoint, or from the checkpoint `warmup_from` (another
        run) left after its warm-up: searches that differ only in their search epochs (an
        ablation) then share one warm-up, bit for bit."""
        state = (warmup_from or self.run).resume_checkpoint()
        if warmup_from:
            self.check_warmup(warmup_from, state)
        self.supernet.load_state_dict(state["supernet"])
        self.weight_opt.load_state_dict(state["weight_optimizer"])
        if not warmup_from:    # a warm-up made no architecture steps; keep this run's lr, betas
            self.arch_opt.load_state_dict(state["arch_optimizer"])
        set_rng_state(distributed.own_rng_state(state))
        if self.budget:
            self.budget.value = state["multiplier"]
        self.history, self.start_epoch = state["history"], state["epoch"] + 1

    def check_warmup(self, source: RunDir, state: dict[str, Any]) -> None:
        """`state` (of run `source`) is this run's warm-up: same warm-up settings, stopped
        after the last warm-up epoch."""
        where = f"--warmup_from {source.path}"
        for key in WARMUP_KEYS:
            theirs, ours = _dotted_get(state["config"], key), _dotted_get(to_dict(self.cfg), key)
            if theirs != ours:
                raise ValueError(f"{where}: {key} is {theirs!r} there, {ours!r} here; the warm-up "
                                 f"settings must match")
        if state["epoch"] + 1 != self.s.warmup_epochs:
            raise ValueError(f"{where}: its checkpoint is after {state['epoch'] + 1} epochs; "
                             f"expected one after the warm-up's {self.s.warmup_epochs}")

    # steps --------------------------------------------------------------------------------------
    def expected_macs(self) -> torch.Tensor | None:
        if self.s.target_hardware == "none":
            return None
        return self.table.expected(self.supernet.probs())

    def memory_penalty(self) -> torch.Tensor | None:
        """The architecture loss's flash and SRAM penalties (None without a bound or weight)."""
        weight = self.s.memory_penalty_weight
        if not self.table.memory_bounded or weight == 0:
            return None
        probs = self.supernet.probs()
        return (bound_penalty(self.table.expected_flash(probs), self.table.max_flash, weight)
                + bound_penalty(self.table.expected_sram(probs), self.table.max_sram, weight))

    def picks(self) -> list[int]:
        probs = [p.detach() for p in self.supernet.probs()]
        return derive_picks(probs, self.table, self.band)

    def sample_path(self, warm: bool, generator: torch.Generator,
                    band_rng: np.random.Generator) -> None:
        """A weight step's path: from the band sampler while the architecture is not being
        learned (warm-up, or the whole training for evolution), else drawn from p."""
        learning_p = not warm and self.s.strategy == "proxyless"
        if self.s.path_sampling == "band" and self.sampler is not None and not learning_p:
            self.supernet.choose(self.sampler.draw(band_rng))
        else:
            self.supernet.sample_paths(generator, uniform=warm)

    def weight_step(self, feats: torch.Tensor, labels: torch.Tensor, where: str, epoch: int,
                    warm: bool, generator: torch.Generator,
                    band_rng: np.random.Generator) -> tuple[float, float]:
        """The trainer's step on a sampled path (gradients averaged over the processes); while
        weights alone are trained, the teacher path alone for the first `teacher_epochs`, then
        the sandwich of the teacher and `sandwich_paths` opened paths (sandwich.py)."""
        def draw() -> list[int]:
            self.sample_path(warm, generator, band_rng)
            return [m.active for m in self.supernet.mixed_ops]

        def path() -> list[int]:
            return warmup_path(self.teacher, draw, epoch, self.s.teacher_epochs,
                               self.s.open_epochs, band_rng)

        if warm or self.s.strategy != "proxyless":
            if epoch >= self.s.teacher_epochs and self.s.sandwich_paths:
                loss, hits = sandwich_step(self.supernet, feats, labels, self.weight_opt, self.t,
                                           self.teacher, path, self.s.sandwich_paths, where,
                                           self.average_weight_gradients)
                return loss, hits / self.s.sandwich_paths
            self.supernet.choose(path())
        else:
            draw()
        loss, logits = train_step(self.supernet, feats, labels, self.weight_opt, self.t, where,
                                  after_backward=self.average_weight_gradients)
        return loss.item(), int((logits.argmax(1) == labels).sum())

    def average_weight_gradients(self) -> None:
        distributed.average_gradients(self.supernet.weight_parameters())

    @torch.no_grad()
    def features(self, waves: torch.Tensor) -> torch.Tensor:
        """Clean (not augmented) features, as the architecture steps see them."""
        feats = self.pipe.frontend(waves.to(self.device))
        return feats.contiguous(memory_format=self.memory_format)

    def held_out_features(self, epoch: int) -> Iterator[torch.Tensor]:
        """Up to RECALIBRATION_BATCHES batches of the held-out slice, in an epoch-fixed order."""
        self.recalibration_loader.set_epoch(epoch)
        for _, (waves, _) in zip(range(RECALIBRATION_BATCHES), self.recalibration_loader):
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
        penalty = self.memory_penalty()
        if penalty is not None:
            loss = loss + penalty
        self.arch_opt.zero_grad(set_to_none=True)
        self.supernet.arch_backward(loss)
        distributed.average_gradients(self.supernet.arch_parameters())
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
        band_rng = np.random.default_rng([self.t.seed, epoch, 0xBA4D])
        arch_steps = not warm and self.s.strategy == "proxyless"
        warmup_steps = self.s.lr_warmup_epochs * self.steps if warm else 0
        arch_batches = endless(self.arch_loader, epoch)
        started = time.time()
        loss_sum, correct, seen = 0.0, 0, 0
        arch_losses = []
        batches = tqdm(train_batches(self.pipe, self.weight_loader, self.steps, augment_gen,
                                     self.memory_format, self.t.prefetch),
                       total=self.steps, leave=False, disable=not self.progress,
                       desc=f"{'warm-up' if warm else 'search'} epoch {epoch}")
        for step, (feats, labels) in enumerate(batches):
            lr = peak * lr_factor((epoch - phase_start) * self.steps + step, warmup_steps,
                                  phase_epochs * self.steps)
            for group in self.weight_opt.param_groups:
                group["lr"] = lr
            loss, hits = self.weight_step(feats, labels, f"epoch {epoch} step {step}", epoch,
                                          warm, path_gen, band_rng)
            loss_sum += loss * len(labels)
            correct += hits
            seen += len(labels)
            if arch_steps and (step + 1) % self.s.grad_update_arch_param_every == 0:
                arch_losses.append(self.arch_step(*next(arch_batches), path_gen)[0])
            batches.set_postfix(loss=f"{loss:.3f}")
        distributed.check_replicas(self.supernet, f"epoch {epoch}")
        loss_sum, correct, seen = distributed.sum_over_ranks([loss_sum, correct, seen])
        self.rank_rngs = distributed.rank_rng_states()
        if not distributed.is_main():
            return {}
        return self.end_epoch(epoch, warm, loss_sum / seen, correct / seen,
                              float(np.mean(arch_losses)) if arch_losses else float("nan"),
                              lr, time.time() - started)

    def path_accuracy(self, picks: list[int], loader: BatchLoader, epoch: int = 0) -> float:
        """The supernet's accuracy on one path, batch norm re-estimated for it first."""
        self.supernet.choose(picks)
        self.supernet.recalibrate_bn(self.held_out_features(epoch))
        result = evaluate(self.supernet, self.pipe.frontend, loader, self.device,
                          len(self.classes))
        self.supernet.train()
        return result.accuracy

    def evolve(self) -> list[int]:
        """strategy evolution: the best net of the band by supernet validation accuracy;
        every scored net goes to evolution.csv."""
        rows: list[dict[str, Any]] = []

        def scored(s: Scored) -> None:
            rows.append({"generation": s.generation, "macs": s.macs, "fitness": s.fitness,
                         "picks": " ".join(map(str, s.picks))})
            write_csv(self.run.path / "evolution.csv", list(rows[0]), rows)

        ranked = evolve(lambda picks: self.path_accuracy(picks, self.valid_loader), self.sampler,
                        np.random.default_rng([self.t.seed, 0xE70]), self.s.evo_population,
                        self.s.evo_generations, self.s.evo_parents, self.s.evo_mutation_rate,
                        on_scored=scored)
        return ranked[0].picks

    def end_epoch(self, epoch: int, warm: bool, train_loss: float, train_acc: float,
                  arch_loss_value: float, lr: float, seconds: float) -> dict[str, Any]:
        probs = [p.detach().cpu() for p in self.supernet.probs()]
        picks = self.picks()
        valid_acc = self.path_accuracy(picks, self.valid_loader, epoch)
        entropies = self.supernet.entropies()
        expected = self.table.expected(probs)
        row: dict[str, Any] = {
            "epoch": epoch, "phase": "warmup" if warm else "search", "train_loss": train_loss,
            "train_acc": train_acc, "arch_loss": arch_loss_value, "expected_macs": float(expected),
            "derived_macs": self.table.of(picks), "entropy": float(np.mean(entropies)),
            "valid_acc": valid_acc, "lr": lr,
            "multiplier": self.budget.value if self.budget else "", "seconds": round(seconds, 2)}
        for name, position, p, h in zip(position_names(self.space), self.space.searchable, probs,
                                        entropies):
            row[f"{name}:entropy"] = h
            row.update({f"{name}:{label}": float(v) for label, v in zip(position.labels, p)})
        self.history.append(row)
        write_csv(self.run.history_path, self.columns, self.history)
        save_genotype(self.run.genotype_path,
                      self.space.genotype(picks, len(self.classes), self.classes))
        log_tensorboard(self.writer, self.space, row, probs, entropies, self.s.flops_ref_value,
                        self.budget.value if self.budget else None)
        self.run.save_checkpoint("last", self.state(epoch))
        return row

    def finish(self) -> dict[str, Any]:
        from nas_kws.profiling import profile_model

        started = time.time()
        picks = self.evolve() if self.s.strategy == "evolution" else self.picks()
        seconds = sum(r["seconds"] for r in self.history) + time.time() - started
        genotype = self.space.genotype(picks, len(self.classes), self.classes)
        path = save_genotype(self.run.genotype_path, genotype)
        derived = profile_model(build_from_genotype(genotype))
        ref = self.s.flops_ref_value
        return {
            "search_space": self.space.name, "genotype": str(path),
            "blocks": [describe_block(b) for b in genotype["blocks"]],
            "derived_macs": derived.macs, "derived_params": derived.params,
            "expected_macs": self.history[-1]["expected_macs"], "flops_ref_value": ref,
            "macs_vs_ref": derived.macs / ref,
            "within_budget": abs(derived.macs - ref) <= self.s.budget_tolerance * ref,
            "supernet_valid_acc": self.path_accuracy(picks, self.valid_loader),
            "strategy": self.s.strategy, "search_seconds": seconds,
            "space_macs_range": [self.table.smallest(), self.table.largest()],
            "history": [{k: r[k] for k in SUMMARY_COLUMNS} for r in self.history]}


def open_search(run_dir: str | Path, progress: bool = False) -> _Search:
    """A search run's state at its last checkpoint: the trained supernet, its data and costs."""
    from nas_kws.nas.search_config import load_search_config

    job = _Search(load_search_config(RunDir(run_dir).config_path), run_dir, None, progress)
    job.restore()
    return job


def search(cfg: SearchConfig, run_dir: str | Path, resume: bool = False, store=None,
           progress: bool = True, stop_after_epoch: int | None = None,
           warmup_from: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume) a search in `run_dir`; returns (and writes) metrics.json.
    `stop_after_epoch` ends the job after that epoch with its checkpoint written;
    `warmup_from` starts a fresh run after the warm-up of that run (check_warmup)."""
    from torch.utils.tensorboard import SummaryWriter

    main = distributed.is_main()
    progress = progress and main
    job = _Search(cfg, run_dir, store, progress)
    if resume:
        job.restore()
    else:
        if warmup_from is not None:
            job.restore(RunDir(warmup_from))
        if main:
            job.run.write_setup(to_dict(cfg), job.space.features, job.classes)
    total = job.s.warmup_epochs + job.s.n_epochs
    job.writer = SummaryWriter(str(job.run.tb_dir)) if main else None
    try:
        for epoch in tqdm(range(job.start_epoch, total), desc="search", disable=not progress,
                          initial=job.start_epoch, total=total):
            job.run_epoch(epoch)
            if stops_after(epoch, stop_after_epoch, total):
                return {"stopped_after_epoch": epoch}
        if not main:
            return {}
        metrics = job.finish()
    finally:
        if job.writer:
            job.writer.close()
    job.run.write_metrics(metrics)
    return metrics
