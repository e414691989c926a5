"""`compare`'s outputs: every net side by side, from the runs' own files.

Per model: parameters, MACs, weight size at 32 / 8 / 4 bits, FP32 test accuracy (mean +- std
when runs or seeds repeat a model), accuracy after each quantization the run holds and ONNX
latency (rows: `nas_kws.report_rows`). Writes report.md, report.csv, accuracy_vs_macs.png and
accuracy_vs_size.png. A requested baseline without a run comes from the zoo's reference runs
when the first run was trained on the zoo's data (`nas_kws.zoo`), else is trained with its recipe
(`train_missing`) or listed as missing.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from nas_kws.config import ExperimentConfig, default_config_for, load_config, to_dict
from nas_kws.fileio import write_csv, write_text
from nas_kws.plots import pyplot, save_figure
from nas_kws.report_rows import FAMILIES, PTQ_DEFAULT_SCHEME, Row, collect, family_of, read_run
from nas_kws.runs import RunDir
from nas_kws.train import train_experiment
from nas_kws.zoo import reference_runs

MARKDOWN, CSV, MACS_PLOT, SIZE_PLOT = ("report.md", "report.csv", "accuracy_vs_macs.png",
                                      "accuracy_vs_size.png")
REPORT_FILES = (MARKDOWN, CSV, MACS_PLOT, SIZE_PLOT)   # what `compare` writes into its folder


def train_baseline(name: str, reference_run: str | os.PathLike, out: Path,
                   epochs: int | None) -> Path:
    """Train a missing baseline with its recipe on the reference run's data and seeds."""
    ref = RunDir(reference_run).experiment()
    overrides = {f"data.{k}": v for k, v in to_dict(ref.data).items()}
    overrides.update({"model": name, "train.seed": ref.train.seed, "train.seeds": ref.train.seeds,
                      "train.epochs": epochs, "train.device": ref.train.device})
    cfg = load_config(ExperimentConfig, default_config_for(name), overrides)
    run = RunDir(out / "baselines" / name)
    train_experiment(cfg, run.path, resume=run.config_path.is_file(), progress=False)
    return run.path


# --- outputs -------------------------------------------------------------------------------

MAIN_COLUMNS = ["model", "family", "runs", "seeds", "params", "MACs", "size_fp32_KiB",
                "size_8bit_KiB", "size_4bit_KiB", "flash_KiB", "sram_KiB", "fp32_acc",
                "fp32_acc_std", "onnx_fp32_ms", "onnx_int8_ms", "tflite_int8_ms",
                "tflite_sram_KiB", "note"]
LATENCY_START = MAIN_COLUMNS.index("onnx_fp32_ms")   # quantized accuracies go just before


def columns(rows: list[Row]) -> list[str]:
    """The CSV's: the main ones with every quantized accuracy (and its `_std` over seeds where
    one exists) before the latencies."""
    quant = sorted(set().union(*(r.quant for r in rows)), key=lambda k: (k[0] != "P", k))
    spread = set().union(*(r.quant_std for r in rows))
    quant = [c for k in quant for c in (k, f"{k}_std") if c == k or k in spread]
    return [*MAIN_COLUMNS[:LATENCY_START], *quant, *MAIN_COLUMNS[LATENCY_START:]]


def table(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        values: dict[str, Any] = {
            "model": r.label, "family": r.family, "runs": len(r.runs), "seeds": r.seeds,
            "params": r.params, "MACs": r.macs, "size_fp32_KiB": r.size_kib(32),
            "size_8bit_KiB": r.size_kib(8), "size_4bit_KiB": r.size_kib(4),
            "flash_KiB": r.kib("flash"), "sram_KiB": r.kib("sram"),
            "tflite_sram_KiB": r.kib("tflite_sram"), "fp32_acc": r.acc,
            "fp32_acc_std": r.acc_std, "onnx_fp32_ms": r.latency_ms.get("fp32"),
            "onnx_int8_ms": r.latency_ms.get("int8"),
            "tflite_int8_ms": r.latency_ms.get("tflite"), "note": r.note, **r.quant,
            **{f"{k}_std": std for k, std in r.quant_std.items()}}
        if r.weight_bits != 32:
            values["note"] = (values["note"] + f" quantized run: accuracy at {r.weight_bits}-bit "
                              "weights").strip()
        out.append(values)
    return out


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if key.endswith("KiB"):
            return f"{value:.2f}"
        if key.endswith("_ms"):
            return f"{value:.3f}"
        return f"{100 * value:.2f}"  # every other float column is an accuracy
    if key in ("params", "MACs"):
        return f"{value:,}"
    return str(value)


def md_table(keys: list[str], body: list[dict[str, Any]]) -> list[str]:
    """Markdown lines of a table: floats are accuracies shown in %, but for `*KiB` and `*_ms`
    columns; `params` and `MACs` get thousands separators; None is `-`."""
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(k, v.get(k)) for k in keys) + " |" for v in body]


def _with_spread(value: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    """A table row whose `keys` accuracies read `mean +- std` where a std exists."""
    return {**value, **{k: f"{_fmt(k, value[k])} +- {_fmt(k, value[f'{k}_std'])}" for k in keys
                        if value.get(f"{k}_std") is not None}}


def markdown(rows: list[Row], runs: list[str]) -> str:
    twins = sorted({k for r in rows for k in r.quant if not k.startswith("PTQ")})
    body = [_with_spread(value, twins) for value in table(rows)]
    main = [*MAIN_COLUMNS[:LATENCY_START], *twins, *MAIN_COLUMNS[LATENCY_START:]]
    lines = ["# nas-kws comparison", "",
             "Test accuracy in % (best-validation checkpoint); `fp32_acc_std` is the std over "
             "runs/seeds. QAT / calibrate w*W*a*A*: Brevitas twin with *W*-bit weights and *A*-bit "
             "activations, fine-tuned or calibrated only (mean +- std over runs/seeds). Sizes are "
             "weights only (params x bits). "
             "flash / sram: a full-integer deployment's int8 weights + int32 biases + scales and "
             "its peak of int8 tensors alive at once (`nas-kws profile`); tflite_sram: the same "
             "walk on the exported .tflite graph. Latency: onnxruntime (and LiteRT) median per "
             "clip, batch 1, 1 thread.", "",
             *md_table(main, body)]
    rounded = [k for r in rows for k in r.quant if k.startswith("PTQ") and k != "PTQ fp32"]
    if rounded:
        schemes = sorted({k.partition(" ")[2] or PTQ_DEFAULT_SCHEME for k in rounded})
        bits = sorted({int(k[3:].partition(" ")[0]) for k in rounded}, reverse=True)
        ptq_rows = []
        for r in rows:
            for scheme in schemes:
                suffix = "" if scheme == PTQ_DEFAULT_SCHEME else f" {scheme}"
                accs = {f"{b} bits": r.quant.get(f"PTQ{b}{suffix}") for b in bits}
                if any(v is not None for v in accs.values()):
                    ptq_rows.append({"model": r.label, "scheme": scheme,
                                     "fp32": r.quant.get("PTQ fp32"), **accs})
        lines += ["", "## Post-training rounding (batch norm folded, every conv and linear)", "",
                  "`fp32`: the float net in the same evaluation pass as the rounded ones.", "",
                  *md_table(["model", "scheme", "fp32", *(f"{b} bits" for b in bits)], ptq_rows)]
    lines += ["", f"![accuracy vs MACs]({MACS_PLOT})", f"![accuracy vs size]({SIZE_PLOT})", "",
              "Runs read:", ""]
    lines += [f"- `{run}`" for run in runs]
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], out: Path) -> list[Path]:
    """Accuracy vs MACs and vs weight size: families as curves, other nets as labelled points;
    quantized variants as extra points at their weight width on the size plot."""
    plt = pyplot()
    measured = [r for r in rows if r.acc is not None and r.macs and r.params]
    paths = []
    for name, xlabel, x_of in ((MACS_PLOT, "MACs per clip", lambda r: r.macs),
                               (SIZE_PLOT, "weight size (KiB)",
                                lambda r: r.size_kib(r.weight_bits))):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for family in FAMILIES:
            members = sorted((r for r in measured if r.family == family and not r.derived),
                             key=x_of)
            if members:
                ax.errorbar([x_of(r) for r in members], [100 * r.acc for r in members],
                            yerr=[100 * (r.acc_std or 0) for r in members], marker="o",
                            capsize=3, label=f"{family} (fp32)")
                for r in members:
                    ax.annotate(r.label, (x_of(r), 100 * r.acc), fontsize=7,
                                textcoords="offset points", xytext=(4, -10))
        for r in measured:
            if r.family in FAMILIES and not r.derived:
                continue
            ax.errorbar([x_of(r)], [100 * r.acc], yerr=[100 * (r.acc_std or 0)], marker="*",
                        markersize=11, linestyle="none", capsize=3, label=r.label)
        if name == SIZE_PLOT:
            for r in measured:
                pts = [(r.params * r.quant_bits[k] / 8 / 1024, 100 * acc)
                       for k, acc in r.quant.items() if k.startswith(("QAT", "calibrate"))]
                if pts:
                    ax.scatter(*zip(*pts), marker="x", s=30, label=f"{r.label} quantized")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(save_figure(fig, out / name))
    return paths


def compare(runs: list[str | os.PathLike], out: str | os.PathLike,
            baselines: list[str] | None = None,
            train_missing: bool = False, baseline_epochs: int | None = None) -> list[Row]:
    """Read the runs (training missing baselines when asked) and write the report to `out`."""
    out = Path(out)
    if not runs:
        raise ValueError("compare: give at least one run directory")
    runs = [str(r) for r in runs]
    rows = collect(runs)
    for name in baselines or []:
        if any(r.label == name for r in rows):
            continue
        reference, note = reference_runs(name, runs[0])
        if reference:
            runs += map(str, reference)
            rows += collect(reference)
            rows[-1].note = note
        elif train_missing:
            run_dir = train_baseline(name, runs[0], out, baseline_epochs)
            runs.append(str(run_dir))
            row = read_run(run_dir)[1]
            if baseline_epochs is not None:
                row.note = f"trained here with its recipe for {baseline_epochs} epochs"
            rows.append(row)
        else:
            rows.append(Row(label=name, family=family_of(name), runs=[], weight_bits=32,
                            note=f"missing: no run given (not trained){note}"))
    rows.sort(key=lambda r: (r.family, r.macs or 0, r.label))
    write_text(out / MARKDOWN, markdown(rows, runs))
    write_csv(out / CSV, columns(rows), table(rows))
    plot(rows, out)
    return rows
