"""The deployment table (README "Deployment"): per net, test accuracy fp32 and W8A8, MCU flash (the
profiler's weights, biases and scales, and the whole stripped .tflite file), peak int8 SRAM (the
profiler's traced figure and the .tflite arena), and latency per clip (batch 1, one thread) of
ONNX fp32, the all-integer ONNX int8 and the full-integer TFLite int8.

    python benchmarks/deploy_table.py LABEL=SOURCE ... [--out benchmarks/results/deploy]
    python benchmarks/deploy_table.py bcresnet1=runs/zoo/bcresnet1/seed0 bcresnet8=bcresnet8 \\
        dscnn_s=dscnn_s searched=runs/svr/hybrid-6M/searched-halving/seed0/retrain

A SOURCE that is a run directory is exported with `nas-kws export RUN --int8 --tflite --out
EXPORTS/LABEL` (the run is only read). Any other SOURCE is a model name or genotype .yaml,
built untrained (accuracy "not trained"; latency, flash and SRAM do not depend on the weights)
and calibrated on random features. Latency: every file is timed `--rounds` times in interleaved
order (fp32, int8, tflite, fp32, ...) by `nas_kws.quant.latency` (a fresh process each), so
background load hits all alike; the table gives the median of the rounds and the median of the
same-round ratios to ONNX fp32. Writes OUT.csv and OUT.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from nas_kws.fileio import read_json, write_csv, write_text
from nas_kws.models import create_model
from nas_kws.profiling import profile_model
from nas_kws.quant.export import export_fp32, export_integer
from nas_kws.quant.fold import example_input
from nas_kws.quant.integer import integer_net
from nas_kws.quant.latency import measure_latency
from nas_kws.quant.tflite import export_tflite, tflite_summary
from nas_kws.rebuild import load_model
from nas_kws.report import md_table
from nas_kws.runs import ExportDir

COLUMNS = ["net", "weights", "fp32_acc", "int8_acc", "onnx_parity", "tflite_parity", "flash_KiB",
           "tflite_KiB", "sram_KiB", "tflite_arena_KiB", "onnx_fp32_ms", "onnx_int8_ms",
           "onnx_int8_ratio", "tflite_int8_ms", "tflite_int8_ratio"]
TIME_COLUMN = {"fp32": "onnx_fp32_ms", "int8": "onnx_int8_ms", "tflite": "tflite_int8_ms"}


def _is_run(source: str) -> bool:
    return (Path(source) / "checkpoints").is_dir()


def _export_run(source: str, out: ExportDir) -> dict[str, Any]:
    """`nas-kws export` into `out`; accuracy and parity from its export.json."""
    subprocess.run([sys.executable, "-m", "nas_kws", "export", source, "--int8", "--tflite",
                    "--out", str(out.path)], check=True, stdout=subprocess.DEVNULL)
    summary = read_json(out.summary_path, "export summary")
    return {"weights": "trained", "fp32_acc": summary["reference"]["fp32_accuracy"],
            "int8_acc": summary["reference"]["int8_accuracy"],
            "onnx_parity": summary["int8"]["parity"]["agreement_tie_aware"],
            "tflite_parity": summary["tflite"]["parity"]["agreement_tie_aware"]}


def _export_untrained(model: torch.nn.Module, out: ExportDir) -> dict[str, Any]:
    classes = [str(i) for i in range(model.num_classes)]
    net = integer_net(model, [example_input(model, batch=64, seed=1)])
    export_fp32(model, out.onnx_path("fp32"), classes)
    export_integer(net, out.onnx_path("int8"), classes)
    export_tflite(net, out.model_path("tflite"))
    return {"weights": "untrained", "fp32_acc": "not trained", "int8_acc": "not trained"}


def _files(out: ExportDir) -> dict[str, Path]:
    return {"fp32": out.onnx_path("fp32"), "int8": out.onnx_path("int8"),
            "tflite": out.model_path("tflite")}


def row(label: str, source: str, out: ExportDir) -> dict[str, Any]:
    """Everything but latency for one net."""
    model = load_model(source)[0] if _is_run(source) else create_model(source).eval()
    values = _export_run(source, out) if _is_run(source) else _export_untrained(model, out)
    profile = profile_model(model)
    tflite = tflite_summary(_files(out)["tflite"])
    return {"net": label, **values, "flash_KiB": profile.flash_bytes / 1024,
            "sram_KiB": profile.peak_sram_bytes / 1024,
            "tflite_arena_KiB": tflite["peak_sram_bytes"] / 1024, "tflite_KiB": tflite["file_kb"]}


def add_latency(rows: list[dict[str, Any]], outs: list[ExportDir], rounds: int,
                runs: int) -> None:
    """Interleaved rounds over every file of every net; medians and same-round ratios."""
    times: list[dict[str, list[float]]] = [{k: [] for k in TIME_COLUMN} for _ in rows]
    for _ in range(rounds):
        for out, measured in zip(outs, times):
            for kind, path in _files(out).items():
                measured[kind].append(measure_latency(path, runs).median_ms)
    for values, measured in zip(rows, times):
        for kind, column in TIME_COLUMN.items():
            values[column] = statistics.median(measured[kind])
            ratio = statistics.median(a / f for a, f in zip(measured[kind], measured["fp32"]))
            if kind != "fp32":
                values[column.replace("_ms", "_ratio")] = f"{ratio:.2f}x"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("nets", nargs="+", metavar="LABEL=SOURCE")
    p.add_argument("--out", default="benchmarks/results/deploy", help="writes OUT.csv and OUT.md")
    p.add_argument("--exports", help="keep the exported files in EXPORTS/LABEL (default: a "
                                     "temporary folder)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    pairs = [net.split("=", 1) for net in args.nets]
    bad = [net for net, pair in zip(args.nets, pairs) if len(pair) != 2 or not all(pair)]
    if bad:
        raise SystemExit(f"deploy_table: expected LABEL=SOURCE, got {bad[0]!r}")
    with tempfile.TemporaryDirectory() as tmp:
        exports = Path(args.exports or tmp)
        rows, outs = [], []
        for label, source in pairs:
            outs.append(ExportDir(exports / label))
            rows.append(row(label, source, outs[-1]))
            print(f"{label}: exported to {outs[-1].path}", flush=True)
        add_latency(rows, outs, args.rounds, args.runs)
    out = Path(args.out)
    write_csv(out.with_suffix(".csv"), COLUMNS, rows)
    load = os.getloadavg()
    text = "\n".join([*md_table(COLUMNS, rows), "",
                      f"Latency: batch 1, one thread, median of {args.rounds} interleaved rounds "
                      f"of {args.runs} runs; load average at the end {load[0]:.1f} / "
                      f"{load[1]:.1f} / {load[2]:.1f} on {os.cpu_count()} cores.", ""])
    write_text(out.with_suffix(".md"), text)
    print(text)


if __name__ == "__main__":
    main()
