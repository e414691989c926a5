"""One trial of a sweep: sample its values, then run its lab pipeline, each step the ordinary
`nas-kws` command in a child process with its run directory under the trial's folder:

    trials/trial<NNNN>/search/   nas-kws search --path ... (when the sweep searches)
    trials/trial<NNNN>/train/    nas-kws train --genotype search/genotype.yaml | --model NAME
    trials/trial<NNNN>/qat/      nas-kws quantize qat train --spec quant_spec.yaml (optional)
    trials/trial<NNNN>/<step>.log  each step's output

A step already finished is skipped and an interrupted one resumes from its checkpoint, so a
trial re-queued after its worker died (it keeps the folder of the trial it retries) continues
where that worker stopped. With a pruner, each epoch's validation accuracy of the training step
(the QAT step when the sweep quantizes a finished run), read from its `last` checkpoint as it is
written, goes to `trial.report`, and a pruned trial's training is stopped. Step processes die
with their worker (Linux parent-death signal).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution

from nas_kws.errors import EXPECTED_ERRORS, NasKwsError
from nas_kws.fileio import write_yaml
from nas_kws.runs import CorruptCheckpointError, RunDir
from nas_kws.sweep.config import Param, SweepConfig, quant_spec_with
from nas_kws.sweep.measures import trial_measures

PARENT_ENV = "NAS_KWS_SWEEP_WORKER_PID"   # read by nas_kws.sweep.launch
DIR_ATTR, ERROR_ATTR = "trial_dir", "error"
WATCH_SECONDS = 1.0


class TrialFailed(NasKwsError):
    """A step of the trial failed (bad sampled values, a diverging loss, ...): the trial is
    marked failed and the sweep goes on."""


@dataclass
class Step:
    name: str
    run: RunDir
    fresh: list[str]                  # the command's arguments (after `nas-kws`)
    resume: list[str] | None = None   # how an interrupted run continues; None: start again


def yaml_scalar(value: Any) -> str:
    """`value` as `--set KEY=VALUE` text that the config reads back as the same value."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=1 << 30).strip().removesuffix(
        "...").strip()


def set_flags(values: dict[str, Any]) -> list[str]:
    return ["--set", *(f"{k}={yaml_scalar(v)}" for k, v in values.items())] if values else []


def suggest(trial: optuna.Trial, param: Param) -> Any:
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return trial.suggest_categorical(param.name, d.choices)
    if isinstance(d, FloatDistribution):
        return trial.suggest_float(param.name, d.low, d.high, log=d.log, step=d.step)
    return trial.suggest_int(param.name, d.low, d.high, log=d.log, step=d.step)


def build_steps(cfg: SweepConfig, folder: Path,
                values: dict[str, dict[str, Any]]) -> tuple[list[Step], RunDir]:
    """The trial's steps and the run that trains its float net; `values` holds the sampled
    values by step, then config key."""
    def config_flag(step) -> list[str]:
        return ["--config", str(cfg.resolve(step.config))] if step.config else []

    steps = []
    train_run = RunDir(cfg.resolve(cfg.train.run) if cfg.train.run else folder / "train")
    if cfg.train.run is not None:
        if not train_run.finished:
            raise FileNotFoundError(f"train.run {train_run.path}: not a finished run (no "
                                    f"{train_run.metrics_path.name})")
    elif cfg.search is not None:
        search = RunDir(folder / "search")
        steps.append(Step("search", search, [
            "search", "--path", str(search.path), "--quiet", *config_flag(cfg.search),
            *set_flags({**cfg.search.set, **values["search"]})],
            ["search", "--path", str(search.path), "--resume", "--quiet"]))
        model = ["--genotype", str(search.genotype_path)]
    elif cfg.train.model.endswith((".yaml", ".yml")):
        model = ["--genotype", str(cfg.resolve(cfg.train.model))]
    else:
        model = ["--model", cfg.train.model]
    if cfg.train.run is None:
        steps.append(Step("train", train_run, [
            "train", *model, "--run_dir", str(train_run.path), "--quiet",
            *config_flag(cfg.train), *set_flags({**cfg.train.set, **values["train"]})],
            ["train", "--resume", str(train_run.path), "--quiet"]))
    if cfg.quantize is not None:
        q = cfg.quantize
        spec = q.spec
        for key, value in values["quantize"].items():
            spec = quant_spec_with(spec, key, value)
        spec_path = write_yaml(folder / "quant_spec.yaml", spec)
        qat = RunDir(folder / "qat")
        steps.append(Step("quantize", qat, [
            "quantize", "qat", str(train_run.path), "--spec", str(spec_path), "--epochs",
            str(q.epochs), *(["--lr", yaml_scalar(q.lr)] if q.lr is not None else []),
            "--out", str(qat.path), "--quiet", *set_flags(q.set)]))
    return steps, train_run


EpochWatch = Callable[[list[dict[str, Any]], bool], bool]


def run_step(step: Step, log: Path, watch: EpochWatch | None = None) -> None:
    """Run `step` unless its run finished: resume it when it can, else start it afresh. While
    it runs, `watch(history, running)` sees the epochs its checkpoint holds; True stops it."""
    if step.run.finished:
        return
    if step.resume is not None and step.run.keep_if_resumable():
        argv = step.resume
    else:
        if step.run.path.exists():
            shutil.rmtree(step.run.path)
        argv = step.fresh
    command = f"nas-kws {shlex.join(argv)}"
    print(f"  $ {command}", flush=True)
    env = {**os.environ, PARENT_ENV: str(os.getpid())}
    with open(log, "a") as out:
        out.write(f"$ {command}\n")
        out.flush()
        proc = subprocess.Popen([sys.executable, "-m", "nas_kws.sweep.launch", *argv],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            _wait(proc, step.run, watch)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode:
        lines = [line for line in log.read_text().splitlines() if line.strip()]
        raise TrialFailed(f"`{command}` exited with code {proc.returncode}: "
                          f"{lines[-1] if lines else 'no output'} (log: {log})")


def _history(run: RunDir) -> list[dict[str, Any]]:
    try:
        return run.load_checkpoint("last")["history"]
    except (FileNotFoundError, CorruptCheckpointError):
        return []   # not written yet, or being replaced right now


def _wait(proc: subprocess.Popen, run: RunDir, watch: EpochWatch | None) -> None:
    if watch is None:
        proc.wait()
        return
    seen = None
    while proc.poll() is None:
        time.sleep(WATCH_SECONDS)
        path = run.checkpoint_path("last")
        stamp = path.stat().st_mtime_ns if path.is_file() else None
        if stamp != seen:
            seen = stamp
            if watch(_history(run), True):
                proc.terminate()
                proc.wait()
                raise optuna.TrialPruned()
    if proc.returncode == 0:
        watch(_history(run), False)


class TrialPipeline:
    """The objective of a sweep's study: one call runs one trial and returns its objectives."""

    def __init__(self, cfg: SweepConfig, worker: str):
        self.cfg = cfg
        self.worker = worker
        self.pruning = cfg.study.pruner != "none"

    def __call__(self, trial: optuna.Trial) -> float | list[float]:
        cfg = self.cfg
        values: dict[str, dict[str, Any]] = {"search": {}, "train": {}, "quantize": {}}
        for param in cfg.params:
            values[param.step][param.key] = suggest(trial, param)
        # a retried trial keeps the folder (and the finished steps) of the trial it repeats
        folder_name = trial.user_attrs.get(DIR_ATTR) or f"trials/trial{trial.number:04d}"
        trial.set_user_attr(DIR_ATTR, folder_name)
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        folder = cfg.out / folder_name
        folder.mkdir(parents=True, exist_ok=True)
        shown = ", ".join(f"{p.name}={values[p.step][p.key]!r}" for p in cfg.params)
        print(f"[{self.worker}] trial {trial.number} ({folder}): {shown}", flush=True)
        started = time.time()
        try:
            steps, trained = build_steps(cfg, folder, values)
            trains = "train" if cfg.train.run is None else "quantize"   # what the pruner sees
            for step in steps:
                watch = self._watch(trial) if self.pruning and step.name == trains else None
                run_step(step, folder / f"{step.name}.log", watch)
            measures = trial_measures(trained, steps[-1].run)
        except optuna.TrialPruned:
            print(f"[{self.worker}] trial {trial.number} pruned", flush=True)
            raise
        except EXPECTED_ERRORS as err:
            trial.set_user_attr(ERROR_ATTR, str(err))
            print(f"[{self.worker}] trial {trial.number} failed: {err}", flush=True)
            raise TrialFailed(str(err)) from err
        measures["seconds"] = round(time.time() - started, 1)
        measures["net_run"] = os.path.relpath(steps[-1].run.path, cfg.out)
        measures["float_run"] = os.path.relpath(trained.path, cfg.out)
        for key, value in measures.items():
            trial.set_user_attr(key, value)
        objectives = [measures[o] for o in cfg.study.objectives]
        print(f"[{self.worker}] trial {trial.number} done in {measures['seconds']:.0f} s: "
              + ", ".join(f"{o} {measures[o]:,.4g}" for o in cfg.study.objectives), flush=True)
        return objectives[0] if len(objectives) == 1 else objectives

    @staticmethod
    def _watch(trial: optuna.Trial) -> EpochWatch:
        reported: set[int] = set()

        def watch(history: list[dict[str, Any]], running: bool) -> bool:
            for row in history:
                if row["epoch"] not in reported:
                    reported.add(row["epoch"])
                    trial.report(row["valid_acc"], row["epoch"])
            return running and bool(history) and bool(trial.should_prune())
        return watch
