"""A sweep worker: takes trials from the study until it holds `n_trials` finished ones.

Any number of workers, on one machine or many, run this same loop on one study. A finished
trial is complete, pruned, or failed by its own error (a step that failed); a trial failed as
heartbeat-stale (its worker died) does not count: Optuna re-queues it (WAITING) and the next
free worker runs it first. A worker whose remaining trials are all running elsewhere waits,
checking for stale ones, so a trial lost with its worker is still run, and none is run twice.
"""
from __future__ import annotations

import time
from collections import Counter

import optuna
from optuna.trial import FrozenTrial, TrialState

from nas_kws.sweep.config import SweepConfig
from nas_kws.sweep.pipeline import ERROR_ATTR, TrialFailed, TrialPipeline
from nas_kws.sweep.storage import fail_stale_trials


def is_finished(trial: FrozenTrial) -> bool:
    return (trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
            or (trial.state == TrialState.FAIL and ERROR_ATTR in trial.user_attrs))


def tally(study: optuna.Study) -> Counter:
    """Trials by kind: finished, running, waiting."""
    counts: Counter = Counter()
    for trial in study.get_trials(deepcopy=False):
        if is_finished(trial):
            counts["finished"] += 1
        elif trial.state in (TrialState.RUNNING, TrialState.WAITING):
            counts[trial.state.name.lower()] += 1
    return counts


def run_worker(cfg: SweepConfig, study: optuna.Study, worker: str) -> None:
    objective = TrialPipeline(cfg, worker)
    target = cfg.study.n_trials
    idle = min(5.0, cfg.study.heartbeat_interval)
    announced = False
    while True:
        fail_stale_trials(study)
        counts = tally(study)
        if counts["finished"] >= target:
            return
        if not counts["waiting"] and counts["finished"] + counts["running"] >= target:
            if not announced:
                print(f"[{worker}] waiting for {counts['running']} running trial(s)", flush=True)
                announced = True
            time.sleep(idle)
            continue
        announced = False
        study.optimize(objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
