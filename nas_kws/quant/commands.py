"""`nas-kws quantize ptq|qat`, `nas-kws compress svd`, `nas-kws export`, `nas-kws bench latency`.

Every command reads a run directory and writes its results inside it:
    RUN/quant/ptq.json                      accuracy per rounding scheme and bit width
    RUN/quant/{qat,calibrate}_<tag>/        a derived run (checkpoints, metrics.json)
    RUN/compress/svd_<ratio>/               a derived run, plus svd.json (before / after)
    RUN/export/model_{fp32,int8}.onnx       with export.json (parity, kernels) and
    MODEL.latency.json                      next to each benchmarked ONNX file
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.fileio import write_json

PTQ_FILE = "quant/ptq.json"


# --- data and accuracy ------------------------------------------------------------------------

def run_config(run_dir: str | Path):
    from nas_kws.config import ExperimentConfig, load_config
    from nas_kws.runs import RunDir

    return load_config(ExperimentConfig, RunDir(run_dir).config_path)


def open_run_data(run_dir: str | Path, classes: list[str]):
    """The waveform store a run was trained on; its classes must be the run's."""
    from nas_kws.data.loader import open_dataset

    store = open_dataset(run_config(run_dir).data, progress=False)
    if list(store.classes) != list(classes):
        raise ValueError(f"{run_dir}: the data's classes {list(store.classes)} differ from the "
                         f"run's {classes}")
    return store


@torch.no_grad()
def split_features(store, features, split: str, limit: int | None = None,
                   seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, 1, bins, frames), labels) of a split, computed once on the CPU; `limit`
    takes a seeded random subset."""
    from nas_kws.data.loader import BatchLoader
    from nas_kws.features import Frontend

    arrays = store.split(split)
    indices = np.arange(len(arrays.labels))
    if limit is not None and limit < len(indices):
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    frontend = Frontend(features)
    feats, labels = [], []
    for waves, y in BatchLoader(arrays.audio, arrays.labels, 250, indices=indices):
        feats.append(frontend(waves))
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def batches(feats: torch.Tensor, labels: torch.Tensor, size: int = 250) -> list:
    return [(feats[i:i + size], labels[i:i + size]) for i in range(0, len(feats), size)]


def accuracy(model: nn.Module, feats: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy on precomputed features, through the trainer's evaluate (identity frontend)."""
    from nas_kws.evaluation import evaluate

    num_classes = getattr(model, "num_classes", int(labels.max()) + 1)
    return evaluate(model, nn.Identity(), batches(feats, labels), torch.device("cpu"),
                    num_classes).accuracy


def parse_bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise ValueError(f"--bits {text!r}: expected comma-separated integers, e.g. 8,6,4") from None
    if not bits:
        raise ValueError("--bits: expected at least one bit width")
    return bits


def _load_float(run_dir: str, what: str):
    from nas_kws.quant.derived import is_quantized
    from nas_kws.runs import load_model

    model, features, classes = load_model(run_dir)
    if is_quantized(model.spec):
        raise ValueError(f"{run_dir}: already a quantized run; {what} needs a float run")
    return model, features, classes


def _print_rows(rows: list[dict[str, Any]], keys: list[str]) -> None:
    print(" | ".join(keys))
    for row in rows:
        print(" | ".join(f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]) for k in keys))


# --- quantize ptq ----------------------------------------------------------------------------

def cmd_ptq(args: argparse.Namespace) -> int:
    from nas_kws.quant.fold import fold_batchnorm
    from nas_kws.quant.rounding import RoundingScheme, round_weights

    model, features, classes = _load_float(args.run_dir, "post-training rounding")
    bits = parse_bits(args.bits)
    schemes = [RoundingScheme(b, per_channel=not args.per_tensor, symmetric=not args.asymmetric)
               for b in bits]
    store = open_run_data(args.run_dir, classes)
    feats, labels = split_features(store, features, args.split)
    folded = fold_batchnorm(model)
    rows = [{"scheme": "fp32", "bits": 32, f"{args.split}_acc": accuracy(model, feats, labels)}]
    for scheme in schemes:
        rows.append({"scheme": scheme.name, "bits": scheme.bits,
                     f"{args.split}_acc": accuracy(round_weights(folded, scheme), feats, labels)})
    path = Path(args.run_dir) / PTQ_FILE
    old = json.loads(path.read_text())["rows"] if path.is_file() else []
    fresh = {(r["scheme"], r["bits"]) for r in rows}
    merged = [r for r in old if (r["scheme"], r["bits"]) not in fresh] + rows
    write_json(path, {"split": args.split, "clips": len(labels), "rows": merged})
    _print_rows(rows, ["scheme", "bits", f"{args.split}_acc"])
    print(f"written: {path}")
    return 0


# --- quantize qat / calibrate ------------------------------------------------------------------

def _quant_spec(args: argparse.Namespace):
    from nas_kws.quant.qat import QuantSpec, load_quant_spec

    cli = {"weight_bits": args.weight_bits, "act_bits": args.act_bits,
           "per_channel": False if args.per_tensor else None,
           "first_last_bits": args.first_last_bits}
    if args.spec:
        return load_quant_spec(args.spec, cli)
    return QuantSpec.from_dict({k: v for k, v in cli.items() if v is not None}, where="command line")


QAT_TRAIN = {"train.optimizer": "adam", "train.weight_decay": 0.0}


def finetune_config(run_dir: str | Path, args: argparse.Namespace, defaults: dict[str, Any] | None = None):
    """The parent's experiment with a short, low-lr schedule for fine-tuning a derived net, whose
    starting weights compete for the best checkpoint; `defaults` sit between the parent's values
    and the command line's."""
    from nas_kws.config import ExperimentConfig, apply_overrides, from_dict, parse_set_flags, to_dict

    overrides = {"train.select_start": True, **(defaults or {}), "train.epochs": args.epochs,
                 "train.lr": args.lr,
                 "train.warmup_epochs": 0, "train.seeds": 1, **parse_set_flags(args.set)}
    return from_dict(ExperimentConfig, apply_overrides(to_dict(run_config(run_dir)), overrides),
                     f"{run_dir}/config.yaml")


def save_untrained_run(out: str | Path, model: nn.Module, cfg, classes: list[str],
                       metrics: dict[str, Any]) -> None:
    """A derived net that was not fine-tuned, as a run directory `runs.load_model` reads."""
    from nas_kws.config import to_dict
    from nas_kws.profiling import profile_model
    from nas_kws.runs import RunDir

    run = RunDir(out)
    run.write_setup(to_dict(cfg), model.feature_config, classes)
    state = {"model": model.state_dict(), "model_spec": model.spec, "classes": classes,
             "features": model.feature_config.to_dict(), "epoch": -1, "best_valid_acc": None,
             "config": to_dict(cfg)}
    run.save_checkpoint("best", state)
    run.save_checkpoint("last", state)
    prof = profile_model(model)
    run.write_metrics({"model": model.spec, "classes": classes, "params": prof.params,
                       "macs": prof.macs, **metrics})


def calibrated_twin(model: nn.Module, spec, store, clips: int, seed: int = 0) -> nn.Module:
    """The Brevitas twin with activation ranges calibrated on `clips` clean training clips."""
    from nas_kws.quant.qat import calibrate, quant_twin

    twin = quant_twin(model, spec)
    calib, _ = split_features(store, model.feature_config, "train", limit=clips, seed=seed)
    calibrate(twin, calib.split(100))
    return twin


def cmd_qat(args: argparse.Namespace) -> int:
    from nas_kws.runs import RunDir
    from nas_kws.train import fit

    model, features, classes = _load_float(args.run_dir, "quantization")
    spec = _quant_spec(args)
    # Folded weights take steps scaled by 1 / (BN scale)^2 under SGD; Adam is blind to that scale.
    cfg = finetune_config(args.run_dir, args, QAT_TRAIN)
    store = open_run_data(args.run_dir, classes)
    twin = calibrated_twin(model, spec, store, args.calib_clips, cfg.train.seed)
    clips = min(args.calib_clips, len(store.split("train").labels))
    out = Path(args.out or Path(args.run_dir) / "quant" / f"{args.method}_{spec.tag}")
    if args.method == "calibrate":
        feats, labels = split_features(store, features, "test")
        acc = accuracy(twin, feats, labels)
        save_untrained_run(out, twin, cfg, classes, {"method": "calibrate", "calibration_clips": clips,
                                                     "test_best_acc": acc, "test_last_acc": acc})
        print(f"calibrated {spec.tag} on {clips} clips: test accuracy {acc:.4f}")
    else:
        metrics = fit(twin, cfg, out, store=store, progress=not args.quiet)
        metrics.update(method="qat", calibration_clips=clips)
        RunDir(out).write_metrics(metrics)
        print(f"QAT {spec.tag}, {cfg.train.epochs} epochs: test accuracy {metrics['test_best_acc']:.4f}")
    print(f"run directory: {out}")
    return 0


# --- compress svd ----------------------------------------------------------------------------

def cmd_svd(args: argparse.Namespace) -> int:
    from nas_kws.profiling import profile_model
    from nas_kws.quant.svd import apply_ranks, measure_sensitivity, select_ranks
    from nas_kws.train import fit

    if not 0 < args.target_macs_ratio < 1:
        raise ValueError(f"--target_macs_ratio: expected a fraction in (0, 1), got {args.target_macs_ratio}")
    model, features, classes = _load_float(args.run_dir, "SVD compression")
    cfg = finetune_config(args.run_dir, args)
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
    out = Path(args.out or Path(args.run_dir) / "compress" / f"svd_{args.target_macs_ratio:g}")
    if args.epochs > 0:
        metrics = fit(compressed, cfg, out, store=store, progress=not args.quiet)
        summary["after_finetune"] = {"macs": after.macs, "params": after.params,
                                     "test_acc": metrics["test_best_acc"], "epochs": args.epochs}
    else:
        save_untrained_run(out, compressed, cfg, classes,
                           {"test_best_acc": summary["after_svd"]["test_acc"],
                            "test_last_acc": summary["after_svd"]["test_acc"]})
    write_json(out / "svd.json", summary)
    rows = [{"stage": stage, **summary[stage]} for stage in ("before", "after_svd", "after_finetune")
            if stage in summary]
    _print_rows(rows, ["stage", "macs", "params", "test_acc"])
    print(f"run directory: {out}")
    return 0


# --- export and latency ------------------------------------------------------------------------

def _parity(model: nn.Module, path: Path, feats: torch.Tensor) -> dict[str, Any]:
    from nas_kws.quant.export import onnx_logits, prediction_parity

    with torch.no_grad():
        torch_logits = torch.cat([model(x) for x in feats.split(250)])
    return prediction_parity(torch_logits, torch.from_numpy(onnx_logits(path, feats)))


def cmd_export(args: argparse.Namespace) -> int:
    from nas_kws.quant.derived import is_quantized
    from nas_kws.runs import load_model
    from nas_kws.quant.export import export_fp32, export_int8, kernel_summary
    from nas_kws.quant.qat import QuantSpec

    model, features, classes = load_model(args.run_dir)
    out = Path(args.out or Path(args.run_dir) / "export")
    store = open_run_data(args.run_dir, classes)
    feats, _ = split_features(store, features, "test", limit=args.parity_clips)
    results: dict[str, Any] = {}
    if is_quantized(model.spec):
        twin = model
    else:
        path = export_fp32(model, out / "model_fp32.onnx", classes)
        results["fp32"] = {"path": str(path), "parity": _parity(model, path, feats)}
        twin = calibrated_twin(model, QuantSpec(), store, args.calib_clips) if args.int8 else None
    if twin is not None:
        path = export_int8(twin, out / "model_int8.onnx", classes)
        results["int8"] = {"path": str(path), "quant": twin.spec["quant"],
                           "parity": _parity(twin, path, feats), "kernels": kernel_summary(path)}
    write_json(out / "export.json", results)
    for kind, r in results.items():
        extra = ""
        if "kernels" in r:
            extra = (f", {r['kernels']['integer_kernels']} integer kernels, "
                     f"{r['kernels']['float_weight_kernels']} float conv/gemm")
        parity = r["parity"]
        print(f"{kind}: {r['path']} (agrees with PyTorch on {parity['agreement']:.2%} of "
              f"{parity['clips']} test clips, {parity['agreement_tie_aware']:.2%} counting exact "
              f"logit ties, max logit difference {parity['max_abs_logit_diff']:.3g}{extra})")
    return 0


def cmd_latency(args: argparse.Namespace) -> int:
    from nas_kws.quant.latency import format_latency, measure_latency

    for model in args.models:
        lat = measure_latency(model, runs=args.runs, warmup=args.warmup, threads=args.threads)
        write_json(Path(model).with_suffix(".latency.json"), lat.to_dict())
        print(format_latency(lat))
    return 0


# --- argument parsing --------------------------------------------------------------------------

def _finetune_flags(p: argparse.ArgumentParser, epochs: int, lr: float) -> None:
    p.add_argument("--epochs", type=int, default=epochs, help=f"fine-tuning epochs (default {epochs})")
    p.add_argument("--lr", type=float, default=lr, help=f"fine-tuning learning rate (default {lr}"
                                                          f"{', Adam' if lr < 1e-3 else ''})")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="other config keys for fine-tuning, e.g. train.batch_size=50")
    p.add_argument("--out", help="output run directory")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    quantize = subparsers.add_parser("quantize", help="post-training rounding, Brevitas QAT or "
                                                      "calibration of a trained run")
    qsub = quantize.add_subparsers(dest="quantize_command", required=True, metavar="METHOD")

    p = qsub.add_parser("ptq", help="round weights after training (BN folded): accuracy per bit width")
    p.add_argument("run_dir")
    p.add_argument("--bits", default="1,2,3,4,5,6,7,8", help="comma-separated bit widths")
    p.add_argument("--per_tensor", action="store_true", help="one scale per tensor, not per channel")
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
    _finetune_flags(p, epochs=3, lr=1e-4)
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

    p = subparsers.add_parser("export", help="ONNX fp32 (and --int8 QCDQ) with parity checks")
    p.add_argument("run_dir", help="a float run (fp32, and int8 from a calibrated W8A8 twin with "
                                   "--int8) or a quantized run (int8)")
    p.add_argument("--int8", action="store_true")
    p.add_argument("--out", help="output folder (default RUN/export)")
    p.add_argument("--parity_clips", type=int, help="test clips for the parity check (default all)")
    p.add_argument("--calib_clips", type=int, default=500)
    p.set_defaults(func=cmd_export)

    bench = subparsers.add_parser("bench", help="speed measurements")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    p = bsub.add_parser("latency", help="onnxruntime latency per clip (batch 1) and peak memory")
    p.add_argument("models", nargs="+", metavar="MODEL.onnx")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_latency)
