"""`nas-kws sweep SWEEP.yaml`: an Optuna study of lab pipelines (nas_kws/sweep/), on one machine
or many.

    nas-kws sweep experiments/sweep_budget.yaml                   # journal file, one worker
    nas-kws sweep experiments/sweep_budget.yaml --workers 2       # two local worker processes
    nas-kws sweep X.yaml --storage postgresql://u@db/kws --study kws1 --workers 4   # each machine
    nas-kws sweep experiments/sweep_budget.yaml --report --with runs/bcresnet1 runs/bcresnet2
"""
from __future__ import annotations

import argparse
import subprocess
import sys

import optuna
from optuna.trial import TrialState

from nas_kws.errors import NasKwsError
from nas_kws.fileio import write_text
from nas_kws.sweep.config import SweepConfig, load_sweep
from nas_kws.sweep.results import FILES, write_report
from nas_kws.sweep.storage import journal_path, open_storage, redact
from nas_kws.sweep.study import load_existing_study, open_study, worker_seed
from nas_kws.sweep.worker import run_worker, tally


def start_workers(args: argparse.Namespace, cfg: SweepConfig, name: str) -> None:
    """`--workers N`: N worker processes of this same command on the same study."""
    argv = [sys.executable, "-m", "nas_kws.cli", *(["--debug"] if args.debug else []), "sweep",
            str(cfg.path), "--out", str(cfg.out), "--study", name,
            "--n_trials", str(cfg.study.n_trials),
            *(["--storage", args.storage] if args.storage else [])]
    procs = [subprocess.Popen([*argv, "--worker_index", str(k)]) for k in range(args.workers)]
    print(f"started {len(procs)} workers (pids {', '.join(str(p.pid) for p in procs)})",
          flush=True)
    try:
        for k, proc in enumerate(procs):
            if proc.wait():
                print(f"worker w{k} (pid {proc.pid}) ended with code {proc.returncode}",
                      flush=True)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()


def print_summary(cfg: SweepConfig, study: optuna.Study, where: str, shared: bool) -> None:
    counts = tally(study)
    print(f"\nsweep {cfg.name}: {counts['finished']} of {cfg.study.n_trials} trials finished "
          f"(study {study.study_name!r} in {where})")
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if complete:
        label = "Pareto front" if len(cfg.study.objectives) > 1 else "best trial"
        print(f"{label}:")
        for t in sorted(study.best_trials, key=lambda t: t.user_attrs["macs"]):
            values = ", ".join(f"{o} {v:,.4g}" for o, v in zip(cfg.study.objectives, t.values))
            print(f"  trial {t.number:3d}  {values}  {cfg.out / t.user_attrs['net_run']}")
    print(f"report: nas-kws sweep {cfg.path} --report"
          + (f" --storage URL --study {study.study_name}" if shared else ""))
    if counts["finished"] < cfg.study.n_trials:
        raise NasKwsError(f"{counts['finished']} of {cfg.study.n_trials} trials finished; run "
                          "the same command again to continue the study")


def cmd_sweep(args: argparse.Namespace) -> int:
    if args.workers < 1:
        raise ValueError(f"--workers: expected >= 1, got {args.workers}")
    cfg = load_sweep(args.sweep, args.out, args.n_trials)
    name = args.study or cfg.name
    storage = open_storage(args.storage, cfg.out, cfg.study)
    where = redact(args.storage) if args.storage else str(journal_path(cfg.out))
    if args.report:
        out = write_report(cfg, load_existing_study(storage, name), where, args.with_runs)
        print((out / "report.md").read_text())
        print(f"written: {out}/{{{', '.join(FILES)}}}")
        return 0
    worker = args.worker_index or 0
    study = open_study(cfg, storage, name, worker_seed(cfg, worker, args.storage is not None))
    if args.worker_index is not None:
        run_worker(cfg, study, f"w{worker}")
        return 0
    write_text(cfg.out / "sweep.yaml", cfg.path.read_text())   # what this folder holds
    print(f"sweep {cfg.name}: study {name!r} in {where}, {cfg.study.n_trials} trials, "
          f"objectives {', '.join(cfg.study.objectives)}, sampler {cfg.study.sampler}; trial "
          f"folders in {cfg.out / 'trials'}", flush=True)
    if args.workers == 1:
        run_worker(cfg, study, "w0")
    else:
        start_workers(args, cfg, name)
    print_summary(cfg, study, where, args.storage is not None)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="an Optuna study whose trials are lab pipelines "
                                     "(search -> train -> QAT), over processes and machines")
    p.add_argument("sweep", metavar="SWEEP.yaml", help="the sweep (e.g. "
                                                       "experiments/sweep_budget.yaml)")
    p.add_argument("--out", help="sweep folder (default: the YAML's `out`, else "
                                 "runs/sweeps/<yaml name>)")
    p.add_argument("--storage", help="SQLAlchemy URL of a shared database, e.g. "
                                     "postgresql://user@host:5432/db (default: a journal file "
                                     "in the sweep folder)")
    p.add_argument("--study", help="study name to create or join (default: the YAML's name)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes on this machine (default 1)")
    p.add_argument("--n_trials", type=int, help="trials to finish (default: study.n_trials)")
    p.add_argument("--report", action="store_true",
                   help="write the report (trials CSV, Pareto front, importances, plots)")
    p.add_argument("--with", dest="with_runs", nargs="+", default=[], metavar="RUN",
                   help="--report: finished runs to draw and compare against, e.g. BC-ResNets "
                        "trained on the same data")
    p.add_argument("--worker_index", type=int, help=argparse.SUPPRESS)  # set by --workers
    p.set_defaults(func=cmd_sweep)
