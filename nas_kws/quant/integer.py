"""The all-integer W8A8 net: every tensor between operations is int8, element-wise work included,
so onnxruntime runs QLinear kernels end to end and LiteRT gets a full-integer model.

Post-training quantization with PyTorch 2 export (torchao's PT2E): the batch-norm-folded net is
traced by torch.export and rewritten into ops that integer runtimes have kernels for
- SubSpectralNorm (eval) -> slices along frequency, one depthwise 1x1 conv + bias per sub-band,
  concatenation: no reshape between channels and sub-bands, which NHWC runtimes (onnxruntime's
  int8 kernels, LiteRT) pay for with Transposes (a broadcast multiply by a (C, bins) scale is
  exact too, but its short inner loops run slower than the slices),
- any other batch norm that cannot fold (a ChannelAffine) -> depthwise 1x1 conv + bias,
- SiLU -> x * sigmoid(x) (QLinearSigmoid / LOGISTIC, then QLinearMul / MUL),
- a mean over frequency or time -> depthwise conv with 1/n weights (onnxruntime has no integer
  ReduceMean, and its QLinearAveragePool is slower than its depthwise QLinearConv),
- global average pooling -> avg_pool2d over the whole map, dropout (eval) -> nothing;
then `AllOpsQuantizer` puts int8 quantize/dequantize pairs on every activation (per-channel
symmetric weights, asymmetric per-tensor activations from histograms, sigmoid on its fixed
1/256 grid) and the ranges are calibrated on training clips. The result is an ordinary
GraphModule whose forward emulates the integer net in float: it is the PyTorch reference that
the ONNX and TFLite exports are checked against.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import fx, nn

from nas_kws.models.bcresnet import SubSpectralNorm
from nas_kws.quant.fold import ChannelAffine, example_input, fold_batchnorm, run_hooked

aten = torch.ops.aten
WEIGHTED = {aten.conv2d.default, aten.conv1d.default, aten.linear.default}
RELU = {aten.relu.default, aten.relu_.default, aten.hardtanh.default, aten.hardtanh_.default}
BINARY = {aten.add.Tensor, aten.add_.Tensor, aten.mul.Tensor, aten.mul_.Tensor}
SHARED = {aten.reshape.default, aten.view.default, aten.flatten.using_ints, aten.permute.default,
          aten.squeeze.dim, aten.slice.Tensor, aten.unsqueeze.default, aten.constant_pad_nd.default,
          aten.pad.default, aten.clone.default, aten.avg_pool2d.default,
          aten.max_pool2d.default}
CONV_ARGS = (None, None, None, [1, 1], [0, 0], [1, 1], 1)  # conv2d's defaults after x, weight
DROPOUT = {aten.dropout.default, aten.feature_dropout.default}
SILU = {aten.silu.default, aten.silu_.default}
MAX_BATCH = 256  # clips per forward pass of the reference (traced with a dynamic batch)


def _depthwise_affine(scale: torch.Tensor, shift: torch.Tensor) -> nn.Conv2d:
    """y = x * scale + shift per channel as a depthwise 1x1 conv with bias."""
    channels = scale.numel()
    conv = nn.Conv2d(channels, channels, 1, groups=channels)
    with torch.no_grad():
        conv.weight.copy_(scale.reshape(channels, 1, 1, 1))
        conv.bias.copy_(shift.reshape(channels))
    return conv


class BandAffine(nn.Module):
    """A folded SubSpectralNorm (its bn a ChannelAffine over channels x groups) without its
    reshapes: the bins are sliced into the sub-bands, each gets its own per-channel affine
    (a depthwise 1x1 conv) and they are joined again along frequency. Slicing and joining
    along frequency are free in NHWC, where the reshape to channels x groups is a transpose."""

    def __init__(self, norm: SubSpectralNorm, bins: int):
        super().__init__()
        scale, shift = norm.bn.scale.view(-1, norm.groups), norm.bn.shift.view(-1, norm.groups)
        self.band = bins // norm.groups
        self.bands = nn.ModuleList(_depthwise_affine(scale[:, g], shift[:, g])
                                   for g in range(norm.groups))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = self.band
        return torch.cat([affine(x[:, :, g * n:(g + 1) * n])
                          for g, affine in enumerate(self.bands)], dim=2)


def deployable(model: nn.Module) -> nn.Module:
    """The folded net (a copy): each SubSpectralNorm a BandAffine, each other ChannelAffine a
    depthwise 1x1 conv with bias."""
    net = fold_batchnorm(model)
    norms = {name: m for name, m in net.named_modules() if isinstance(m, SubSpectralNorm)}
    bins: dict[str, int] = {}
    run_hooked(net, example_input(net, batch=1), [
        m.register_forward_pre_hook(lambda mod, inp, name=name: bins.update({
            name: inp[0].shape[2]})) for name, m in norms.items()])
    for name, norm in norms.items():
        net.set_submodule(name, BandAffine(norm, bins[name]))
    for name, module in list(net.named_modules()):
        if isinstance(module, ChannelAffine):
            net.set_submodule(name, _depthwise_affine(module.scale, module.shift))
    return net


def _replace(graph: fx.Graph, node: fx.Node, target, args: tuple) -> fx.Node:
    with graph.inserting_before(node):
        new = graph.call_function(target, args)
    new.meta["val"] = node.meta["val"]
    node.replace_all_uses_with(new)
    graph.erase_node(node)
    return new


def _mean_dims(node: fx.Node) -> list[int] | None:
    """The 4-D dims a keepdim mean runs over, when they are frequency and/or time."""
    shape = node.args[0].meta["val"].shape
    keep = node.args[2] if len(node.args) > 2 else node.kwargs.get("keepdim", False)
    dims = sorted(d % len(shape) for d in node.args[1])
    return dims if len(shape) == 4 and keep and dims in ([2], [3], [2, 3]) else None


def _conv_args(conv: fx.Node) -> list:
    """A conv2d node's arguments with its defaults filled in."""
    return list(conv.args) + list(CONV_ARGS[len(conv.args):])


def _symmetric_zero_pad(node: fx.Node) -> bool:
    """A zero pad, equal on both sides of frequency and of time, read only by an unpadded conv
    (DS-CNN's 'SAME' padding): it becomes the conv's own padding, so no PAD op is left."""
    if node.op != "call_function":
        return False
    if node.target is aten.constant_pad_nd.default:
        mode, value = "constant", node.args[2] if len(node.args) > 2 else 0
    elif node.target is aten.pad.default:
        mode = node.args[2] if len(node.args) > 2 else node.kwargs.get("mode", "constant")
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value")
    else:
        return False
    pads, users = list(node.args[1]), list(node.users)
    return (mode == "constant" and not value and len(pads) == 4 and pads[0] == pads[1]
            and pads[2] == pads[3] and len(users) == 1
            and users[0].target is aten.conv2d.default and users[0].args[0] is node
            and list(_conv_args(users[0])[4]) == [0, 0])


def integer_ops(gm: fx.GraphModule) -> fx.GraphModule:
    """Rewrite an exported graph into ops with integer kernels (see the module docstring)."""
    graph = gm.graph
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in SILU:
            x = node.args[0]
            with graph.inserting_before(node):
                gate = graph.call_function(aten.sigmoid.default, (x,))
            gate.meta["val"] = node.meta["val"]
            _replace(graph, node, aten.mul.Tensor, (x, gate))
        elif node.target is aten.mean.dim and _mean_dims(node):
            x, dims = node.args[0], _mean_dims(node)
            shape = x.meta["val"].shape
            kernel = [shape[2] if 2 in dims else 1, shape[3] if 3 in dims else 1]
            name = f"_mean_weight_{node.name}"
            gm.register_buffer(name, torch.full((shape[1], 1, *kernel),
                                                1.0 / (kernel[0] * kernel[1])))
            with graph.inserting_before(node):
                weight = graph.get_attr(name)
            weight.meta["val"] = getattr(gm, name)
            _replace(graph, node, aten.conv2d.default,
                     (x, weight, None, [1, 1], [0, 0], [1, 1], shape[1]))
        elif node.target is aten.adaptive_avg_pool2d.default and list(node.args[1]) == [1, 1]:
            shape = node.args[0].meta["val"].shape
            kernel = [shape[2], shape[3]]
            _replace(graph, node, aten.avg_pool2d.default, (node.args[0], kernel, kernel))
        elif node.target in DROPOUT:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
        elif _symmetric_zero_pad(node):
            conv = next(iter(node.users))
            args = _conv_args(conv)
            args[0], args[4] = node.args[0], [node.args[1][2], node.args[1][0]]
            conv.args = tuple(args)
            graph.erase_node(node)
    graph.lint()
    gm.recompile()
    return gm


def _is_activation(node) -> bool:
    """A float tensor computed from the graph input (not from parameters alone)."""
    if not isinstance(node, fx.Node) or getattr(node.meta.get("val"), "dtype", None) is None:
        return False
    stack, seen = [node], set()
    while stack:
        current = stack.pop()
        if current.op == "placeholder":
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(current.all_input_nodes)
    return False


def _quantizer():
    """A torchao Quantizer annotating every op of an `integer_ops` graph (built lazily: torchao
    is imported only when an integer net is made)."""
    from torchao.quantization.pt2e import (
        HistogramObserver,
        PerChannelMinMaxObserver,
    )
    from torchao.quantization.pt2e.quantizer import (
        FixedQParamsQuantizationSpec,
        QuantizationAnnotation,
        QuantizationSpec,
        Quantizer,
        SharedQuantizationSpec,
    )

    act = QuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                           qscheme=torch.per_tensor_affine,
                           observer_or_fake_quant_ctr=HistogramObserver.with_args(eps=2 ** -12))
    weight = QuantizationSpec(dtype=torch.int8, quant_min=-127, quant_max=127,
                              qscheme=torch.per_channel_symmetric, ch_axis=0,
                              observer_or_fake_quant_ctr=PerChannelMinMaxObserver)
    sigmoid = FixedQParamsQuantizationSpec(dtype=torch.int8, quant_min=-128, quant_max=127,
                                           qscheme=torch.per_tensor_affine, scale=1 / 256,
                                           zero_point=-128)

    def feeds_only_relu(node: fx.Node) -> bool:
        return len(node.users) == 1 and next(iter(node.users)).target in RELU

    class AllOpsQuantizer(Quantizer):
        def annotate(self, model: fx.GraphModule) -> fx.GraphModule:
            for node in model.graph.nodes:
                if node.op != "call_function":
                    continue
                target, inputs, output = node.target, {}, None
                if target in WEIGHTED:
                    inputs = {node.args[0]: act, node.args[1]: weight}
                    output = None if feeds_only_relu(node) else act   # ReLU fuses in
                elif target in BINARY:
                    # a sigmoid output keeps its fixed grid: requantizing it in front of the
                    # multiply is a second rounding that onnxruntime folds away (its
                    # QLinearSigmoid writes the second grid directly), so it would differ
                    inputs = {a: act for a in node.args[:2] if isinstance(a, fx.Node)
                              and a.target is not aten.sigmoid.default}
                    output = None if feeds_only_relu(node) else act
                elif target in RELU:
                    source = node.args[0]
                    if not (source.target in WEIGHTED | BINARY and len(source.users) == 1):
                        inputs = {source: act}
                    output = act
                elif target is aten.sigmoid.default:
                    inputs, output = {node.args[0]: act}, sigmoid
                elif target is aten.cat.default:
                    parts = node.args[0]
                    inputs = {a: SharedQuantizationSpec(node) for a in parts}
                    output = act
                elif target in SHARED and _is_activation(node.args[0]):
                    inputs = {node.args[0]: act}
                    output = SharedQuantizationSpec((node.args[0], node))
                else:
                    continue
                node.meta["quantization_annotation"] = QuantizationAnnotation(
                    input_qspec_map=inputs, output_qspec=output, _annotated=True)
            return model

        def validate(self, model: fx.GraphModule) -> None:
            pass

    return AllOpsQuantizer()


def _snap_biases(net: fx.GraphModule) -> None:
    """Round every conv/linear bias to the int32 grid of input scale x weight scale, where
    integer runtimes (onnxruntime's QLinearConv, TFLite) store it: the reference then adds the
    bias they add, and one source of 1-LSB differences (which BC-ResNet's gains amplify) is
    gone."""
    quant = torch.ops.quantized_decomposed
    for node in net.graph.nodes:
        if node.op != "call_function" or node.target not in WEIGHTED or len(node.args) < 3:
            continue
        x, w, bias = node.args[:3]
        if not (isinstance(bias, fx.Node) and bias.op == "get_attr"
                and x.target is quant.dequantize_per_tensor.default
                and w.target in (quant.dequantize_per_channel.default,
                                 quant.dequantize_per_tensor.default)):
            continue
        w_scale = w.args[1]
        if isinstance(w_scale, fx.Node):
            w_scale = net.get_buffer(w_scale.target)
        scale = torch.tensor(x.args[1], dtype=torch.float32) * torch.as_tensor(
            w_scale, dtype=torch.float32)
        value = net.get_parameter(bias.target)
        value.copy_(torch.round(value / scale) * scale)


@torch.no_grad()
def integer_net(model: nn.Module, calibration: Iterable[torch.Tensor]) -> fx.GraphModule:
    """The calibrated W8A8 reference of a float `model`, carrying its feature_config,
    num_classes and spec; `calibration` yields feature batches of any size. It is traced with a
    dynamic batch, so calibration and the reference's logits run whole batches (the exports
    trace it again at batch 1)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    float_net = deployable(model.cpu().eval())
    example = example_input(model, batch=2)
    batch = {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    traced = integer_ops(torch.export.export(float_net, (example,),
                                             dynamic_shapes=(batch,)).module())
    prepared = prepare_pt2e(traced, _quantizer())
    seen = 0
    for feats in calibration:
        for batch in feats.split(MAX_BATCH):
            prepared(batch)
        seen += len(feats)
    if not seen:
        raise ValueError("integer_net: no calibration clips")
    net = convert_pt2e(prepared, fold_quantize=False)
    _snap_biases(net)
    net.feature_config, net.num_classes = model.feature_config, model.num_classes
    net.spec = {"base": model.spec, "integer": "pt2e_w8a8"}
    return net


def integer_logits(net: fx.GraphModule, feats: torch.Tensor) -> torch.Tensor:
    """The reference's logits on (N, 1, bins, frames) features."""
    with torch.no_grad():
        return torch.cat([net(batch) for batch in feats.split(MAX_BATCH)])
