"""`nas-kws demo`: the README's main job, end to end on the embedded synthetic set.

search (hybrid space, MAC budget) -> retrain the derived net -> train BC-ResNet-1 with the same
recipe -> profile -> round weights (PTQ 8/6/4) and Brevitas QAT W8A8 / W4A8 -> ONNX fp32 and
int8 with latency -> comparison report (baselines without a run: the zoo's reference runs,
on the default set). Each step is the `nas-kws` command of the same name, run
in this process, so the demo exercises exactly what users run. Running it again continues:
finished steps are skipped, an interrupted search or training resumes from its checkpoint.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from nas_kws.config import EXPERIMENTS_DIR
from nas_kws.data.synth import SYNTH_SIZES
from nas_kws.errors import EXPECTED_ERRORS, NasKwsError
from nas_kws.report import CSV, MARKDOWN, REPORT_FILES
from nas_kws.runs import RunDir, latency_path
from nas_kws.zoo import read_index

DEMO_RECIPE = EXPERIMENTS_DIR / "demo.yaml"          # training recipe of both nets
DEMO_SEARCH = EXPERIMENTS_DIR / "demo_search.yaml"   # the search's space, budget and schedule
BASELINE = "bcresnet1"
QAT_WEIGHT_BITS = (8, 4)      # Brevitas twins (8-bit activations) of both nets; W8A8 -> int8 ONNX


def run_step(args: argparse.Namespace, argv: list[str], again: str = "the demo") -> None:
    """One `nas-kws` command, parsed by the `nas-kws` parser itself (`args.nas_kws_parser`);
    a failing step stops the job (`again`), and running it again continues from there."""
    print(f"\n$ nas-kws {' '.join(argv)}", flush=True)
    step = args.nas_kws_parser.parse_args(argv)
    try:
        step.func(step)
    except EXPECTED_ERRORS as err:
        raise NasKwsError(f"step `nas-kws {' '.join(argv)}` failed: {err}; rerun {again} to "
                          "continue from the finished steps") from err


def search_step(args: argparse.Namespace, search: RunDir) -> None:
    if search.finished:
        return
    if search.keep_if_resumable():
        run_step(args, ["search", "--path", str(search.path), "--resume"])
        return
    argv = ["search", "--path", str(search.path), "--config", str(DEMO_SEARCH),
            "--set", f"data.synth_size={args.synth_size}"]
    if args.flops_ref_value:
        argv += ["--flops_ref_value", str(args.flops_ref_value)]
    if args.search_epochs:
        warmup, epochs = args.search_epochs
        argv += ["--warmup_epochs", str(warmup), "--n_epochs", str(epochs)]
    run_step(args, argv)


def train_step(args: argparse.Namespace, run: RunDir, model_flags: list[str]) -> None:
    if run.finished:
        return
    if run.keep_if_resumable():
        run_step(args, ["train", "--resume", str(run.path)])
        return
    argv = ["train", *model_flags, "--config", str(DEMO_RECIPE), "--run_dir", str(run.path),
            "--set", f"data.synth_size={args.synth_size}"]
    run_step(args, argv + (["--epochs", str(args.epochs)] if args.epochs else []))


def qat_run(run: RunDir, weight_bits: int) -> RunDir:
    return run.quant_run("qat", f"w{weight_bits}a8")


def quantize_steps(args: argparse.Namespace, run: RunDir) -> None:
    """PTQ 8/6/4, QAT W8A8 and W4A8, ONNX fp32 of the float net and int8 of the W8A8 twin,
    latency of both."""
    if not run.ptq_path.is_file():
        run_step(args, ["quantize", "ptq", str(run.path), "--bits", "8,6,4"])
    for bits in QAT_WEIGHT_BITS:
        twin = qat_run(run, bits)
        if not twin.finished:
            run_step(args, ["quantize", "qat", str(run.path), "--weight_bits", str(bits),
                            "--act_bits", "8", "--out", str(twin.path),
                            *(["--resume"] if twin.keep_if_resumable() else
                              ["--epochs", str(args.qat_epochs)])])
    int8_twin = qat_run(run, 8)
    onnx = [run.export.onnx_path("fp32"), int8_twin.export.onnx_path("int8")]
    if not onnx[0].is_file():
        run_step(args, ["export", str(run.path)])
    if not onnx[1].is_file():
        run_step(args, ["export", str(int8_twin.path)])
    if not all(latency_path(p).is_file() for p in onnx):
        run_step(args, ["bench", "latency", *map(str, onnx), "--runs", str(args.latency_runs)])


def _percent(row: dict[str, str], key: str) -> str:
    """An accuracy cell of report.csv in %, with its +- std over seeds when the row has one."""
    if not row.get(key):
        return "-"
    std = row.get(f"{key}_std")
    return f"{100 * float(row[key]):.2f}" + (f" +- {100 * float(std):.2f}" if std else "")


def summary(search: RunDir, report: Path) -> str:
    """The derived net, then the comparison report's rows (this demo's runs and the zoo's
    reference runs, mean +- std over their seeds) as a table."""
    found = search.read_metrics()
    lines = ["", "== nas-kws demo ==",
             f"derived net ({found['search_space']} space, {search.genotype_path}):",
             *(f"  block {i:2d}  {label}" for i, label in enumerate(found["blocks"])),
             f"MACs {found['derived_macs']:,} against the budget {found['flops_ref_value']:,.0f} "
             f"({found['macs_vs_ref']:.2f}x)", "",
             f"{'model':12s} {'family':10s} {'runs':>4s} {'params':>9s} {'MACs':>12s} "
             f"{'fp32 acc %':>14s} "
             + "".join(f"{'QAT w' + str(b) + 'a8 %':>14s} " for b in QAT_WEIGHT_BITS)
             + f"{'int8 ms':>8s}"]
    with open(report / CSV, newline="") as f:
        for row in csv.DictReader(f):
            if not row["fp32_acc"]:
                continue                  # a baseline the zoo has not built: in report.md's notes
            qat = "".join(f"{_percent(row, f'QAT w{b}a8'):>14s} " for b in QAT_WEIGHT_BITS)
            latency = f"{float(row['onnx_int8_ms']):.3f}" if row["onnx_int8_ms"] else "-"
            lines.append(f"{row['model']:12s} {row['family']:10s} {row['runs']:>4s} "
                         f"{int(row['params']):>9,} "
                         f"{int(row['MACs']):>12,} {_percent(row, 'fp32_acc'):>14s} {qat}"
                         f"{latency:>8s}")
    lines.append(f"\nreport: {report / MARKDOWN} (and {', '.join(REPORT_FILES[1:])})")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    search = RunDir(out / "search")
    runs = {"searched": RunDir(out / "searched"), BASELINE: RunDir(out / BASELINE)}
    search_step(args, search)
    train_step(args, runs["searched"], ["--genotype", str(search.genotype_path)])
    train_step(args, runs[BASELINE], ["--model", BASELINE])
    run_step(args, ["profile", str(search.genotype_path)])
    for run in runs.values():
        quantize_steps(args, run)
    report = out / "report"
    baselines = args.baselines or ",".join(read_index().models)
    run_step(args, ["compare", *(str(run.path) for run in runs.values()), *args.with_runs,
                    "--baselines", baselines, "--out", str(report)])
    print(summary(search, report))
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
    p.add_argument("--baselines",
                   help="models the report must list (default: the zoo's, `nas-kws zoo list`); "
                        "on the default set, reference runs fill those without a run, the rest "
                        "are marked missing")
    p.add_argument("--with", dest="with_runs", nargs="+", default=[], metavar="RUN",
                   help="more finished runs for the report, e.g. a BC-ResNet-8 training")
    p.set_defaults(func=cmd_demo)
