"""Per-clip latency of one model four ways, batch 1, one thread: PyTorch eager fp32, the Brevitas
twin in PyTorch (what QAT trains), onnxruntime fp32 and onnxruntime int8 (QCDQ fused into
QLinearConv / QGemm). Ratios are to onnxruntime fp32, measured in the same run; onnxruntime
figures come from `nas_kws.quant.latency` (median after warm-up, in a fresh process, with its
peak memory). Weights are untrained: latency does not depend on their values.

    python benchmarks/quant_latency.py [--models bcresnet1,dscnn_s,proxyless_kws_w1] [--runs 300]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nas_kws.models import create_model
from nas_kws.quant.export import export_fp32, export_int8
from nas_kws.quant.fold import example_input
from nas_kws.quant.latency import measure_latency
from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin


@torch.no_grad()
def torch_median_ms(model: torch.nn.Module, x: torch.Tensor, runs: int) -> float:
    model.eval()
    for _ in range(5):
        model(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model(x)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default="bcresnet1,dscnn_s,proxyless_kws_w1")
    p.add_argument("--runs", type=int, default=300)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(f"{'model':20s} {'torch fp32':>11s} {'twin W8A8':>11s} {'ORT fp32':>10s} "
          f"{'ORT int8':>10s} {'int8/fp32':>9s} {'mem fp32':>9s} {'mem int8':>9s}")
    for name in args.models.split(","):
        model = create_model(name).eval()
        x = example_input(model, batch=1)
        twin = quant_twin(model, QuantSpec(8, 8))
        calibrate(twin, [example_input(model, batch=16, seed=1)])
        with tempfile.TemporaryDirectory() as tmp:
            classes = [str(i) for i in range(model.num_classes)]
            fp32 = measure_latency(export_fp32(model, Path(tmp) / "fp32.onnx", classes), args.runs)
            int8 = measure_latency(export_int8(twin, Path(tmp) / "int8.onnx", classes), args.runs)
        eager = torch_median_ms(model, x, max(20, args.runs // 5))
        fake = torch_median_ms(twin, x, max(20, args.runs // 5))
        print(f"{name:20s} {eager:9.3f}ms {fake:9.3f}ms {fp32.median_ms:8.3f}ms "
              f"{int8.median_ms:8.3f}ms {int8.median_ms / fp32.median_ms:8.2f}x "
              f"{fp32.peak_rss_mb:7.1f}MB {int8.peak_rss_mb:7.1f}MB")


if __name__ == "__main__":
    main()
