"""`nas-kws train` and `nas-kws eval`."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from nas_kws import distributed
from nas_kws.cliflags import add_nproc_flag, add_quiet_flag, add_set_flag, overrides_from_args
from nas_kws.config import (
    ExperimentConfig,
    check_at_least,
    default_config_for,
    load_config,
    to_dict,
)
from nas_kws.fileio import write_yaml
from nas_kws.runs import RunDir

EXPERIMENT_FLAGS = {  # flag -> config key; `--set key=value` reaches every other key
    "epochs": "train.epochs", "batch_size": "train.batch_size", "lr": "train.lr",
    "seed": "train.seed", "seeds": "train.seeds", "device": "train.device",
    "dataset": "data.dataset", "data_root": "data.root", "gsc_version": "data.version",
    "task": "data.task", "synth_size": "data.synth_size", "n_mfcc": "features.n_mfcc",
}


def add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """--config and the flags of EXPERIMENT_FLAGS."""
    p.add_argument("--config", help="experiment YAML (e.g. experiments/bcresnet8.yaml)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--seeds", type=int, help="train N seeds, report mean +- std")
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--dataset", help="synth (default), gsc or folders")
    p.add_argument("--data_root")
    p.add_argument("--gsc_version", type=int)
    p.add_argument("--task", help="12class or 35class")
    p.add_argument("--synth_size")
    p.add_argument("--n_mfcc", type=int)
    add_set_flag(p)


def resume_config(args: argparse.Namespace) -> ExperimentConfig:
    """The config a resumed run continues with: its own config.yaml, with `--epochs` applied
    (and written back) to an unfinished run. Any other flag would silently not apply (the
    weights, optimizer and data are the run's), so it is refused by name."""
    given = [f"--{dest}" for dest in ("model", "genotype", "run_dir", "config", *EXPERIMENT_FLAGS)
             if dest != "epochs" and getattr(args, dest) is not None]
    given += [flag for flag, on in (("--set", args.set), ("--overwrite", args.overwrite)) if on]
    run = RunDir(args.resume)
    if given:
        raise ValueError(f"--resume {run.path} continues with the run's own config.yaml; "
                         f"refusing {', '.join(given)} (only --epochs may change)")
    cfg = run.experiment()
    if args.epochs is None:
        return cfg
    if run.finished:
        raise ValueError(f"--epochs {args.epochs}: {run.path} has finished (it has "
                         f"{run.metrics_path.name}); --resume continues an interrupted run")
    check_at_least(args.epochs, 1, "--epochs")
    cfg = replace(cfg, train=replace(cfg.train, epochs=args.epochs))
    if distributed.is_main():
        write_yaml(run.config_path, to_dict(cfg))
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from nas_kws.train import train_experiment

    if args.resume:
        metrics = train_experiment(resume_config(args), args.resume, resume=True,
                                   progress=not args.quiet)
        if distributed.is_main():
            print_metrics(metrics, args.resume)
        return 0
    if bool(args.model) == bool(args.genotype):
        raise ValueError("train: give exactly one of --model NAME or --genotype FILE "
                         "(or --resume RUN_DIR)")
    model = args.model or args.genotype
    config = args.config or (default_config_for(args.model) if args.model else None)
    cfg = load_config(ExperimentConfig, config,
                      {**overrides_from_args(args, EXPERIMENT_FLAGS), "model": model})
    stem = Path(model).parent.name if args.genotype else model
    run_dir = args.run_dir or distributed.broadcast_object(
        f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}")
    metrics = train_experiment(cfg, run_dir, progress=not args.quiet, overwrite=args.overwrite)
    if distributed.is_main():
        print_metrics(metrics, run_dir)
    return 0


def print_metrics(metrics: dict, run_dir: str | Path) -> None:
    keys = sorted(k for k in metrics if k.endswith(("_acc", "_acc_mean", "_acc_std")))
    for key in keys:
        print(f"{key:28s} {metrics[key]:.4f}")
    print(f"{'params':28s} {metrics['params']:,}\n{'macs':28s} {metrics['macs']:,}")
    print(f"run directory: {run_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    from nas_kws.data.loader import BatchLoader
    from nas_kws.device import pick_device
    from nas_kws.evaluation import evaluate, format_confusion, save_confusion_png
    from nas_kws.features import Frontend
    from nas_kws.rebuild import load_model, open_run_data

    run = RunDir(args.run_dir)
    model, features, classes = load_model(run.path, args.which)
    store = open_run_data(run.path, classes, root=args.data_root, progress=True)
    device = pick_device(args.device)
    arrays = store.split(args.split)
    loader = BatchLoader(arrays.audio, arrays.labels, 500, split=args.split)
    result = evaluate(model.to(device), Frontend(features).to(device), loader, device,
                      len(classes))
    print(f"{args.split} accuracy ({args.which} checkpoint): {result.accuracy:.4f} "
          f"on {len(arrays.labels)} clips")
    for name, acc in zip(classes, result.per_class):
        print(f"  {name:12s} {acc:.4f}")
    print(format_confusion(result.confusion, classes))
    png = save_confusion_png(run.confusion_path(args.split, args.which), result.confusion,
                             classes, f"{args.split}, {args.which} checkpoint")
    print(f"confusion matrix: {png}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a registered model or a genotype")
    p.add_argument("--model", help="registered model name (see `nas-kws profile --list`)")
    p.add_argument("--genotype", help="genotype.yaml of a derived net")
    p.add_argument("--run_dir", help="where to write the run (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --run_dir (removes what it wrote)")
    add_quiet_flag(p)
    add_nproc_flag(p)
    add_experiment_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion of a run")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", help="test (default), valid, train, official_test")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--data_root", help="evaluate on another copy/location of the data")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)
