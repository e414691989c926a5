"""`nas-kws quantize ptq|qat` and `nas-kws compress svd`: nets derived from a trained run, each
written inside it (the layout is `nas_kws.runs`):
    RUN/quant/ptq.json                      accuracy per rounding scheme and bit width
    RUN/quant/{qat,calibrate}_<tag>/        a derived run (checkpoints, metrics.json)
    RUN/compress/svd_<ratio>/               a derived run, plus svd.json (before / after)
"""
from __future__ import annotations

import argparse
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws import distributed
from nas_kws.cliflags import add_nproc_flag, add_quiet_flag, add_set_flag, overrides_from_args
from nas_kws.config import TrainConfig, check_at_least
from nas_kws.device import seed_everything
from nas_kws.fileio import read_json, write_json
from nas_kws.runs import RunDir

FINETUNE_FLAGS = {"epochs": "train.epochs", "lr": "train.lr"}
# Folded weights take steps scaled by 1 / (BN scale)^2 under SGD; Adam is blind to that scale.
QAT_TRAIN = {"train.optimizer": "adam", "train.weight_decay": 0.0}
FUSE_MIN_STEPS = 60


def parse_bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--bits {text!r}: expected comma-separated integers, "
                         "e.g. 8,6,4") from None
    if not bits:
        raise ValueError("--bits: expected at least one bit width")
    return bits


def load_float(run_dir: str, what: str):
    """(model, features, classes) of a float run; a quantized one cannot be derived from."""
    from nas_kws.quant.derived import is_quantized
    from nas_kws.rebuild import load_model

    model, features, classes = load_model(run_dir)
    if is_quantized(model.spec):
        raise ValueError(f"{run_dir}: already a quantized run; {what} needs a float run")
    return model, features, classes


def finetune_config(run_dir: str | os.PathLike, args: argparse.Namespace,
                    defaults: dict[str, Any] | None = None,
                    flag_keys: dict[str, str] = FINETUNE_FLAGS):
    """The parent's experiment with a short, low-lr schedule for fine-tuning a derived net, whose
    starting weights compete for the best checkpoint; `defaults` sit between the parent's values
    and those of the command line's `flag_keys`."""
    from nas_kws.config import ExperimentConfig, apply_overrides, from_dict, to_dict

    run = RunDir(run_dir)
    overrides = {"train.select_start": True, "train.warmup_epochs": 0, "train.seeds": 1,
                 **(defaults or {}), **overrides_from_args(args, flag_keys)}
    return from_dict(ExperimentConfig, apply_overrides(to_dict(run.experiment()), overrides),
                     str(run.config_path))


def print_rows(rows: list[dict[str, Any]], keys: list[str]) -> None:
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k])
                         for k in keys))


def cmd_ptq(args: argparse.Namespace) -> int:
    from nas_kws.quant.fold import fold_batchnorm
    from nas_kws.quant.precomputed import accuracy, split_features
    from nas_kws.quant.rounding import RoundingScheme, round_weights
    from nas_kws.rebuild import open_run_data

    model, features, classes = load_float(args.run_dir, "post-training rounding")
    schemes = [RoundingScheme(b, per_channel=not args.per_tensor, symmetric=not args.asymmetric)
               for b in parse_bits(args.bits)]
    feats, labels = split_features(open_run_data(args.run_dir, classes), features, args.split)
    folded = fold_batchnorm(model)
    key = f"{args.split}_acc"
    rows = [{"scheme": "fp32", "bits": 32, key: accuracy(model, feats, labels)}]
    for scheme in schemes:
        rows.append({"scheme": scheme.name, "bits": scheme.bits,
                     key: accuracy(round_weights(folded, scheme), feats, labels)})
    path = RunDir(args.run_dir).ptq_path
    old = read_json(path)["rows"] if path.is_file() else []
    fresh = {(r["scheme"], r["bits"]) for r in rows}
    merged = [r for r in old if (r["scheme"], r["bits"]) not in fresh] + rows
    write_json(path, {"split": args.split, "clips": len(labels), "rows": merged})
    print_rows(rows, ["scheme", "bits", key])
    print(f"written: {path}")
    return 0


def _quant_spec(args: argparse.Namespace):
    from nas_kws.quant.qat import QuantSpec, load_quant_spec

    cli = {"weight_bits": args.weight_bits, "act_bits": args.act_bits,
           "per_channel": False if args.per_tensor else None,
           "first_last_bits": args.first_last_bits}
    if args.spec:
        return load_quant_spec(args.spec, cli)
    given = {k: v for k, v in cli.items() if v is not None}
    return QuantSpec.from_dict(given, where="command line")


def cmd_qat(args: argparse.Namespace) -> int:
    from nas_kws.quant.derived import save_derived_run
    from nas_kws.quant.precomputed import accuracy, calibrated_twin, split_features
    from nas_kws.rebuild import open_run_data
    from nas_kws.train import fit

    check_at_least(args.calib_clips, 1, "--calib_clips")
    if args.method == "qat":
        check_at_least(args.epochs, 1, "--epochs")
    elif args.resume:
        raise ValueError("--resume continues QAT fine-tuning; --method calibrate has none")
    if args.method == "calibrate" and distributed.world_size() > 1:
        raise ValueError("--method calibrate trains nothing and runs in one process; drop "
                         "--nproc / torchrun")
    model, features, classes = load_float(args.run_dir, "quantization")
    spec = _quant_spec(args)
    out = RunDir(args.out) if args.out else RunDir(args.run_dir).quant_run(args.method, spec.tag)
    with out.locked():
        # calibration has no epochs: --epochs is left out of its config, like SVD's --epochs 0
        cfg = claim_derived_run(out, args) or finetune_config(
            args.run_dir, args, QAT_TRAIN,
            FINETUNE_FLAGS if args.method == "qat" else {"lr": "train.lr"})
        store = open_run_data(args.run_dir, classes)
        twin = calibrated_twin(model, spec, store, args.calib_clips, cfg.train.seed)
        train_clips = len(store.split("train").labels)
        clips = min(args.calib_clips, train_clips)
        if args.method == "calibrate":
            feats, labels = split_features(store, features, "test")
            acc = accuracy(twin, feats, labels)
            save_derived_run(out.path, twin, cfg, classes, {
                "method": "calibrate", "calibration_clips": clips, "test_best_acc": acc,
                "test_last_acc": acc})
            print(f"calibrated {spec.tag} on {clips} clips: test accuracy {acc:.4f}")
        else:
            if _fuse_fake_quant(args.fake_quant, cfg.train, train_clips):
                from nas_kws.quant.fused_quant import fuse_activation_quant

                fuse_activation_quant(twin)
            seed_everything(cfg.train.seed)   # dropout and augmentation, whatever ran before
            metrics = fit(twin, cfg, out.path, resume=args.resume, store=store,
                          progress=not args.quiet)
            if not distributed.is_main():
                return 0
            metrics.update(method="qat", calibration_clips=clips)
            out.write_metrics(metrics)
            print(f"QAT {spec.tag}, {cfg.train.epochs} epochs: test accuracy "
                  f"{metrics['test_best_acc']:.4f}")
    print(f"run directory: {out.path}")
    return 0


def _fuse_fake_quant(choice: str, train: TrainConfig, train_clips: int) -> bool:
    """--fake_quant auto: the compiled kernels (nas_kws.quant.fused_quant) cost ~20-30 s of
    compilation per process and save about half of each step, so runs of FUSE_MIN_STEPS steps
    and more take them; 'fused' and 'brevitas' force the choice. Results are the same either way."""
    from nas_kws.train import steps_per_epoch

    if choice != "auto":
        return choice == "fused"
    batches = -(-train_clips // train.batch_size)
    return train.epochs * steps_per_epoch(batches, train) >= FUSE_MIN_STEPS


def claim_derived_run(out: RunDir, args: argparse.Namespace):
    """A derived run's folder (lock held): `--resume` continues an interrupted fine-tuning with
    the run's own config (returned); otherwise a started or finished run there is refused unless
    `--overwrite`, and None is returned (the caller builds the config from its flags)."""
    if not args.resume:
        out.make_fresh(args.overwrite, folder_flag="--out")
        return None
    if out.finished or not out.can_resume:
        raise ValueError(f"--resume: {out.path} holds no interrupted fine-tuning to continue")
    return out.experiment()


def cmd_svd(args: argparse.Namespace) -> int:
    if not 0 < args.target_macs_ratio < 1:
        raise ValueError(f"--target_macs_ratio: expected a fraction in (0, 1), got "
                         f"{args.target_macs_ratio}")
    check_at_least(args.calib_clips, 1, "--calib_clips")
    check_at_least(args.epochs, 0, "--epochs")
    model, features, classes = load_float(args.run_dir, "SVD compression")
    out = RunDir(args.out) if args.out else RunDir(args.run_dir).svd_run(args.target_macs_ratio)
    with out.locked():
        # --epochs 0 (no fine-tuning) leaves the parent's epochs in the derived run's config
        cfg = claim_derived_run(out, args) or finetune_config(
            args.run_dir, args, flag_keys=FINETUNE_FLAGS if args.epochs else {"lr": "train.lr"})
        return _svd(args, model, features, classes, cfg, out)


def _svd(args: argparse.Namespace, model: nn.Module, features, classes: list[str], cfg,
         out: RunDir) -> int:
    from nas_kws.profiling import profile_model
    from nas_kws.quant.derived import save_derived_run
    from nas_kws.quant.precomputed import accuracy, batches, split_features
    from nas_kws.quant.svd import apply_ranks, measure_sensitivity, select_ranks
    from nas_kws.rebuild import open_run_data
    from nas_kws.train import fit

    store = open_run_data(args.run_dir, classes)
    calib, calib_labels = split_features(store, features, "valid", limit=args.calib_clips)
    test, test_labels = split_features(store, features, "test")

    @torch.no_grad()
    def score(m: nn.Module) -> float:
        m.eval()
        return sum(F.cross_entropy(m(x), y, reduction="sum").item()
                   for x, y in batches(calib, calib_labels)) / len(calib_labels)

    before = profile_model(model)
    options = measure_sensitivity(model, score)
    ranks = select_ranks(options, before.macs, int(args.target_macs_ratio * before.macs))
    compressed = apply_ranks(model, ranks)
    compressed.spec = {"base": model.spec, "svd_ranks": ranks}
    after = profile_model(compressed)
    summary = {"target_macs_ratio": args.target_macs_ratio, "ranks": ranks,
               "before": {"macs": before.macs, "params": before.params,
                          "test_acc": accuracy(model, test, test_labels)},
               "after_svd": {"macs": after.macs, "params": after.params,
                             "test_acc": accuracy(compressed, test, test_labels)}}
    if args.epochs > 0:
        seed_everything(cfg.train.seed)
        metrics = fit(compressed, cfg, out.path, resume=args.resume, store=store,
                      progress=not args.quiet)
        summary["after_finetune"] = {"macs": after.macs, "params": after.params,
                                     "test_acc": metrics["test_best_acc"], "epochs": args.epochs}
    else:
        acc = summary["after_svd"]["test_acc"]
        save_derived_run(out.path, compressed, cfg, classes,
                         {"test_best_acc": acc, "test_last_acc": acc})
    write_json(out.svd_summary_path, summary)
    rows = [{"stage": stage, **summary[stage]}
            for stage in ("before", "after_svd", "after_finetune") if stage in summary]
    print_rows(rows, ["stage", "macs", "params", "test_acc"])
    print(f"run directory: {out.path}")
    return 0


def _finetune_flags(p: argparse.ArgumentParser, epochs: int, lr: float) -> None:
    p.add_argument("--epochs", type=int, default=epochs,
                   help=f"fine-tuning epochs (default {epochs})")
    p.add_argument("--lr", type=float, default=lr, help=f"fine-tuning learning rate (default {lr}"
                                                          f"{', Adam' if lr < 1e-3 else ''})")
    add_set_flag(p, "train.batch_size=50", "other config keys for fine-tuning")
    p.add_argument("--out", help="output run directory")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted fine-tuning in the output run (its own config)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a finished or started run in the output folder")
    add_quiet_flag(p)


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    quantize = subparsers.add_parser("quantize", help="post-training rounding, Brevitas QAT or "
                                                      "calibration of a trained run")
    qsub = quantize.add_subparsers(dest="quantize_command", required=True, metavar="METHOD")

    p = qsub.add_parser("ptq", help="round weights after training (BN folded): accuracy per "
                                    "bit width")
    p.add_argument("run_dir")
    p.add_argument("--bits", default="1,2,3,4,5,6,7,8", help="comma-separated bit widths")
    p.add_argument("--per_tensor", action="store_true",
                   help="one scale per tensor, not per channel")
    p.add_argument("--asymmetric", action="store_true", help="min/max grid (Peter et al.) instead "
                                                             "of symmetric max-abs")
    p.add_argument("--split", default="test")
    p.set_defaults(func=cmd_ptq)

    p = qsub.add_parser("qat", help="Brevitas twin: quantization-aware fine-tuning, or "
                                    "--method calibrate for post-training calibration")
    p.add_argument("run_dir")
    p.add_argument("--weight_bits", type=int, help="weight bit width 2..8 (default 8)")
    p.add_argument("--act_bits", type=int, help="activation bit width 2..8 (default 8)")
    p.add_argument("--per_tensor", action="store_true", help="per-tensor weight scales "
                                                             "(default per channel)")
    p.add_argument("--first_last_bits", type=int, help="bit width of the first and last layer")
    p.add_argument("--spec", help="YAML with weight_bits, act_bits, per_channel, first_last_bits "
                                  "and per-layer `layers: {glob: {weight_bits, act_bits}}`")
    p.add_argument("--method", choices=["qat", "calibrate"], default="qat")
    p.add_argument("--calib_clips", type=int, default=500, help="training clips for calibration")
    p.add_argument("--fake_quant", choices=["auto", "fused", "brevitas"], default="auto",
                   help="activation fake quantization in QAT: Brevitas's own, or the same "
                        "computation as compiled kernels (~2x faster steps, ~20-30 s to compile); "
                        f"auto: fused for runs of {FUSE_MIN_STEPS} steps or more (default)")
    _finetune_flags(p, epochs=3, lr=1e-4)
    add_nproc_flag(p)
    p.set_defaults(func=cmd_qat)

    compress = subparsers.add_parser("compress", help="compress a trained run")
    csub = compress.add_subparsers(dest="compress_command", required=True, metavar="METHOD")
    p = csub.add_parser("svd", help="truncated / spatial SVD to a MAC target, then fine-tuning")
    p.add_argument("run_dir")
    p.add_argument("--target_macs_ratio", type=float, required=True,
                   help="MACs after / MACs before, e.g. 0.6")
    p.add_argument("--calib_clips", type=int, default=500,
                   help="validation clips that measure each layer's sensitivity")
    _finetune_flags(p, epochs=5, lr=0.01)
    p.set_defaults(func=cmd_svd)
