"""Per-clip latency of one model several ways, batch 1, one thread: PyTorch eager fp32,
onnxruntime fp32, onnxruntime int8 as Brevitas QCDQ (integer convs, float element-wise work in
between), onnxruntime int8 all-integer (nas_kws.quant.integer: QLinear kernels for every op) and,
with the tflite extra, the full-integer .tflite in LiteRT (XNNPACK). Each file is measured
`--rounds` times in interleaved order (fp32, QCDQ, integer, tflite, fp32, ...) so background load
hits all alike; the table gives the median of the rounds and the ratios to onnxruntime fp32 of
the same round. Figures come from `nas_kws.quant.latency` (median after warm-up, in a fresh
process). Weights are untrained: latency does not depend on their values.

    python benchmarks/quant_latency.py [--models bcresnet1,bcresnet8,GENOTYPE.yaml] [--runs 300]
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import torch

from nas_kws.models import create_model
from nas_kws.quant.export import export_fp32, export_int8, export_integer
from nas_kws.quant.fold import example_input
from nas_kws.quant.integer import integer_net
from nas_kws.quant.latency import measure_latency
from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin

DEFAULT = "bcresnet1,bcresnet8,benchmarks/results/hybrid_6m_searched_genotype.yaml"


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


def exports(name: str, tmp: Path) -> dict[str, Path]:
    model = create_model(name).eval()
    calib = example_input(model, batch=16, seed=1)
    classes = [str(i) for i in range(model.num_classes)]
    twin = quant_twin(model, QuantSpec(8, 8))
    calibrate(twin, [calib])
    net = integer_net(model, [calib])
    files = {"fp32": export_fp32(model, tmp / "fp32.onnx", classes),
             "qcdq": export_int8(twin, tmp / "qcdq.onnx", classes),
             "integer": export_integer(net, tmp / "integer.onnx", classes)}
    if importlib.util.find_spec("litert_torch"):
        from nas_kws.quant.tflite import export_tflite

        files["tflite"] = export_tflite(net, tmp / "model.tflite")
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--models", default=DEFAULT)
    p.add_argument("--runs", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(1)
    kinds = ["fp32", "qcdq", "integer", "tflite"]
    print(f"{'model':28s} {'torch':>8s} " + " ".join(f"{k + ' ms':>11s}" for k in kinds)
          + f" {'qcdq/fp32':>9s} {'int/fp32':>9s} {'tfl/fp32':>9s}")
    for name in args.models.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            files = exports(name, Path(tmp))
            times: dict[str, list[float]] = {k: [] for k in files}
            for _ in range(args.rounds):
                for kind, path in files.items():
                    times[kind].append(measure_latency(path, args.runs).median_ms)
        model = create_model(name)
        eager = torch_median_ms(model, example_input(model, batch=1), max(20, args.runs // 5))
        median = {k: statistics.median(v) for k, v in times.items()}
        ratio = {k: statistics.median(a / f for a, f in zip(v, times["fp32"]))
                 for k, v in times.items()}
        cells = " ".join(f"{median[k]:9.3f}ms" if k in median else f"{'-':>11s}" for k in kinds)
        ratios = " ".join(f"{ratio[k]:8.2f}x" if k in ratio else f"{'-':>9s}"
                          for k in ("qcdq", "integer", "tflite"))
        print(f"{Path(name).stem[:28]:28s} {eager:6.3f}ms {cells} {ratios}", flush=True)


if __name__ == "__main__":
    main()
