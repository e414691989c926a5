import argparse
import json

import numpy as np
import onnx
import pytest
import torch
from quant_helpers import (  # noqa: F401
    pattern_features,
    single_thread,
    tiny_genotype,
    train_on,
    train_tone_run,
)

from nas_kws.features import FeatureConfig
from nas_kws.models import create_model
from nas_kws.models.genotype import build_from_genotype
from nas_kws.quant import commands, export_commands
from nas_kws.quant.export import (
    export_fp32,
    export_int8,
    kernel_summary,
    onnx_logits,
    prediction_parity,
    read_metadata,
)
from nas_kws.quant.latency import measure_latency
from nas_kws.quant.qat import QuantSpec, calibrate, quant_twin

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    model = build_from_genotype(tiny_genotype())
    shape = model.feature_config.shape
    train_on(model, *pattern_features(256, shape), steps=50)
    return model, pattern_features(200, shape, seed=1)[0]


def conv_count(model: torch.nn.Module) -> int:
    return sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())


def test_fp32_onnx_matches_pytorch_and_carries_the_feature_config(trained, tmp_path):
    model, feats = trained
    path = export_fp32(model, tmp_path / "fp32.onnx", CLASSES)
    with torch.no_grad():
        ref = model(feats[:50]).numpy()
    np.testing.assert_allclose(onnx_logits(path, feats[:50]), ref, atol=1e-4)
    meta = read_metadata(path)
    assert FeatureConfig.from_dict(meta["feature_config"]) == model.feature_config
    assert meta["classes"] == CLASSES and meta["model_spec"] == model.spec
    graph = onnx.load(str(path)).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 1, 10, 51]


def test_int8_onnx_agrees_with_the_twin_on_integer_kernels(trained, tmp_path):
    model, feats = trained
    twin = quant_twin(model, QuantSpec(8, 8))
    calibrate(twin, feats[:64].split(32))
    path = export_int8(twin, tmp_path / "int8.onnx", CLASSES)
    with torch.no_grad():
        torch_pred = twin(feats).argmax(1).numpy()
    onnx_pred = onnx_logits(path, feats).argmax(1)
    assert (torch_pred == onnx_pred).mean() >= 0.995
    kernels = kernel_summary(path)
    # every conv (depthwise too) and the classifier run as QLinearConv / QGemm
    assert kernels["integer_kernels"] == conv_count(model)
    assert kernels["float_weight_kernels"] == 0
    assert kernels["ops"].get("QGemm") == 1
    assert read_metadata(path)["model_spec"]["quant"]["weight_bits"] == 8


def test_int8_export_of_bcresnet_runs_on_integer_kernels(tmp_path):
    """SubSpectralNorm, the broadcast add and SiLU stay float between integer convs."""
    torch.manual_seed(0)
    model = create_model("bcresnet1", num_classes=4).eval()
    feats = pattern_features(8, model.feature_config.shape)[0]
    twin = quant_twin(model, QuantSpec(8, 8))
    calibrate(twin, [feats])
    path = export_int8(twin, tmp_path / "bcresnet1.onnx", CLASSES)
    kernels = kernel_summary(path)
    assert kernels["integer_kernels"] == conv_count(model) and kernels["float_weight_kernels"] == 0
    with torch.no_grad():
        np.testing.assert_allclose(onnx_logits(path, feats), twin(feats).numpy(), atol=1e-5)


def test_latency_is_measured_per_clip_with_memory(trained, tmp_path):
    path = export_fp32(trained[0], tmp_path / "m.onnx", CLASSES)
    lat = measure_latency(path, runs=20, warmup=2)
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms
    assert lat.peak_rss_mb > 0 and lat.threads == 1 and lat.file_kb > 0
    with pytest.raises(FileNotFoundError, match="model not found"):
        measure_latency(tmp_path / "missing.onnx")


def run_command(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (commands, export_commands):
        module.add_commands(sub)
    args = parser.parse_args(argv)
    assert args.func(args) == 0


def test_commands_quantize_export_and_bench_a_trained_run(tone_root, tmp_path, capsys):
    """The commands on a DS-CNN-S run (TensorFlow 'SAME' padding through Brevitas and ONNX)."""
    run = tmp_path / "run"
    train_tone_run(tone_root, run, "dscnn_s")

    run_command(["quantize", "ptq", str(run), "--bits", "8,2"])
    rows = json.loads((run / "quant" / "ptq.json").read_text())["rows"]
    assert [(r["scheme"], r["bits"]) for r in rows] == [
        ("fp32", 32), ("per-channel symmetric max-abs", 8), ("per-channel symmetric max-abs", 2)]
    assert abs(rows[1]["test_acc"] - rows[0]["test_acc"]) <= 0.05

    run_command(["quantize", "qat", str(run), "--method", "calibrate", "--calib_clips", "40"])
    calibrated = json.loads((run / "quant" / "calibrate_w8a8" / "metrics.json").read_text())
    assert calibrated["method"] == "calibrate" and calibrated["model"]["quant"]["act_bits"] == 8

    run_command(["quantize", "qat", str(run), "--weight_bits", "4", "--epochs", "1", "--quiet",
                 "--calib_clips", "40", "--set", "train.max_steps_per_epoch=2"])
    qat = json.loads((run / "quant" / "qat_w4a8" / "metrics.json").read_text())
    assert qat["method"] == "qat" and 0 <= qat["test_best_acc"] <= 1

    run_command(["export", str(run), "--int8", "--calib_clips", "40"])
    exported = json.loads((run / "export" / "export.json").read_text())
    assert exported["fp32"]["parity"]["agreement"] >= 0.995
    assert exported["int8"]["parity"]["agreement_tie_aware"] >= 0.995
    assert exported["int8"]["kernels"]["float_weight_kernels"] == 0

    run_command(["bench", "latency", str(run / "export" / "model_int8.onnx"), "--runs", "10"])
    latency = run / "export" / "model_int8.onnx.latency.json"
    assert json.loads(latency.read_text())["median_ms"] > 0
    assert "median" in capsys.readouterr().out


def test_parity_forgives_exact_ties_only():
    reference = torch.tensor([[1.0, 2.0, 0.0],    # same choice
                              [2.0, 2.0, 0.0],    # reference ties 0/1, export picks 1
                              [1.0, 0.0, 3.0],    # export ties 1/2 and picks 1
                              [3.0, 1.0, 0.0]])   # a real disagreement
    exported = torch.tensor([[1.1, 2.1, 0.0],
                             [1.9, 2.0, 0.0],
                             [0.0, 1.0, 1.0],
                             [1.0, 3.0, 0.0]])
    parity = prediction_parity(reference, exported)
    assert parity["clips"] == 4
    assert parity["agreement"] == pytest.approx(0.25)
    assert parity["agreement_tie_aware"] == pytest.approx(0.75)
    assert parity["max_abs_logit_diff"] == pytest.approx(2.0)
