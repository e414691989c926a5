"""`nas-kws train` and `nas-kws eval`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from nas_kws.config import ExperimentConfig, default_config_for, load_config, parse_set_flags


def add_experiment_flags(p: argparse.ArgumentParser) -> None:
    """Flags that map onto ExperimentConfig keys; `--set key=value` reaches every other key."""
    p.add_argument("--config", help="experiment YAML (e.g. experiments/bcresnet8.yaml)")
    p.add_argument("--epochs", type=int, dest="train.epochs")
    p.add_argument("--batch_size", type=int, dest="train.batch_size")
    p.add_argument("--lr", type=float, dest="train.lr")
    p.add_argument("--seed", type=int, dest="train.seed")
    p.add_argument("--seeds", type=int, dest="train.seeds", help="train N seeds, report mean +- std")
    p.add_argument("--device", dest="train.device", help="auto (CUDA when present), cpu, cuda")
    p.add_argument("--dataset", dest="data.dataset", help="synth (default), gsc or folders")
    p.add_argument("--data_root", dest="data.root")
    p.add_argument("--gsc_version", type=int, dest="data.version")
    p.add_argument("--task", dest="data.task", help="12class or 35class")
    p.add_argument("--synth_size", dest="data.synth_size")
    p.add_argument("--n_mfcc", type=int, dest="features.n_mfcc")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="any other config key, e.g. --set train.weight_decay=0 augment.shift_ms=50")


def experiment_from_args(args: argparse.Namespace, model: str | None = None) -> ExperimentConfig:
    overrides = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    overrides.update(parse_set_flags(args.set))
    if model is not None:
        overrides["model"] = model
    return load_config(ExperimentConfig, args.config, overrides)


def cmd_train(args: argparse.Namespace) -> int:
    from nas_kws.train import train_experiment

    if args.resume:
        from nas_kws.runs import RunDir

        cfg = load_config(ExperimentConfig, RunDir(args.resume).config_path)
        metrics = train_experiment(cfg, args.resume, resume=True, progress=not args.quiet)
        print_metrics(metrics, args.resume)
        return 0
    if bool(args.model) == bool(args.genotype):
        raise ValueError("train: give exactly one of --model NAME or --genotype FILE "
                         "(or --resume RUN_DIR)")
    model = args.model or args.genotype
    if args.config is None and args.model:
        args.config = default_config_for(args.model)
    cfg = experiment_from_args(args, model)
    stem = Path(model).parent.name if args.genotype else model
    run_dir = args.run_dir or f"runs/{stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    metrics = train_experiment(cfg, run_dir, progress=not args.quiet)
    print_metrics(metrics, run_dir)
    return 0


def print_metrics(metrics: dict, run_dir: str | Path) -> None:
    keys = sorted(k for k in metrics if k.endswith(("_acc", "_acc_mean", "_acc_std")))
    for key in keys:
        print(f"{key:28s} {metrics[key]:.4f}")
    print(f"{'params':28s} {metrics['params']:,}\n{'macs':28s} {metrics['macs']:,}")
    print(f"run directory: {run_dir}")


def cmd_eval(args: argparse.Namespace) -> int:
    from nas_kws.config import DataConfig, from_dict
    from nas_kws.data.loader import BatchLoader, open_dataset
    from nas_kws.device import pick_device
    from nas_kws.evaluation import evaluate, format_confusion, save_confusion_png
    from nas_kws.features import Frontend
    from nas_kws.runs import RunDir, load_model

    run = RunDir(args.run_dir)
    data_cfg = from_dict(DataConfig, run.read_config()["data"], f"{run.config_path}:data")
    if args.data_root:
        data_cfg.root = args.data_root
    model, features, classes = load_model(run.path, args.which)
    store = open_dataset(data_cfg)
    if list(store.classes) != classes:
        raise ValueError(f"{args.data_root or data_cfg.root}: classes {store.classes} differ "
                         f"from the run's {classes}")
    device = pick_device(args.device)
    arrays = store.split(args.split)
    result = evaluate(model.to(device), Frontend(features).to(device),
                      BatchLoader(arrays.audio, arrays.labels, 500), device, len(classes))
    print(f"{args.split} accuracy ({args.which} checkpoint): {result.accuracy:.4f} "
          f"on {len(arrays.labels)} clips")
    for name, acc in zip(classes, result.per_class):
        print(f"  {name:12s} {acc:.4f}")
    print(format_confusion(result.confusion, classes))
    png = save_confusion_png(run.path / f"confusion_{args.split}_{args.which}.png",
                             result.confusion, classes, f"{args.split}, {args.which} checkpoint")
    print(f"confusion matrix: {png}")
    return 0


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train a registered model or a genotype")
    p.add_argument("--model", help="registered model name (see `nas-kws profile --list`)")
    p.add_argument("--genotype", help="genotype.yaml of a derived net")
    p.add_argument("--run_dir", help="where to write the run (default runs/<model>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_experiment_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="accuracy, per-class accuracy and confusion of a run")
    p.add_argument("run_dir")
    p.add_argument("--split", default="test", help="test (default), valid, train, official_test")
    p.add_argument("--which", default="best", choices=["best", "last"])
    p.add_argument("--data_root", help="evaluate on another copy/location of the data")
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_eval)
