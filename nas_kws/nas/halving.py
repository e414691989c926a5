"""`--strategy halving`: successive halving over nets drawn uniformly from the MAC band (Li &
Talwalkar 2019's random search with early stopping; Hyperband's inner loop).

Rung 0 trains `halving_nets` nets for `halving_epochs[0]` epochs each; the best 1/`halving_eta`
by validation accuracy go on to the next rung, trained afresh for `halving_epochs[1]` epochs (a
short schedule that anneals the learning rate ranks nets better than the middle of a long one),
and so on; the best net of the last rung is the result. Every training is an ordinary run
directory under `rung<r>/net<i>`, so an interrupted search resumes where it stopped, and the
selection uses validation accuracy only. Cost: sum over rungs of nets x epochs.

`halving_workers: N` trains N nets of a rung at once, each in its own process with its share of
the threads: a small net uses one core far better than two, so on 2 cores two 1-thread trainings
finish a rung sooner than one 2-thread training after another. Each training is seeded alone, so
the result is the same with any number of workers (given the same threads per training).

Used where weight sharing does not learn: on the 2,304 training clips of the default synthetic
set, the supernet stays near chance for 30 epochs while each of its paths trained alone learns.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import signal
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas_kws.config import ExperimentConfig, to_dict
from nas_kws.data.loader import open_dataset
from nas_kws.device import seed_everything
from nas_kws.fileio import write_csv
from nas_kws.models import create_model
from nas_kws.models.genotype import describe_block, save_genotype
from nas_kws.nas.random_search import open_band
from nas_kws.nas.search_config import SearchConfig
from nas_kws.profiling import profile_model
from nas_kws.runs import RunDir
from nas_kws.train import fit


def rung_sizes(n: int, rungs: int, eta: int) -> list[int]:
    """Nets trained at each rung: n, ceil(n / eta), ..."""
    sizes = [n]
    for _ in range(rungs - 1):
        sizes.append(max(1, math.ceil(sizes[-1] / eta)))
    return sizes


def train_candidate(cfg: SearchConfig, genotype_path: Path, run: RunDir, epochs: int, store,
                    n_classes: int) -> dict[str, Any]:
    """One rung's training of one net (read back when finished, resumed when interrupted)."""
    if run.finished:
        return run.read_metrics()
    train = replace(cfg.train, epochs=epochs, warmup_epochs=min(cfg.train.warmup_epochs,
                                                                epochs - 1), seeds=1)
    experiment = ExperimentConfig(model=str(genotype_path), data=cfg.data, augment=cfg.augment,
                                  train=train)
    seed_everything(cfg.train.seed)   # the net's init, whatever ran before in this process
    model = create_model(genotype_path, num_classes=n_classes)
    return fit(model, experiment, run.path, resume=run.can_resume, store=store,
               progress=False)


_worker_store: list = []   # a worker process's dataset, opened once for all its trainings


def _start_worker(threads: int) -> None:
    """A worker dies with the search (no orphan left training in a run directory that a
    resumed search would train again) and uses its share of the threads."""
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG (Linux)
    torch.set_num_threads(threads)


def _train_in_worker(cfg: SearchConfig, genotype_path: Path, run_path: Path, epochs: int,
                     n_classes: int) -> dict[str, Any]:
    if not _worker_store:
        _worker_store.append(open_dataset(cfg.data, progress=False))
    return train_candidate(cfg, genotype_path, RunDir(run_path), epochs, _worker_store[0],
                           n_classes)


def successive_halving(cfg: SearchConfig, run_dir: str | Path, store=None,
                       progress: bool = True) -> dict[str, Any]:
    with _pool(cfg.search.halving_workers) as pool:
        return _successive_halving(cfg, run_dir, store, progress, pool)


def _pool(workers: int) -> ProcessPoolExecutor | contextlib.nullcontext:
    if workers <= 1:
        return contextlib.nullcontext()
    threads = max(1, torch.get_num_threads() // workers)
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(threads,))


def _successive_halving(cfg: SearchConfig, run_dir: str | Path, store, progress: bool,
                        pool: ProcessPoolExecutor | None) -> dict[str, Any]:
    s = cfg.search
    if store is None:   # also decodes the set once, before any worker opens it
        store = open_dataset(cfg.data, progress=progress)
    space, classes, sampler = open_band(cfg, store)
    run = RunDir(run_dir)
    if not run.config_path.is_file():
        run.write_setup(to_dict(cfg), space.features, classes)
    draw = sampler.draw_per_variant if s.halving_per_variant else sampler.draw_distinct
    nets = draw(s.halving_nets, np.random.default_rng([cfg.train.seed, 0x5A1F]))
    paths = []
    for i, picks in enumerate(nets):
        path = run.path / "candidates" / f"net{i:02d}.yaml"
        if not path.is_file():
            save_genotype(path, space.genotype(picks, len(classes), classes))
        paths.append(path)
    rows: list[dict[str, Any]] = []
    alive = list(range(len(nets)))
    sizes = rung_sizes(len(nets), len(s.halving_epochs), s.halving_eta)
    for rung, (epochs, size) in enumerate(zip(s.halving_epochs, sizes)):
        alive = alive[:size]
        scores = {}
        runs = {i: run.path / f"rung{rung}" / f"net{i:02d}" for i in alive}
        if pool is not None:
            jobs = {i: pool.submit(_train_in_worker, cfg, paths[i], runs[i], epochs,
                                   len(classes)) for i in alive}
        for i in alive:   # rows in a fixed order, whichever training ends first
            metrics = jobs[i].result() if pool is not None else train_candidate(
                cfg, paths[i], RunDir(runs[i]), epochs, store, len(classes))
            scores[i] = metrics["best_valid_acc"]
            rows.append({"rung": rung, "epochs": epochs, "net": f"net{i:02d}",
                         "macs": sampler.macs(nets[i]), "valid_acc": scores[i],
                         "seconds": round(metrics.get("train_seconds", 0.0), 1)})
            write_csv(run.path / "halving.csv", list(rows[0]), rows)
            if progress:
                print(f"rung {rung} ({epochs} epochs) net{i:02d}: valid {scores[i]:.4f}",
                      flush=True)
        alive = sorted(alive, key=lambda i: -scores[i])
    best = alive[0]
    genotype = space.genotype(nets[best], len(classes), classes)
    save_genotype(run.genotype_path, genotype)
    prof = profile_model(create_model(run.genotype_path))
    ref = s.flops_ref_value
    metrics = {
        "strategy": "halving", "search_space": space.name, "variant": genotype["name"],
        "genotype": str(run.genotype_path),
        "blocks": [describe_block(b) for b in genotype["blocks"]],
        "derived_macs": prof.macs, "derived_params": prof.params, "flops_ref_value": ref,
        "macs_vs_ref": prof.macs / ref,
        "within_budget": abs(prof.macs - ref) <= s.budget_tolerance * ref,
        "supernet_valid_acc": None, "best_valid_acc": scores[best], "picked": f"net{best:02d}",
        "search_seconds": sum(r["seconds"] for r in rows),
        "trained_epochs": sum(e * n for e, n in zip(s.halving_epochs, sizes)),
        "space_macs_range": sampler.macs_range(), "rungs": rows}
    run.write_metrics(metrics)
    return metrics
