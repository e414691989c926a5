"""The comparison's rows, read from run directories: one `Row` per net, runs of the same net
(seeds, repeats) merged into mean +- std. Every number comes from a run's own files:
metrics.json, quant/ptq.json, quant/<method>_<tag>/metrics.json and the exports' latency files
(the layout is `nas_kws.runs`)."""
from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass, field
from typing import Any

from nas_kws.fileio import read_json
from nas_kws.quant.derived import base_name
from nas_kws.quant.rounding import RoundingScheme
from nas_kws.runs import RunDir, latency_path

PTQ_DEFAULT_SCHEME = RoundingScheme(8).name   # `nas-kws quantize ptq` without scheme flags
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
    quant_std: dict[str, float] = field(default_factory=dict)  # column -> std over runs/seeds
    quant_bits: dict[str, int] = field(default_factory=dict)   # column -> weight bits (32: float)
    latency_ms: dict[str, float] = field(default_factory=dict)  # fp32/int8/tflite -> median ms
    memory_bytes: dict[str, int] = field(default_factory=dict)  # flash/sram/tflite_sram
    derived: bool = False       # compressed or quantized: a point, never part of a family curve
    note: str = ""

    def size_kib(self, bits: int) -> float | None:
        return None if self.params is None else self.params * bits / 8 / 1024

    def kib(self, memory: str) -> float | None:
        value = self.memory_bytes.get(memory)
        return None if value is None else value / 1024


def family_of(name: str) -> str:
    return next((f for f in FAMILIES if name.startswith(f)), "other")


def describe(spec: dict[str, Any]) -> tuple[str, str, int]:
    """(label, family, weight bits) of a model spec, derived ones included."""
    name = base_name(spec)
    root = spec
    while "base" in root:
        root = root["base"]
    family = "searched" if "genotype" in root else family_of(name)
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


def _spec_of(run: RunDir, metrics: dict[str, Any]) -> dict[str, Any]:
    """The model spec: metrics.json's, or a seed folder's for a multi-seed summary."""
    if "model" in metrics:
        return metrics["model"]
    for sub in metrics.get("runs", []):
        seed_run = RunDir(run.path / sub)
        if seed_run.finished:
            return seed_run.read_metrics().get("model", {})
    raise ValueError(f"{run.metrics_path}: no model spec ('model') to name the net by")


def _quant_results(run: RunDir) -> tuple[dict[str, float], dict[str, int]]:
    accs: dict[str, float] = {}
    bits: dict[str, int] = {}
    if run.ptq_path.is_file():
        for row in read_json(run.ptq_path)["rows"]:
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
    for twin in run.quant_runs():
        metrics = twin.read_metrics()
        method, _, tag = twin.path.name.partition("_")
        name = f"{method.upper() if method == 'qat' else method} {tag}"
        if "test_best_acc" in metrics:
            accs[name] = metrics["test_best_acc"]
            bits[name] = metrics["model"]["quant"]["weight_bits"]
    return accs, bits


def _latencies(run: RunDir) -> dict[str, float]:
    """Median ms of the run's own exports, int8 falling back to a quantized variant's export."""
    found: dict[str, float] = {}
    for kind in ("fp32", "int8", "tflite"):
        for sub in (run, *run.quant_runs()):
            path = latency_path(sub.export.model_path(kind))
            if path.is_file():
                found[kind] = read_json(path)["median_ms"]
                break
    return found


def _memory(run: RunDir, spec: dict[str, Any]) -> dict[str, int]:
    """MCU flash and peak SRAM of the float net (a quantized twin: of its base), profiled from
    the spec; the SRAM walk on the exported .tflite when `export.json` has one."""
    from nas_kws.profiling import profile_model
    from nas_kws.rebuild import model_from_spec

    float_spec = spec["base"] if "quant" in spec else spec
    classes = run.classes_path.read_text().splitlines() if run.classes_path.is_file() else []
    profile = profile_model(model_from_spec(float_spec, len(classes) or 12))
    found = {"flash": profile.flash_bytes, "sram": profile.peak_sram_bytes}
    if run.export.summary_path.is_file():
        tflite = read_json(run.export.summary_path).get("tflite", {})
        if "peak_sram_bytes" in tflite:
            found["tflite_sram"] = tflite["peak_sram_bytes"]
    return found


def read_run(path: str | os.PathLike) -> tuple[str, Row]:
    """(grouping key, row) of one run directory."""
    run = RunDir(path)
    if not run.finished:
        raise FileNotFoundError(f"{run.metrics_path}: not a finished run (no metrics.json)")
    metrics = run.read_metrics()
    spec = _spec_of(run, metrics)
    label, family, bits = describe(spec)
    if "test_best_acc" in metrics:
        acc = metrics["test_best_acc"]
    elif "test_best_acc_mean" in metrics:
        acc = metrics["test_best_acc_mean"]
    else:
        raise ValueError(f"{run.metrics_path}: no test_best_acc or test_best_acc_mean")
    quant, quant_bits = _quant_results(run)
    row = Row(label=label, family=family, runs=[str(path)], weight_bits=bits,
              derived="base" in spec, params=metrics.get("params"), macs=metrics.get("macs"),
              acc=acc, acc_std=metrics.get("test_best_acc_std"),
              seeds=len(metrics.get("seeds", [0])), quant=quant, quant_bits=quant_bits,
              latency_ms=_latencies(run), memory_bytes=_memory(run, spec))
    return json.dumps(spec, sort_keys=True), row


def merge(rows: list[Row]) -> Row:
    """Runs of the same net: mean of every accuracy and latency, and the std across runs of
    each accuracy that two or more runs hold."""
    if len(rows) == 1:
        return rows[0]
    first = rows[0]
    accs = [r.acc for r in rows]
    quant_keys = sorted(set().union(*(r.quant for r in rows)))
    quant = {k: [r.quant[k] for r in rows if k in r.quant] for k in quant_keys}
    latency_keys = sorted(set().union(*(r.latency_ms for r in rows)))
    return Row(label=first.label, family=first.family, runs=[p for r in rows for p in r.runs],
               weight_bits=first.weight_bits, derived=first.derived, params=first.params,
               macs=first.macs, acc=statistics.mean(accs), acc_std=statistics.stdev(accs),
               seeds=sum(r.seeds for r in rows),
               quant={k: statistics.mean(v) for k, v in quant.items()},
               quant_std={k: statistics.stdev(v) for k, v in quant.items() if len(v) > 1},
               quant_bits={k: next(r.quant_bits[k] for r in rows if k in r.quant_bits)
                           for k in quant_keys},
               latency_ms={k: statistics.mean([r.latency_ms[k] for r in rows if k in r.latency_ms])
                           for k in latency_keys},
               memory_bytes=first.memory_bytes)


def collect(runs: list[str | os.PathLike]) -> list[Row]:
    """One row per distinct net (model spec), in the order the runs first name them."""
    groups: dict[str, list[Row]] = {}
    for run in runs:
        key, row = read_run(run)
        groups.setdefault(key, []).append(row)
    return [merge(rows) for rows in groups.values()]
