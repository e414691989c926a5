"""The Optuna study of a sweep: its sampler and pruner, and creating or joining it by name.

A study remembers the sweep definition that created it (a study user attribute), so a worker
whose YAML samples something else, or optimizes other objectives, is refused rather than mixing
its trials in.
"""
from __future__ import annotations

import json
import os
import socket
import zlib

import numpy as np
import optuna
from optuna.storages import BaseStorage

from nas_kws.errors import NasKwsError
from nas_kws.sweep.config import SweepConfig, grid_space

DEFINITION_ATTR = "nas_kws_sweep"


def worker_seed(cfg: SweepConfig, worker: int, shared_storage: bool) -> int:
    """Worker k of a journal sweep samples with seed + k, so a one-worker sweep repeats exactly;
    on a shared database the host and process are mixed in too, since machines joining a study
    each number their workers from 0."""
    if not shared_storage:
        return cfg.study.seed + worker
    entropy = [cfg.study.seed, worker, zlib.crc32(socket.gethostname().encode()), os.getpid()]
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def make_sampler(cfg: SweepConfig, seed: int) -> optuna.samplers.BaseSampler:
    s = cfg.study
    if s.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=s.startup_trials)
    if s.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=s.population)
    if s.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.GridSampler(grid_space(cfg), seed=seed)


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    """Median or Hyperband over per-epoch validation accuracy of the training step."""
    s = cfg.study
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials,
                                           n_warmup_steps=s.prune_warmup_epochs)
    if s.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource="auto",
                                              reduction_factor=3)
    return optuna.pruners.NopPruner()


def _differences(mine: dict, theirs: dict) -> list[str]:
    keys = sorted(set(mine) | set(theirs))
    out = []
    for key in keys:
        a, b = mine.get(key), theirs.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in _differences(a, b)]
        elif a != b:
            out.append(key)
    return out


def open_study(cfg: SweepConfig, storage: BaseStorage, name: str,
               sampler_seed: int) -> optuna.Study:
    """Create the study `name`, or join it when it exists with the same definition."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep prints its own lines
    study = optuna.create_study(storage=storage, study_name=name, directions=cfg.directions,
                                sampler=make_sampler(cfg, sampler_seed),
                                pruner=make_pruner(cfg), load_if_exists=True)
    mine = json.loads(json.dumps(cfg.definition))
    theirs = study.user_attrs.get(DEFINITION_ATTR)
    if theirs is None:
        study.set_user_attr(DEFINITION_ATTR, mine)
    elif theirs != mine:
        raise NasKwsError(f"study {name!r} was created by another sweep definition "
                          f"(differs in {', '.join(_differences(mine, theirs))}); use the same "
                          f"YAML to join it, or another --study name")
    return study


def load_existing_study(storage: BaseStorage, name: str) -> optuna.Study:
    """A study that must exist (the report reads one)."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise NasKwsError(f"no study {name!r} in this storage (studies: {known or 'none'}); run "
                          "the sweep first, or name it with --study") from None
