"""onnxruntime (or, for a .tflite file, LiteRT) latency per clip (batch 1, one thread, median
after warm-up) and peak memory.

The measurement runs in a fresh Python process (`python -m nas_kws.quant.latency MODEL ...`)
that imports numpy and the runtime only (onnxruntime, or ai-edge-litert with
XNNPACK). `peak_rss_mb` is the process's resident-memory peak
during session creation and the runs (weights, arena, activations) above its level after those
imports: the peak is reset after the imports through /proc/self/clear_refs (Linux), else it is
the process's lifetime peak, import included.
"""
from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


def session(path: str | Path, threads: int = 1, optimized_path: str | Path | None = None):
    """An onnxruntime CPU session: `threads` intra-op threads, sequential execution; with
    `optimized_path`, the graph after onnxruntime's (extended) optimizations is saved there."""
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if optimized_path is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Latency:
    model: str
    median_ms: float
    p90_ms: float
    min_ms: float
    runs: int
    warmup: int
    threads: int
    peak_rss_mb: float
    file_kb: float

    def to_dict(self) -> dict:
        return asdict(self)


def _proc_status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(key)


def _reset_peak() -> float:
    """Reset the resident-memory peak; returns the current level (MB)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return _proc_status_mb("VmRSS")
    except OSError:
        return 0.0


def _peak_mb() -> float:
    try:
        return _proc_status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _onnx_runner(path: str, threads: int):
    import numpy as np

    sess = session(path, threads)
    graph_input = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in graph_input.shape]
    feed = {graph_input.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
    return lambda: sess.run(None, feed)


def _tflite_runner(path: str, threads: int):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=path, num_threads=threads)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
    return interpreter.invoke


def _measure(path: str, runs: int, warmup: int, threads: int) -> dict:
    """Runs in the child process, which imports numpy and the runtime only (never torch)."""
    if path.endswith(".tflite"):
        from ai_edge_litert import interpreter  # noqa: F401  (part of the baseline)
        baseline = _reset_peak()
        run = _tflite_runner(path, threads)
    else:
        import onnxruntime  # noqa: F401  (its import is part of the baseline, not of the model)
        baseline = _reset_peak()
        run = _onnx_runner(path, threads)
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))],
            "min_ms": times[0], "peak_rss_mb": _peak_mb() - baseline}


def measure_latency(path: str | Path, runs: int = 300, warmup: int = 30,
                    threads: int = 1) -> Latency:
    """Latency of one clip through the ONNX or TFLite model at `path`, in a separate process."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model not found")
    if runs < 1 or warmup < 0:
        raise ValueError(f"runs/warmup: expected runs >= 1 and warmup >= 0, got {runs}/{warmup}")
    child = subprocess.run([sys.executable, "-m", __name__, str(path), str(runs), str(warmup),
                            str(threads)], capture_output=True, text=True)
    if child.returncode != 0:
        raise RuntimeError(f"{path}: latency measurement failed: {child.stderr.strip()[-2000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    return Latency(model=str(path), runs=runs, warmup=warmup, threads=threads,
                   file_kb=path.stat().st_size / 1024, **result)


def format_latency(lat: Latency) -> str:
    return (f"{lat.model}: median {lat.median_ms:.3f} ms, p90 {lat.p90_ms:.3f} ms, "
            f"min {lat.min_ms:.3f} ms per clip ({lat.runs} runs after {lat.warmup} warm-up, "
            f"{lat.threads} thread); peak memory +{lat.peak_rss_mb:.1f} MB; "
            f"file {lat.file_kb:.1f} KiB")


if __name__ == "__main__":
    model, n_runs, n_warmup, n_threads = sys.argv[1], *map(int, sys.argv[2:5])
    print(json.dumps(_measure(model, n_runs, n_warmup, n_threads)))
