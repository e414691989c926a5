"""The all-integer W8A8 net: QLinear kernels for every op in onnxruntime, a full-integer .tflite
checked with the LiteRT interpreter (skipped only without the tflite extra), and its memory."""
import shutil

import numpy as np
import onnx
import pytest
import torch
from quant_helpers import pattern_features, single_thread, tiny_genotype, train_on  # noqa: F401

from nas_kws.models import create_model
from nas_kws.models.genotype import build_from_genotype
from nas_kws.profiling import profile_model
from nas_kws.quant.export import export_integer, kernel_summary, onnx_logits, prediction_parity
from nas_kws.quant.integer import BandAffine, deployable, integer_logits, integer_net, integer_ops

CLASSES = [str(i) for i in range(4)]


@pytest.fixture(scope="module")
def bcresnet():
    """BC-ResNet-1 (SubSpectralNorm, broadcast add, SiLU, means) as an all-integer net."""
    torch.manual_seed(0)
    model = create_model("bcresnet1", num_classes=4).eval()
    feats = pattern_features(40, model.feature_config.shape)[0]
    return model, integer_net(model, [feats[:16]]), feats[16:]


def test_subspectral_norm_becomes_exact_band_affines():
    """Sub-band statistics that differ per channel and band survive the rewrite unchanged."""
    torch.manual_seed(0)
    model = create_model("bcresnet1", num_classes=4).eval()
    for norm in model.modules():
        if isinstance(norm, torch.nn.BatchNorm2d):
            norm.running_mean.normal_()
            norm.running_var.uniform_(0.5, 2.0)
    net = deployable(model)
    assert sum(isinstance(m, BandAffine) for m in net.modules()) == 12
    x = pattern_features(4, model.feature_config.shape)[0]
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


def test_same_padding_moves_into_the_conv():
    """DS-CNN's symmetric 'SAME' pads become conv padding; only the stem's uneven pad stays."""
    model = create_model("dscnn_s").eval()
    x = pattern_features(2, model.feature_config.shape)[0]
    graph = integer_ops(torch.export.export(deployable(model), (x[:1],)).module())
    pads = [n for n in graph.graph.nodes if "pad" in str(n.target)]
    assert len(pads) == 1
    with torch.no_grad():
        torch.testing.assert_close(graph(x[:1]), model(x[:1]), rtol=1e-4, atol=1e-5)


def test_integer_onnx_runs_no_float_op(bcresnet, tmp_path):
    model, net, feats = bcresnet
    path = export_integer(net, tmp_path / "int8.onnx", CLASSES)
    kernels = kernel_summary(path)
    assert kernels["float_ops"] == 0 and kernels["float_weight_kernels"] == 0
    for op in ("QLinearConv", "QLinearAdd", "QLinearMul", "QLinearSigmoid"):
        assert kernels["ops"].get(op, 0) > 0, op
    parity = prediction_parity(integer_logits(net, feats),
                               torch.from_numpy(onnx_logits(path, feats)))
    assert parity["agreement_tie_aware"] >= 0.995


def test_channel_padding_is_bit_exact(bcresnet, tmp_path):
    """BC-ResNet-1's 8/12/20-channel convs get zero channels up to multiples of 16 (the
    kernels onnxruntime runs fast); the logits do not move by one bit."""
    model, net, feats = bcresnet
    padded = export_integer(net, tmp_path / "padded.onnx", CLASSES)
    plain = export_integer(net, tmp_path / "plain.onnx", CLASSES, channel_padding=False)
    groups = {name: sorted(a.i for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"
                           for a in n.attribute if a.name == "group" and a.i > 1)
              for name, path in (("padded", padded), ("plain", plain))}
    assert {8, 12, 20} <= set(groups["plain"])
    assert all(g % 16 == 0 for g in groups["padded"]) and len(groups["padded"]) == len(
        groups["plain"])
    np.testing.assert_array_equal(onnx_logits(padded, feats), onnx_logits(plain, feats))


def test_biases_sit_on_the_int32_grid(bcresnet):
    """The reference adds the bias integer runtimes add: a multiple of input x weight scale."""
    _, net, _ = bcresnet
    quant = torch.ops.quantized_decomposed
    checked = 0
    for node in net.graph.nodes:
        if node.op == "call_function" and node.target is torch.ops.aten.conv2d.default \
                and len(node.args) > 2 and isinstance(node.args[2], torch.fx.Node):
            x, w, bias = node.args[:3]
            assert x.target is quant.dequantize_per_tensor.default
            scale = torch.tensor(x.args[1]) * net.get_buffer(w.args[1].target)
            steps = net.get_parameter(bias.target) / scale
            assert torch.allclose(steps, steps.round(), atol=1e-3)
            checked += 1
    assert checked > 10


def test_integer_net_follows_the_float_net():
    torch.manual_seed(0)
    model = build_from_genotype(tiny_genotype())
    shape = model.feature_config.shape
    train_on(model, *pattern_features(256, shape), steps=50)
    feats = pattern_features(200, shape, seed=1)[0]
    net = integer_net(model.eval(), [feats[:64]])
    with torch.no_grad():
        agree = (model(feats).argmax(1) == integer_logits(net, feats).argmax(1)).float().mean()
    assert agree >= 0.95


def test_full_integer_tflite_agrees_with_the_reference(bcresnet, tmp_path):
    pytest.importorskip("litert_torch", reason="the tflite extra is not installed")
    from nas_kws.quant.latency import measure_latency
    from nas_kws.quant.tflite import export_tflite, strip_names, tflite_logits, tflite_summary

    model, net, feats = bcresnet
    named = export_tflite(net, tmp_path / "named.tflite", keep_names=True)
    # what export_tflite does by default, on a copy: one conversion serves both files
    path = strip_names(shutil.copy(named, tmp_path / "model_int8.tflite"))
    summary, before = tflite_summary(path), tflite_summary(named)
    # the strings go, nothing else: same ops, constants and arena, bit-identical outputs
    assert before["longest_name"] > 0 and summary["longest_name"] == summary["name_bytes"] == 0
    assert summary["file_bytes"] <= before["file_bytes"] - before["name_bytes"]
    for key in ("ops", "constant_bytes", "peak_sram_bytes"):
        assert summary[key] == before[key], key
    np.testing.assert_array_equal(tflite_logits(path, feats), tflite_logits(named, feats))
    assert summary["float_ops"] == {}
    assert summary["input_dtype"] == summary["output_dtype"] == "int8"
    assert "TRANSPOSE" not in summary["ops"]   # SubSpectralNorm needs no layout change
    reference = integer_logits(net, feats)
    tflite = torch.from_numpy(tflite_logits(path, feats))
    assert prediction_parity(reference, tflite)["agreement_tie_aware"] >= 0.99
    # the arena walk sees the same int8 tensors as the profiler's, plus layout copies
    traced = profile_model(model).peak_sram_bytes
    assert traced <= summary["peak_sram_bytes"] <= 2 * traced
    assert measure_latency(path, runs=5, warmup=1).median_ms > 0


def test_unconvertible_net_is_named(tmp_path):
    pytest.importorskip("litert_torch", reason="the tflite extra is not installed")
    from nas_kws.errors import NasKwsError
    from nas_kws.quant.tflite import export_tflite

    class Sorts(torch.nn.Module):  # sort has no TFLite builtin
        feature_config = create_model("bcresnet1").feature_config

        def forward(self, x):
            return torch.sort(x, dim=-1).values.flatten(1)[:, :4]

    with pytest.raises(NasKwsError, match="model_int8.tflite"):
        export_tflite(Sorts(), tmp_path / "model_int8.tflite")
    assert not (tmp_path / "model_int8.tflite").exists()
