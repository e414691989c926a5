"""`nas-kws export` and `nas-kws bench latency`: ONNX files of a run and their speed.
    RUN/export/model_{fp32,int8}.onnx       with export.json (parity, kernels)
    MODEL.latency.json                      next to each benchmarked ONNX file
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas_kws.config import check_at_least
from nas_kws.fileio import write_json
from nas_kws.runs import ExportDir, RunDir, latency_path


def _parity(model: nn.Module, path: Path, feats: torch.Tensor) -> dict[str, Any]:
    from nas_kws.quant.export import onnx_logits, prediction_parity

    with torch.no_grad():
        torch_logits = torch.cat([model(x) for x in feats.split(250)])
    return prediction_parity(torch_logits, torch.from_numpy(onnx_logits(path, feats)))


def cmd_export(args: argparse.Namespace) -> int:
    from nas_kws.quant.derived import is_quantized
    from nas_kws.quant.export import export_fp32, export_int8, kernel_summary
    from nas_kws.quant.precomputed import calibrated_twin, split_features
    from nas_kws.quant.qat import QuantSpec
    from nas_kws.rebuild import load_model, open_run_data

    check_at_least(args.calib_clips, 1, "--calib_clips")
    model, features, classes = load_model(args.run_dir)
    out = ExportDir(args.out) if args.out else RunDir(args.run_dir).export
    store = open_run_data(args.run_dir, classes)
    feats, _ = split_features(store, features, "test", limit=args.parity_clips)
    results: dict[str, Any] = {}
    if is_quantized(model.spec):
        twin = model
    else:
        path = export_fp32(model, out.onnx_path("fp32"), classes)
        results["fp32"] = {"path": str(path), "parity": _parity(model, path, feats)}
        twin = calibrated_twin(model, QuantSpec(), store, args.calib_clips) if args.int8 else None
    if twin is not None:
        path = export_int8(twin, out.onnx_path("int8"), classes)
        results["int8"] = {"path": str(path), "quant": twin.spec["quant"],
                           "parity": _parity(twin, path, feats), "kernels": kernel_summary(path)}
    write_json(out.summary_path, results)
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
        write_json(latency_path(model), lat.to_dict())
        print(format_latency(lat))
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
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
