"""`nas-kws demo`: the README's main job, end to end on the embedded synthetic set.

search (hybrid space, MAC budget) -> retrain the derived net -> train BC-ResNet-1 with the same
recipe -> profile -> round weights (PTQ 8/6/4) and Brevitas QAT W8A8 / W4A8 -> ONNX fp32 and int8 with
latency -> comparison report. Each step is the `nas-kws` command of the same name, run in this
process, so the demo exercises exactly what users run. Running it again continues: finished
steps are skipped, an interrupted search or training resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from nas_kws.config import EXPERIMENTS_DIR
from nas_kws.data.synth import SYNTH_SIZES

DEMO_RECIPE = EXPERIMENTS_DIR / "demo.yaml"          # training recipe of both nets
DEMO_SEARCH = EXPERIMENTS_DIR / "demo_search.yaml"   # the search's space, budget and schedule
BASELINE = "bcresnet1"


def run_step(argv: list[str]) -> None:
    """One `nas-kws` command; a failing step stops the demo (its own error is printed above)."""
    from nas_kws.cli import main

    print(f"\n$ nas-kws {' '.join(argv)}", flush=True)
    if main(argv) != 0:
        raise SystemExit(f"nas-kws demo: step `nas-kws {' '.join(argv)}` failed (see above); "
                         "rerun the demo to continue from the finished steps")


def finished(run: Path) -> bool:
    return (run / "metrics.json").is_file()


def resumable(run: Path) -> bool:
    """True when a run has a checkpoint to continue from. A run folder without one stopped
    before its first epoch ended and holds nothing worth keeping, so it is cleared."""
    if (run / "checkpoints" / "last.pt").is_file():
        return True
    if run.exists():
        shutil.rmtree(run)
    return False


def search_step(args: argparse.Namespace, path: Path) -> None:
    if finished(path):
        return
    if resumable(path):
        run_step(["search", "--path", str(path), "--resume"])
        return
    argv = ["search", "--path", str(path), "--config", str(DEMO_SEARCH),
            "--set", f"data.synth_size={args.synth_size}"]
    if args.flops_ref_value:
        argv += ["--flops_ref_value", str(args.flops_ref_value)]
    if args.search_epochs:
        warmup, search = args.search_epochs
        argv += ["--warmup_epochs", str(warmup), "--n_epochs", str(search)]
    run_step(argv)


def train_step(args: argparse.Namespace, run: Path, model_flags: list[str]) -> None:
    if finished(run):
        return
    if resumable(run):
        run_step(["train", "--resume", str(run)])
        return
    argv = ["train", *model_flags, "--config", str(DEMO_RECIPE), "--run_dir", str(run),
            "--set", f"data.synth_size={args.synth_size}"]
    run_step(argv + (["--epochs", str(args.epochs)] if args.epochs else []))


def quantize_steps(args: argparse.Namespace, run: Path) -> None:
    """PTQ 8/6/4, QAT W8A8 and W4A8, ONNX fp32 of the float net and int8 of the W8A8 twin,
    latency of both."""
    if not (run / "quant" / "ptq.json").is_file():
        run_step(["quantize", "ptq", str(run), "--bits", "8,6,4"])
    for weight_bits in (8, 4):
        qat = run / "quant" / f"qat_w{weight_bits}a8"
        if not finished(qat):
            run_step(["quantize", "qat", str(run), "--weight_bits", str(weight_bits),
                      "--act_bits", "8", "--epochs", str(args.qat_epochs), "--out", str(qat)])
    int8_twin = run / "quant" / "qat_w8a8"
    onnx = [run / "export" / "model_fp32.onnx", int8_twin / "export" / "model_int8.onnx"]
    if not onnx[0].is_file():
        run_step(["export", str(run)])
    if not onnx[1].is_file():
        run_step(["export", str(int8_twin)])
    if not all(p.with_suffix(".latency.json").is_file() for p in onnx):
        run_step(["bench", "latency", *map(str, onnx), "--runs", str(args.latency_runs)])


def summary(search: Path, runs: dict[str, Path], report: Path) -> str:
    found = json.loads((search / "metrics.json").read_text())
    lines = ["", "== nas-kws demo ==",
             f"derived net ({found['search_space']} space, {search / 'genotype.yaml'}):",
             *(f"  block {i:2d}  {label}" for i, label in enumerate(found["blocks"])),
             f"MACs {found['derived_macs']:,} against the budget {found['flops_ref_value']:,.0f} "
             f"({found['macs_vs_ref']:.2f}x)", "",
             f"{'model':12s} {'params':>9s} {'MACs':>12s} {'fp32 acc':>9s} {'QAT w8a8':>9s} "
             f"{'QAT w4a8':>9s}"]
    for label, run in runs.items():
        m = json.loads((run / "metrics.json").read_text())
        accs = [m["test_best_acc"]] + [
            json.loads((run / "quant" / qat / "metrics.json").read_text())["test_best_acc"]
            for qat in ("qat_w8a8", "qat_w4a8")]
        lines.append(f"{label:12s} {m['params']:>9,} {m['macs']:>12,} "
                     + " ".join(f"{acc:>9.4f}" for acc in accs))
    lines.append(f"\nreport: {report / 'report.md'} (and report.csv, accuracy_vs_macs.png, "
                 "accuracy_vs_size.png)")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    search = out / "search"
    runs = {"searched": out / "searched", BASELINE: out / BASELINE}
    search_step(args, search)
    train_step(args, runs["searched"], ["--genotype", str(search / "genotype.yaml")])
    train_step(args, runs[BASELINE], ["--model", BASELINE])
    run_step(["profile", str(search / "genotype.yaml")])
    for run in runs.values():
        quantize_steps(args, run)
    report = out / "report"
    run_step(["compare", *map(str, runs.values()), *map(str, args.with_runs),
              "--baselines", args.baselines, "--out", str(report)])
    print(summary(search, runs, report))
    return 0


def _epochs_pair(text: str) -> tuple[int, int]:
    try:
        warmup, search = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WARMUP,SEARCH epochs like 2,4, got {text!r}")
    return warmup, search


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="the main job: search -> retrain -> quantize -> compare on "
                                    "the embedded synthetic set")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--synth_size", default="default", choices=list(SYNTH_SIZES),
                   help="synthetic set size (default: default)")
    p.add_argument("--flops_ref_value", type=float,
                   help=f"MAC budget of the search (default: {DEMO_SEARCH.name}'s)")
    p.add_argument("--search_epochs", type=_epochs_pair, metavar="WARMUP,SEARCH",
                   help=f"search schedule (default: {DEMO_SEARCH.name}'s)")
    p.add_argument("--epochs", type=int, help=f"training epochs (default: {DEMO_RECIPE.name}'s)")
    p.add_argument("--qat_epochs", type=int, default=3, help="QAT fine-tuning epochs (default 3)")
    p.add_argument("--latency_runs", type=int, default=200, help="onnxruntime runs per model")
    p.add_argument("--baselines", default="bcresnet1,bcresnet8",
                   help="models the report must list (missing ones are marked missing)")
    p.add_argument("--with", dest="with_runs", nargs="+", default=[], metavar="RUN",
                   help="more finished runs for the report, e.g. a BC-ResNet-8 training")
    p.set_defaults(func=cmd_demo)
