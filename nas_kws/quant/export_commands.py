"""`nas-kws export` and `nas-kws bench latency`: deployable files of a run and their speed.
    RUN/export/model_{fp32,int8}.onnx       with export.json (accuracy, parity, kernels)
    RUN/export/model_int8.tflite            full-integer TFLite (--tflite), strings stripped
    <file>.latency.json                     next to each benchmarked file, e.g. model_int8.onnx
A float run's int8 files come from one all-integer W8A8 reference (nas_kws.quant.integer), which
their parity is checked against; a quantized run (a Brevitas twin) exports its own QCDQ graph.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch
from torch import nn

from nas_kws.config import check_at_least
from nas_kws.errors import NasKwsError
from nas_kws.fileio import write_json
from nas_kws.runs import ExportDir, RunDir, latency_path


def _logits(model: nn.Module, feats: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x) for x in feats.split(250)])


def _checked(reference: torch.Tensor, exported: Any, labels: torch.Tensor) -> dict[str, Any]:
    """Parity of an export's logits with its PyTorch reference, and its test accuracy."""
    from nas_kws.quant.export import prediction_parity

    exported = torch.as_tensor(exported)
    return {"parity": prediction_parity(reference, exported),
            "accuracy": float((exported.argmax(1) == labels).float().mean())}


def _export_integer(model: nn.Module, store, args: argparse.Namespace, out: ExportDir,
                    classes: list[str], feats: torch.Tensor,
                    labels: torch.Tensor) -> dict[str, Any]:
    from nas_kws.quant.export import export_integer, kernel_summary, onnx_logits
    from nas_kws.quant.integer import integer_logits, integer_net
    from nas_kws.quant.precomputed import split_features

    calib, _ = split_features(store, model.feature_config, "train", limit=args.calib_clips)
    net = integer_net(model, calib.split(100))
    reference = integer_logits(net, feats)
    results: dict[str, Any] = {"reference": {
        "quant": net.spec["integer"], "fp32_accuracy": float((_logits(model, feats).argmax(1)
                                                              == labels).float().mean()),
        "int8_accuracy": float((reference.argmax(1) == labels).float().mean())}}
    if args.int8:
        path = export_integer(net, out.onnx_path("int8"), classes)
        results["int8"] = {"path": str(path), "quant": net.spec["integer"],
                           **_checked(reference, onnx_logits(path, feats), labels),
                           "kernels": kernel_summary(path)}
    if args.tflite:
        from nas_kws.profiling import profile_model
        from nas_kws.quant.tflite import export_tflite, tflite_logits, tflite_summary

        path = export_tflite(net, out.model_path("tflite"), keep_names=args.tflite_names)
        # the file goes into flash whole; the profiler's flash (int8 weights, int32 biases,
        # scales) is what the search bounds, kept beside it for the comparison
        results["tflite"] = {"path": str(path), "quant": net.spec["integer"],
                             **_checked(reference, tflite_logits(path, feats), labels),
                             **tflite_summary(path),
                             "profiler_flash_bytes": profile_model(model).flash_bytes}
    return results


def cmd_export(args: argparse.Namespace) -> int:
    from nas_kws.quant.derived import is_quantized
    from nas_kws.quant.export import export_fp32, export_int8, kernel_summary, onnx_logits
    from nas_kws.quant.precomputed import split_features
    from nas_kws.rebuild import load_model, open_run_data

    check_at_least(args.calib_clips, 1, "--calib_clips")
    model, features, classes = load_model(args.run_dir)
    if args.tflite and is_quantized(model.spec):
        raise NasKwsError(f"{args.run_dir}: --tflite quantizes a float run after training; this "
                          "run is a quantized twin: export its base run instead")
    out = ExportDir(args.out) if args.out else RunDir(args.run_dir).export
    store = open_run_data(args.run_dir, classes)
    feats, labels = split_features(store, features, "test", limit=args.parity_clips)
    results: dict[str, Any] = {}
    if is_quantized(model.spec):
        path = export_int8(model, out.onnx_path("int8"), classes)
        results["int8"] = {"path": str(path), "quant": model.spec["quant"],
                           **_checked(_logits(model, feats), onnx_logits(path, feats), labels),
                           "kernels": kernel_summary(path)}
    else:
        path = export_fp32(model, out.onnx_path("fp32"), classes)
        results["fp32"] = {"path": str(path), **_checked(_logits(model, feats),
                                                         onnx_logits(path, feats), labels)}
        if args.int8 or args.tflite:
            results.update(_export_integer(model, store, args, out, classes, feats, labels))
    write_json(out.summary_path, results)
    for kind, r in results.items():
        if kind == "reference":
            print(f"W8A8 reference ({r['quant']}): test accuracy {r['int8_accuracy']:.2%} "
                  f"(fp32 {r['fp32_accuracy']:.2%})")
            continue
        extra = ""
        if "kernels" in r:
            extra = (f", {r['kernels']['integer_kernels']} integer kernels, "
                     f"{r['kernels']['float_ops']} float ops")
        if "peak_sram_bytes" in r:
            extra = (f", {r['input_dtype']} in / {r['output_dtype']} out, arena >= "
                     f"{r['peak_sram_bytes'] / 1024:.1f} KiB, {r['file_kb']:.1f} KiB file of which "
                     f"{r['constant_bytes'] / 1024:.1f} KiB constants and "
                     f"{r['name_bytes'] / 1024:.1f} KiB names; profiler flash "
                     f"{r['profiler_flash_bytes'] / 1024:.1f} KiB")
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
    p = subparsers.add_parser("export", help="ONNX fp32 (and --int8 integer ONNX, --tflite) "
                                             "with parity checks")
    p.add_argument("run_dir", help="a float run (fp32, and W8A8 int8 calibrated on training "
                                   "clips with --int8 / --tflite) or a quantized run (its QCDQ "
                                   "int8)")
    p.add_argument("--int8", action="store_true",
                   help="also the all-integer W8A8 ONNX graph (QLinear kernels for every op)")
    p.add_argument("--tflite", action="store_true",
                   help="also a full-integer .tflite (needs the tflite extra), its strings "
                        "stripped for flash")
    p.add_argument("--tflite_names", action="store_true",
                   help="keep the .tflite's tensor names and signature (debugging)")
    p.add_argument("--out", help="output folder (default RUN/export)")
    p.add_argument("--parity_clips", type=int, help="test clips for the parity check (default all)")
    p.add_argument("--calib_clips", type=int, default=4000,
                   help="training clips that calibrate the W8A8 activation ranges")
    p.set_defaults(func=cmd_export)

    bench = subparsers.add_parser("bench", help="speed measurements")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="WHAT")
    p = bsub.add_parser("latency", help="onnxruntime / LiteRT latency per clip (batch 1) and "
                                        "peak memory")
    p.add_argument("models", nargs="+", metavar="MODEL.onnx|MODEL.tflite")
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--warmup", type=int, default=30)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_latency)
