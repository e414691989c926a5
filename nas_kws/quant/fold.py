"""Batch-norm folding, the first step of every quantization and compression path.

A batch norm that reads a conv's (or linear's) output is merged into that layer's weights and
bias, so what gets rounded is the weight the device multiplies by. Any other norm, notably
BC-ResNet's SubSpectralNorm, whose statistics differ per frequency sub-band while the conv's
weights are shared across bands, cannot merge exactly: it is frozen into a `ChannelAffine` (its
eval-mode scale and shift), which keeps outputs unchanged and stays trainable for QAT.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Linear)
NORM_LAYERS = (nn.BatchNorm1d, nn.BatchNorm2d)


class ChannelAffine(nn.Module):
    """y = x * scale + shift along dim 1: a batch norm with its statistics baked in."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor):
        super().__init__()
        self.scale = nn.Parameter(scale.detach().clone())
        self.shift = nn.Parameter(shift.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)


def example_input(model: nn.Module, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """A random (batch, 1, bins, frames) feature tensor of the shape the model was built for."""
    config = getattr(model, "feature_config", None)
    if config is None:
        raise ValueError(f"{type(model).__name__}: the model has no .feature_config, so its "
                         "input shape is unknown")
    bins, frames = config.shape
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, bins, frames, generator=g)


def weight_layers_in_order(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the conv/linear layers in the order the forward pass runs them."""
    order: list[str] = []
    run_hooked(model, example, [
        m.register_forward_hook(lambda mod, inp, out, name=name: order.append(name))
        for name, m in model.named_modules() if isinstance(m, WEIGHT_LAYERS)])
    return list(dict.fromkeys(order))


def run_hooked(model: nn.Module, example: torch.Tensor, handles: list) -> None:
    """One no-grad forward pass that feeds the hooks in `handles`, which are removed after."""
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()


def _norm_affine(bn: nn.modules.batchnorm._BatchNorm,
                 name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{name}: batch norm without running statistics cannot be folded")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale.detach(), shift.detach()


def _conv_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    """(layer, norm) pairs where the norm's input is the very tensor the layer returned."""
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    pairs: list[tuple[str, str]] = []

    def after_layer(name):
        def hook(module, inputs, output):
            produced[id(output)] = (name, output)  # keep the tensor alive so its id stays unique
        return hook

    def before_norm(name):
        def hook(module, inputs):
            source = produced.get(id(inputs[0]))
            if source is not None and source[1] is inputs[0]:
                pairs.append((source[0], name))
        return hook

    hooks = []
    for name, m in model.named_modules():
        if isinstance(m, WEIGHT_LAYERS):
            hooks.append(m.register_forward_hook(after_layer(name)))
        elif isinstance(m, NORM_LAYERS):
            hooks.append(m.register_forward_pre_hook(before_norm(name)))
    run_hooked(model, example, hooks)
    return pairs


@torch.no_grad()
def _merge(layer: nn.Module, scale: torch.Tensor, shift: torch.Tensor) -> None:
    shape = (-1,) + (1,) * (layer.weight.dim() - 1)
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    layer.weight.mul_(scale.view(shape))
    layer.bias = nn.Parameter(bias * scale + shift)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None) -> nn.Module:
    """A copy of `model` in eval mode with every batch norm gone: merged into the layer before
    it where that is exact, frozen into a ChannelAffine elsewhere. Checked on `example`."""
    model = copy.deepcopy(model).eval()
    example = example_input(model) if example is None else example
    with torch.no_grad():
        reference = model(example)
    norms = {name: m for name, m in model.named_modules() if isinstance(m, NORM_LAYERS)}
    merged = set()
    for layer_name, norm_name in _conv_norm_pairs(model, example):
        if norm_name in merged:
            raise ValueError(f"{norm_name}: batch norm runs more than once; cannot fold it")
        _merge(model.get_submodule(layer_name), *_norm_affine(norms[norm_name], norm_name))
        model.set_submodule(norm_name, nn.Identity())
        merged.add(norm_name)
    for name, norm in norms.items():
        if name not in merged:
            model.set_submodule(name, ChannelAffine(*_norm_affine(norm, name)))
    with torch.no_grad():
        folded = model(example)
    tol = 1e-4 * reference.abs().max().item() + 1e-5
    if not torch.allclose(folded, reference, rtol=1e-4, atol=tol):
        raise ValueError(f"{type(model).__name__}: folding batch norm changed the outputs "
                         f"(max diff {(folded - reference).abs().max().item():.3g}); a layer "
                         "output feeds more than its batch norm")
    return model
