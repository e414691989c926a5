"""An exact rewrite of an integer (QDQ) ONNX graph for onnxruntime's x86 kernels: every channel
count between convolutions is padded with zero channels to a multiple of 16.

onnxruntime runs its fast symmetric int8 convolutions (MlasConvSym, the AVX2/AVX512-VNNI
indirect kernels) only when a depthwise conv has a multiple of 16 channels and a dense conv has
a multiple of 4 input and of 8 (at least 16) output channels; anything else falls back to the
generic im2col/GEMM and depthwise loops, which are several times slower on the 8-20 channel maps
of BC-ResNet-1. Padded channels leave every conv as exact zeros (zero weights and
bias), whatever element-wise ops make of them (sigmoid(0) = 0.5) only meets zero weights,
element-wise ops never mix channels, and activations are quantized per tensor, so the logits are
bit-identical; only the compute layout changes. The graph is left alone when any
tensor between convolutions meets an op this rewrite does not know to be channel-wise.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

MULTIPLE = 16
ELEMENTWISE = {"QuantizeLinear", "DequantizeLinear", "Clip", "Relu", "Add", "Mul", "Sigmoid",
               "AveragePool", "GlobalAveragePool", "MaxPool", "Identity"}
ALONG_AXIS = {"Concat", "Split", "Slice"}  # channel-wise unless they cut or join channels


def _round_up(n: int) -> int:
    return -(-n // MULTIPLE) * MULTIPLE


class _Graph:
    def __init__(self, proto: onnx.ModelProto):
        self.graph = proto.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.producer = {out: n for n in self.graph.node for out in n.output}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {o.name for o in self.graph.output}
        self.added: list[onnx.TensorProto] = []

    def attr(self, node: onnx.NodeProto, name: str, default=None):
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def channel_wise(self, node: onnx.NodeProto) -> bool:
        """An op that maps channel c to channel c only (per-tensor quantization, no
        channel-shaped constant)."""
        if node.op_type in ELEMENTWISE:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                return self.consts.get(node.input[1], np.zeros(2)).size == 1
            return all(self.consts.get(i, np.zeros(1)).size == 1 for i in node.input[1:]
                       if i in self.consts)
        if node.op_type == "Concat":
            return self.attr(node, "axis") not in (1, -3)
        if node.op_type == "Split":
            return self.attr(node, "axis", 0) not in (1, -3)
        if node.op_type == "Slice" and len(node.input) > 3:
            axes = self.consts.get(node.input[3])
            return axes is not None and not np.isin(axes, (1, -3)).any()
        return False

    def const(self, name: str, value: np.ndarray) -> str:
        if name not in self.consts:
            self.consts[name] = value
            self.added.append(numpy_helper.from_array(value, name))
        return name


def _weight_chain(g: _Graph, name: str) -> list[onnx.NodeProto] | None:
    """The DequantizeLinear (<- Clip) (<- QuantizeLinear) chain from a constant weight or bias."""
    chain = []
    while name not in g.consts:
        node = g.producer.get(name)
        if node is None or node.op_type not in ("QuantizeLinear", "Clip", "DequantizeLinear"):
            return None
        chain.append(node)
        name = node.input[0]
    return chain


def _pad_axis0(g: _Graph, chain: list[onnx.NodeProto], rows: int, cols: int | None,
               tag: str) -> None:
    """Pad a quantized weight/bias chain to `rows` output channels and, for a weight, to `cols`
    input channels: zero values and zero points; scales repeat the last channel's, because
    onnxruntime fuses a conv only when its bias scale is input scale x weight scale."""
    source = chain[-1].input[0]
    value = g.consts[source]
    pad = [(0, rows - value.shape[0])] + [(0, 0)] * (value.ndim - 1)
    if cols is not None:
        pad[1] = (0, cols - value.shape[1])
    chain[-1].input[0] = g.const(f"{source}_{tag}", np.pad(value, pad))
    for node in chain:
        for slot, mode in ((1, "edge"), (2, "constant")):
            param = g.consts.get(node.input[slot]) if len(node.input) > slot else None
            if node.op_type != "Clip" and param is not None and param.size > 1:
                node.input[slot] = g.const(f"{node.input[slot]}_{tag}",
                                           np.pad(param, (0, rows - param.size), mode=mode))


def _blocked(g: _Graph) -> set[str]:
    """Tensors whose channel count must stay as it is: those that reach a graph output or a
    non-channel-wise op through channel-wise ops only."""
    blocked: set[str] = set()
    for node in reversed(g.graph.node):
        for out in node.output:
            users = g.consumers.get(out, [])
            if out in g.outputs or any(
                    u.op_type != "Conv" and not (g.channel_wise(u) and not
                                                 blocked.intersection(u.output))
                    for u in users):
                blocked.add(out)
    return blocked


def pad_channels(proto: onnx.ModelProto) -> bool:
    """Pad the graph in place (see the module docstring); False when it is left alone."""
    g = _Graph(proto)
    blocked = _blocked(g)
    padded: dict[str, int] = {}   # tensors that get more channels: their new count
    plans = []
    for node in g.graph.node:
        if node.op_type != "Conv":
            counts = {padded[i] for i in node.input if i in padded}
            if counts:
                if not g.channel_wise(node) or len(counts) > 1:
                    return False
                padded.update((out, *counts) for out in node.output)
            continue
        weight_chain = _weight_chain(g, node.input[1])
        bias_chain = _weight_chain(g, node.input[2]) if len(node.input) > 2 else []
        if weight_chain is None or bias_chain is None:
            return False
        out_ch, in_per_group = g.consts[weight_chain[-1].input[0]].shape[:2]
        group, in_ch = g.attr(node, "group", 1), padded.get(node.input[0])
        if group == 1:
            rows = out_ch if node.output[0] in blocked else _round_up(out_ch)
            cols = in_ch or in_per_group
        elif in_per_group == 1 and group == out_ch:
            rows, cols = in_ch or out_ch, None   # depthwise: as many as its input
        else:
            return False
        if rows != out_ch and node.output[0] in blocked:
            return False
        if rows != out_ch or (cols or in_per_group) != in_per_group:
            plans.append((node, weight_chain, bias_chain, rows, cols))
        if rows != out_ch:
            padded[node.output[0]] = rows
    for i, (node, weight_chain, bias_chain, rows, cols) in enumerate(plans):
        tag = f"pad{i}"
        _pad_axis0(g, weight_chain, rows, cols, tag)
        if bias_chain:
            _pad_axis0(g, bias_chain, rows, None, tag)
        if cols is None:
            for a in node.attribute:
                if a.name == "group":
                    a.i = rows
    g.graph.initializer.extend(g.added)
    return bool(plans)
