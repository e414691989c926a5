"""ONNX export: fp32 from any float model, int8 (QCDQ) from a Brevitas twin.

The graph maps the features of one clip (1, 1, bins, frames) to logits, the shape a device runs,
so every shape computation (SubSpectralNorm's reshapes, 'SAME' padding) folds into constants; the
frontend (STFT, mel, log or DCT)
is not in it, because ONNX's STFT/mel support varies between runtimes and an MCU computes
features with its own DSP code anyway. The FeatureConfig, the class names and the model spec
travel in the file's metadata_props (JSON), so a runtime can compute exactly the features the net
was trained on (nas_kws.features.Frontend(FeatureConfig.from_dict(...)) in Python).
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import torch
from torch import nn

from nas_kws.fileio import atomic_write
from nas_kws.quant.export_padding import pad_channels
from nas_kws.quant.fold import example_input
from nas_kws.quant.latency import session

INPUT, OUTPUT = "features", "logits"
OPSET = 17
INTEGER_OPS = {"QLinearConv", "QGemm", "QLinearMatMul", "ConvInteger", "MatMulInteger",
               "QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool",
               "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat"}
LAYOUT_OPS = {"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Split",
              "Slice"}
CONVERSION_OPS = {"QuantizeLinear", "DequantizeLinear", "Clip"}
FLOAT_WEIGHT_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul"}


def metadata_for(model: nn.Module, classes: list[str]) -> dict[str, str]:
    return {"feature_config": json.dumps(model.feature_config.to_dict()),
            "classes": json.dumps(list(classes)),
            "model_spec": json.dumps(model.spec),
            "input": f"{INPUT}: (1, 1, bins, frames) from "
                     "nas_kws.features.Frontend(FeatureConfig.from_dict(feature_config))"}


def _export_with_metadata(path: str | Path, export: Callable[[Path], None],
                          metadata: dict[str, str]) -> Path:
    def write(tmp: Path) -> None:
        export(tmp)
        proto = onnx.load(str(tmp))
        # weights listed as graph inputs could be overridden at run time, which blocks folding
        weights = {init.name for init in proto.graph.initializer}
        inputs = [i for i in proto.graph.input if i.name not in weights]
        del proto.graph.input[:]
        proto.graph.input.extend(inputs)
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

    return atomic_write(path, write)


def export_fp32(model: nn.Module, path: str | Path, classes: list[str]) -> Path:
    """The float model (batch norm and all) as ONNX opset 17."""
    model = model.cpu().eval()
    example = example_input(model, batch=1)

    def export(tmp: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT], output_names=[OUTPUT])

    return _export_with_metadata(path, export, metadata_for(model, classes))


def export_int8(twin: nn.Module, path: str | Path, classes: list[str]) -> Path:
    """A calibrated or QAT Brevitas twin as a QCDQ graph (Quantize-Clip-Dequantize around each
    layer), which onnxruntime fuses into integer kernels."""
    from brevitas.export import export_onnx_qcdq

    twin = twin.cpu().eval()
    example = example_input(twin, batch=1)

    def export(tmp: Path) -> None:
        with torch.no_grad():
            export_onnx_qcdq(twin, args=example, export_path=str(tmp), dynamo=False,
                             opset_version=OPSET, input_names=[INPUT], output_names=[OUTPUT])

    return _export_with_metadata(path, export, metadata_for(twin, classes))


def _runtime_friendly(proto: onnx.ModelProto) -> None:
    """Two exact rewrites so onnxruntime's QDQ transformer fuses every group into a QLinear
    kernel: int8 activations (per-tensor zero point) move to uint8 (zero point + 128: the same
    grid), and a float conv bias becomes int32 at input scale x weight scale, as int8 runtimes
    store it. Intermediate types are dropped; the loader infers them again."""
    from onnx import helper, numpy_helper

    graph = proto.graph
    consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consts.update({n.output[0]: numpy_helper.to_array(n.attribute[0].t) for n in graph.node
                   if n.op_type == "Constant" and n.attribute[0].name == "value"})
    added: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2:
            zero = consts.get(node.input[2])
            if zero is not None and zero.dtype == np.int8 and zero.ndim == 0:
                name = node.input[2] + "_uint8"
                added[name] = (zero.astype(np.int16) + 128).astype(np.uint8)
                node.input[2] = name
    producer = {out: n for n in graph.node for out in n.output}
    for node in list(graph.node):
        if node.op_type != "Conv" or len(node.input) < 3 or node.input[2] not in consts:
            continue
        x_dq, w_dq = producer.get(node.input[0]), producer.get(node.input[1])
        if not (x_dq and w_dq and x_dq.op_type == w_dq.op_type == "DequantizeLinear"):
            continue
        scale = (consts[x_dq.input[1]] * consts[w_dq.input[1]]).astype(np.float32)
        bias = node.input[2]
        added[bias + "_int32"] = np.round(consts[bias] / scale).astype(np.int32)
        added[bias + "_scale"] = scale
        graph.node.insert(list(graph.node).index(node), helper.make_node(
            "DequantizeLinear", [bias + "_int32", bias + "_scale"], [bias + "_dq"], axis=0))
        node.input[2] = bias + "_dq"
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in added.items())
    del graph.value_info[:]


def export_integer(net: nn.Module, path: str | Path, classes: list[str],
                   channel_padding: bool = True) -> Path:
    """The all-integer reference (nas_kws.quant.integer) as a QDQ graph (opset 18, torch's
    dynamo exporter), rewritten so onnxruntime runs QLinear kernels for every op, and its fast
    ones (channels padded to multiples of 16, nas_kws.quant.export_padding; an exact rewrite,
    `channel_padding=False` skips it)."""
    example = example_input(net, batch=1)

    def export(tmp: Path) -> None:
        program = torch.onnx.export(net, (example,), dynamo=True, opset_version=18,
                                    input_names=[INPUT], output_names=[OUTPUT], verbose=False)
        proto = program.model_proto
        _runtime_friendly(proto)
        if channel_padding:
            pad_channels(proto)
        onnx.save(proto, str(tmp))

    return _export_with_metadata(path, export, metadata_for(net, classes))


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata an export wrote (feature_config, classes, model_spec, input)."""
    proto = onnx.load(str(path), load_external_data=False)
    out: dict[str, Any] = {}
    for entry in proto.metadata_props:
        try:
            out[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            out[entry.key] = entry.value
    return out


def optimized_ops(path: str | Path) -> Counter:
    """Op types of the graph onnxruntime actually runs after its (extended) optimizations,
    where QDQ groups become integer kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        session(path, optimized_path=optimized)
        return Counter(node.op_type for node in onnx.load(str(optimized)).graph.node)


def kernel_summary(path: str | Path) -> dict[str, Any]:
    """How many integer kernels, float conv/gemm kernels and float ops of any kind (everything
    but integer kernels, layout ops and the Quantize/Dequantize at the graph's ends) the
    optimized graph runs."""
    ops = optimized_ops(path)
    return {"integer_kernels": sum(n for op, n in ops.items() if op in INTEGER_OPS),
            "float_weight_kernels": sum(n for op, n in ops.items() if op in FLOAT_WEIGHT_OPS),
            "float_ops": sum(n for op, n in ops.items()
                             if op not in INTEGER_OPS | LAYOUT_OPS | CONVERSION_OPS),
            "ops": dict(sorted(ops.items()))}


def onnx_logits(path: str | Path, features: np.ndarray | torch.Tensor,
                threads: int = 1) -> np.ndarray:
    """Logits of an exported model on (N, 1, bins, frames) features, one clip per run."""
    sess = session(path, threads)
    feats = np.asarray(features, dtype=np.float32)
    return np.concatenate([sess.run([OUTPUT], {INPUT: feats[i:i + 1]})[0]
                           for i in range(len(feats))])


def prediction_parity(reference: torch.Tensor, exported: torch.Tensor) -> dict[str, Any]:
    """Argmax agreement of two engines' logits on the same clips. `agreement` is strict;
    `agreement_tie_aware` also counts clips where one engine's top logits tie exactly and the
    other's choice is among them: int8 logits live on a grid, so exact ties occur, and argmax
    breaks them by class order, not by anything the model computed."""
    ref_pred, exp_pred = reference.argmax(1), exported.argmax(1)
    strict = ref_pred == exp_pred
    tie = ((reference.gather(1, exp_pred[:, None])[:, 0] == reference.max(1).values)
           | (exported.gather(1, ref_pred[:, None])[:, 0] == exported.max(1).values))
    return {"clips": len(reference), "agreement": float(strict.float().mean()),
            "agreement_tie_aware": float((strict | tie).float().mean()),
            "max_abs_logit_diff": float((reference - exported).abs().max())}
