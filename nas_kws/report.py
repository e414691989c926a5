"""`nas-kws compare RUN... [--baselines ...]`: every net side by side, from the runs' own files.

Per model: parameters, MACs, weight size at 32 / 8 / 4 bits, FP32 test accuracy (mean +- std
when runs or seeds repeat a model), accuracy after each quantization the run holds
(quant/ptq.json, quant/<method>_<tag>/metrics.json) and ONNX latency (export/*.latency.json).
Writes report.md, report.csv, accuracy_vs_macs.png and accuracy_vs_size.png. Every number is
read from a run directory; a requested baseline without a run is trained with its recipe
(--train_missing) or listed as missing.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas_kws.fileio import atomic_write, write_text

PTQ_DEFAULT_SCHEME = "per-channel symmetric max-abs"
FAMILIES = ("bcresnet", "dscnn")


@dataclass
class Row:
    label: str
    family: str                 # bcresnet | dscnn | searched | other
    runs: list[str]
    weight_bits: int            # 32, or the twin's weight width for a quantized run
    params: int | None = None
    macs: int | None = None
    acc: float | None = None    # test accuracy (mean over runs / seeds)
    acc_std: float | None = None
    seeds: int = 0
    quant: dict[str, float] = field(default_factory=dict)      # column -> test accuracy
    quant_bits: dict[str, int] = field(default_factory=dict)   # column -> weight bits (32: float)
    latency_ms: dict[str, float] = field(default_factory=dict)  # fp32 / int8 -> median ms
    derived: bool = False       # compressed or quantized: a point, never part of a family curve
    note: str = ""

    def size_kib(self, bits: int) -> float | None:
        return None if self.params is None else self.params * bits / 8 / 1024


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def _spec_of(run: Path, metrics: dict[str, Any]) -> dict[str, Any]:
    """The model spec: metrics.json's, or a seed folder's for a multi-seed summary."""
    if "model" in metrics:
        return metrics["model"]
    for sub in metrics.get("runs", []):
        seed_metrics = run / sub / "metrics.json"
        if seed_metrics.is_file():
            return _read_json(seed_metrics).get("model", {})
    raise ValueError(f"{run}/metrics.json: no model spec ('model') to name the net by")


def describe(spec: dict[str, Any]) -> tuple[str, str, int]:
    """(label, family, weight bits) of a model spec, derived ones included."""
    from nas_kws.quant.derived import base_name

    name = base_name(spec)
    root = spec
    while "base" in root:
        root = root["base"]
    family = "searched" if "genotype" in root else next(
        (f for f in FAMILIES if name.startswith(f)), "other")
    suffix, bits, node = [], 32, spec
    while "base" in node:
        if "svd_ranks" in node:
            suffix.append("svd")
        if "quant" in node:
            q = node["quant"]
            suffix.append(f"w{q['weight_bits']}a{q['act_bits']}")
            bits = q["weight_bits"]
        node = node["base"]
    return " ".join([name, *reversed(suffix)]), family, bits


def _quant_results(run: Path) -> tuple[dict[str, float], dict[str, int]]:
    accs: dict[str, float] = {}
    bits: dict[str, int] = {}
    ptq = run / "quant" / "ptq.json"
    if ptq.is_file():
        for row in _read_json(ptq)["rows"]:
            acc = next((v for k, v in row.items() if k.endswith("_acc")), None)
            if acc is None:
                continue
            if row["scheme"] == "fp32":  # the float net, evaluated in the same pass
                name = "PTQ fp32"
            elif row["scheme"] == PTQ_DEFAULT_SCHEME:
                name = f"PTQ{row['bits']}"
            else:
                name = f"PTQ{row['bits']} {row['scheme']}"
            accs[name], bits[name] = acc, row["bits"]
    for metrics_path in sorted((run / "quant").glob("*/metrics.json")):
        metrics = _read_json(metrics_path)
        method, _, tag = metrics_path.parent.name.partition("_")
        name = f"{method.upper() if method == 'qat' else method} {tag}"
        if "test_best_acc" in metrics:
            accs[name] = metrics["test_best_acc"]
            bits[name] = metrics["model"]["quant"]["weight_bits"]
    return accs, bits


def _latencies(run: Path) -> dict[str, float]:
    """Median ms of the run's own exports, int8 falling back to a quantized variant's export."""
    found: dict[str, float] = {}
    for kind in ("fp32", "int8"):
        own = run / "export" / f"model_{kind}.latency.json"
        candidates = [own] + sorted(run.glob(f"quant/*/export/model_{kind}.latency.json"))
        for path in candidates:
            if path.is_file():
                found[kind] = _read_json(path)["median_ms"]
                break
    return found


def read_run(run: str | Path) -> tuple[str, Row]:
    """(grouping key, row) of one run directory."""
    run = Path(run)
    metrics_path = run / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{metrics_path}: not a finished run (no metrics.json)")
    metrics = _read_json(metrics_path)
    spec = _spec_of(run, metrics)
    label, family, bits = describe(spec)
    if "test_best_acc" in metrics:
        accs = [metrics["test_best_acc"]]
    elif "test_best_acc_mean" in metrics:
        accs = [metrics["test_best_acc_mean"]]
    else:
        raise ValueError(f"{metrics_path}: no test_best_acc or test_best_acc_mean")
    quant, quant_bits = _quant_results(run)
    row = Row(label=label, family=family, runs=[str(run)], weight_bits=bits, derived="base" in spec,
              params=metrics.get("params"), macs=metrics.get("macs"), acc=accs[0],
              acc_std=metrics.get("test_best_acc_std"), seeds=len(metrics.get("seeds", [0])),
              quant=quant, quant_bits=quant_bits, latency_ms=_latencies(run))
    return json.dumps(spec, sort_keys=True), row


def _mean(values: list[float]) -> float:
    return statistics.mean(values)


def merge(rows: list[Row]) -> Row:
    """Runs of the same net: mean (and std across runs) of every accuracy and latency."""
    if len(rows) == 1:
        return rows[0]
    first = rows[0]
    accs = [r.acc for r in rows]
    quant_keys = sorted(set().union(*(r.quant for r in rows)))
    return Row(label=first.label, family=first.family, runs=[p for r in rows for p in r.runs],
               weight_bits=first.weight_bits, derived=first.derived, params=first.params,
               macs=first.macs, acc=_mean(accs), acc_std=statistics.stdev(accs), seeds=sum(r.seeds for r in rows),
               quant={k: _mean([r.quant[k] for r in rows if k in r.quant]) for k in quant_keys},
               quant_bits={k: next(r.quant_bits[k] for r in rows if k in r.quant_bits)
                           for k in quant_keys},
               latency_ms={k: _mean([r.latency_ms[k] for r in rows if k in r.latency_ms])
                           for k in sorted(set().union(*(r.latency_ms for r in rows)))})


def collect(runs: list[str | Path]) -> list[Row]:
    groups: dict[str, list[Row]] = {}
    for run in runs:
        key, row = read_run(run)
        groups.setdefault(key, []).append(row)
    return [merge(rows) for rows in groups.values()]


def train_baseline(name: str, reference_run: str | Path, out: Path, epochs: int | None) -> Path:
    """Train a missing baseline with its recipe on the reference run's data and seeds."""
    from nas_kws.config import ExperimentConfig, default_config_for, load_config, to_dict
    from nas_kws.quant.commands import run_config
    from nas_kws.train import train_experiment

    ref = run_config(reference_run)
    overrides = {f"data.{k}": v for k, v in to_dict(ref.data).items()}
    overrides.update({"model": name, "train.seed": ref.train.seed, "train.seeds": ref.train.seeds,
                      "train.epochs": epochs, "train.device": ref.train.device})
    cfg = load_config(ExperimentConfig, default_config_for(name), overrides)
    run_dir = out / "baselines" / name
    train_experiment(cfg, run_dir, resume=(run_dir / "config.yaml").is_file(), progress=False)
    return run_dir


# --- outputs -------------------------------------------------------------------------------

def columns(rows: list[Row]) -> list[str]:
    quant = sorted(set().union(*(r.quant for r in rows)), key=lambda k: (k[0] != "P", k))
    return [*MAIN_COLUMNS[:-3], *quant, *MAIN_COLUMNS[-3:]]


MAIN_COLUMNS = ["model", "family", "runs", "seeds", "params", "MACs", "size_fp32_KiB",
                "size_8bit_KiB", "size_4bit_KiB", "fp32_acc", "fp32_acc_std", "onnx_fp32_ms",
                "onnx_int8_ms", "note"]


def table(rows: list[Row]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        values: dict[str, Any] = {
            "model": r.label, "family": r.family, "runs": len(r.runs), "seeds": r.seeds,
            "params": r.params, "MACs": r.macs, "size_fp32_KiB": r.size_kib(32),
            "size_8bit_KiB": r.size_kib(8), "size_4bit_KiB": r.size_kib(4), "fp32_acc": r.acc,
            "fp32_acc_std": r.acc_std, "onnx_fp32_ms": r.latency_ms.get("fp32"),
            "onnx_int8_ms": r.latency_ms.get("int8"), "note": r.note, **r.quant}
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


def _md_table(keys: list[str], body: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    return lines + ["| " + " | ".join(_fmt(k, v.get(k)) for k in keys) + " |" for v in body]


def markdown(rows: list[Row], runs: list[str]) -> str:
    body = table(rows)
    twins = sorted({k for r in rows for k in r.quant if not k.startswith("PTQ")})
    main = [*MAIN_COLUMNS[:11], *twins, *MAIN_COLUMNS[11:]]
    lines = ["# nas-kws comparison", "",
             "Test accuracy in % (best-validation checkpoint); `fp32_acc_std` is the std over "
             "runs/seeds. QAT / calibrate w*W*a*A*: Brevitas twin with *W*-bit weights and *A*-bit "
             "activations, fine-tuned or calibrated only. Sizes are weights only (params x bits). "
             "Latency: onnxruntime median per clip, batch 1, 1 thread.", "",
             *_md_table(main, body)]
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
                  *_md_table(["model", "scheme", "fp32", *(f"{b} bits" for b in bits)], ptq_rows)]
    lines += ["", "![accuracy vs MACs](accuracy_vs_macs.png)",
              "![accuracy vs size](accuracy_vs_size.png)", "", "Runs read:", ""]
    lines += [f"- `{run}`" for run in runs]
    return "\n".join(lines) + "\n"


def write_csv(path: Path, rows: list[Row]) -> None:
    keys = columns(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, extrasaction="ignore")
    writer.writeheader()
    for values in table(rows):
        writer.writerow({k: ("" if values.get(k) is None else values.get(k)) for k in keys})
    write_text(path, buffer.getvalue())


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)


def plot(rows: list[Row], out: Path) -> list[Path]:
    """Accuracy vs MACs and vs weight size: families as curves, other nets as labelled points;
    quantized variants as extra points at their weight width on the size plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.acc is not None and r.macs and r.params]
    paths = []
    for name, xlabel, x_of in (("accuracy_vs_macs.png", "MACs per clip", lambda r: r.macs),
                               ("accuracy_vs_size.png", "weight size (KiB)",
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
        if name == "accuracy_vs_size.png":
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
        _save(fig, out / name)
        paths.append(out / name)
    return paths


def compare(runs: list[str | Path], out: str | Path, baselines: list[str] | None = None,
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
        if train_missing:
            run_dir = train_baseline(name, runs[0], out, baseline_epochs)
            runs.append(str(run_dir))
            row = read_run(run_dir)[1]
            if baseline_epochs is not None:
                row.note = f"trained here with its recipe for {baseline_epochs} epochs"
            rows.append(row)
        else:
            rows.append(Row(label=name, family=next((f for f in FAMILIES if name.startswith(f)),
                                                    "other"),
                            runs=[], weight_bits=32, note="missing: no run given (not trained)"))
    rows.sort(key=lambda r: (r.family, r.macs or 0, r.label))
    write_text(out / "report.md", markdown(rows, runs))
    write_csv(out / "report.csv", rows)
    plot(rows, out)
    return rows


def cmd_compare(args: argparse.Namespace) -> int:
    baselines = [b for b in (args.baselines or "").split(",") if b]
    rows = compare(args.runs, args.out, baselines, args.train_missing, args.baseline_epochs)
    print((Path(args.out) / "report.md").read_text())
    print(f"written: {args.out}/report.md, report.csv, accuracy_vs_macs.png, accuracy_vs_size.png "
          f"({len(rows)} models)")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare", help="table (Markdown, CSV) and plots of runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN")
    p.add_argument("--baselines", help="models that must appear, e.g. bcresnet1,bcresnet8,dscnn_s")
    p.add_argument("--train_missing", action="store_true",
                   help="train missing baselines with their recipes on the first run's data and seeds")
    p.add_argument("--baseline_epochs", type=int, help="epochs for baselines trained here "
                                                       "(default: the recipe's)")
    p.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    p.set_defaults(func=cmd_compare)
