"""What a finished trial measured, read from its run directories: the objectives (validation
accuracy, MACs, model size in bits) and, for the record only, test accuracy."""
from __future__ import annotations

from typing import Any

from nas_kws.runs import RunDir

FLOAT_BITS = 32


def size_bits(run: RunDir, params: int) -> int:
    """Bits to store the net's parameters: every float parameter at 32 bits; a Brevitas twin's
    conv/linear weights at their own (per-layer) widths, read back from the twin."""
    if "quant" not in run.read_metrics().get("model", {}):
        return params * FLOAT_BITS
    from nas_kws.quant.qat import layer_bits
    from nas_kws.rebuild import load_model

    twin = load_model(run.path)[0]
    widths = layer_bits(twin)
    quantized = {id(twin.get_submodule(name).weight): bits for name, (bits, _) in widths.items()}
    return sum(p.numel() * quantized.get(id(p), FLOAT_BITS) for p in twin.parameters())


def trial_measures(trained: RunDir, final: RunDir) -> dict[str, Any]:
    """`trained`: the float net's training run (MACs, parameters); `final`: the run whose net
    the trial delivers (the QAT twin when the trial quantizes, else `trained`)."""
    float_metrics, metrics = trained.read_metrics(), final.read_metrics()
    return {"valid_acc": metrics["best_valid_acc"], "macs": float_metrics["macs"],
            "params": float_metrics["params"],
            "size_bits": size_bits(final, float_metrics["params"]),
            "test_acc": metrics.get("test_best_acc")}
