"""Brevitas's per-tensor activation fake quantization as one compiled kernel each way.

Brevitas's IntQuant divides, adds the zero point, rounds, clamps, subtracts and rescales in
separate element-wise kernels, forward and backward; on a QAT twin those passes are most of a
training step (README "Benchmarks"). `FusedIntQuant` computes the same expressions, in Brevitas's
order, as two `torch.compile`d element-wise kernels (inductor's vectorised C++; compiled once per
process, kept in inductor's on-disk cache), with the backward written from Brevitas's
straight-through rules (round passes the gradient, the clamp stops it outside the range):
  r = round(x / s + z),  m = lo <= r <= hi,  y = (clamp(r, lo, hi) - z) * s,
with each gradient term computed as Brevitas's autograd graph computes it (`_backward`). The
forward and dL/dx equal Brevitas's bit for bit, the scale and zero-point gradients up to the
order of their sums. It subclasses IntQuant, so Brevitas's proxies and export read the same
attributes; `nas-kws quantize qat --fake_quant` chooses (README "Quantization").
"""
from __future__ import annotations

import torch
from brevitas.core.function_wrapper import RoundSte, TensorClamp
from brevitas.core.quant.delay import _NoDelay
from brevitas.core.quant.int_base import IntQuant
from torch import nn


def _forward(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, low: torch.Tensor,
             high: torch.Tensor) -> torch.Tensor:
    r = torch.round(x / scale + zero_point)
    return (r.clamp(low, high) - zero_point) * scale


def _backward(grad: torch.Tensor, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
              low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Brevitas's autograd graph for _forward, term by term: y = (c - z) * s with c = clamp(r)."""
    r = torch.round(x / scale + zero_point)
    inside = (r >= low) & (r <= high)
    grad_c = torch.where(inside, grad * scale, 0.0)       # through '* s', '- z', the clamp
    grad_x = grad_c / scale                               # round is straight-through; '/ s'
    grad_scale = (grad * (r.clamp(low, high) - zero_point)).sum() \
        - (grad_c * x / (scale * scale)).sum()
    grad_zero_point = grad_c.sum() - (grad * scale).sum()
    return grad_x, grad_scale, grad_zero_point


_compiled_forward = torch.compile(_forward, dynamic=True)
_compiled_backward = torch.compile(_backward, dynamic=True)


def _dense_order(x: torch.Tensor) -> list[int]:
    """Dimensions of `x` from outermost to innermost in memory (NCHW or channels-last alike),
    so the kernels see one flat vector: one compiled kernel for every shape, no recompiles."""
    return sorted(range(x.dim()), key=lambda d: (-x.stride(d), -x.size(d)))


def _flat(x: torch.Tensor, order: list[int]) -> torch.Tensor:
    return x.permute(order).reshape(-1)


def _unflat(flat: torch.Tensor, like: torch.Tensor, order: list[int]) -> torch.Tensor:
    inverse = sorted(range(len(order)), key=order.__getitem__)
    return flat.view([like.size(d) for d in order]).permute(inverse)


class _FakeQuant(torch.autograd.Function):
    """On flat vectors: the views to and from the layer's shape stay outside, in autograd."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                low: float, high: float) -> torch.Tensor:
        # detached, and the bounds as tensors: the kernels compile once, not per flag or width
        bounds = torch.tensor([low, high], dtype=x.dtype, device=x.device)
        ctx.save_for_backward(x, scale, zero_point, bounds)
        return _compiled_forward(x.detach(), scale.detach(), zero_point.detach(), *bounds)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale, zero_point, bounds = ctx.saved_tensors
        grad_x, grad_scale, grad_zero_point = _compiled_backward(
            grad.detach(), x.detach(), scale.detach(), zero_point.detach(), *bounds)
        return (grad_x, grad_scale.reshape(scale.shape),
                grad_zero_point.reshape(zero_point.shape), None, None)


class FusedIntQuant(IntQuant):
    """IntQuant with compiled kernels for per-tensor activation quantization."""

    def forward(self, scale: torch.Tensor, zero_point: torch.Tensor, bit_width: torch.Tensor,
                x: torch.Tensor) -> torch.Tensor:
        if scale.numel() != 1 or zero_point.numel() != 1 or torch.jit.is_tracing():
            return super().forward(scale, zero_point, bit_width, x)
        low, high = float(self.min_int(bit_width)), float(self.max_int(bit_width))
        order = _dense_order(x)
        return _unflat(_FakeQuant.apply(_flat(x, order), scale, zero_point, low, high), x, order)


def fuse_activation_quant(twin: nn.Module) -> int:
    """Swap the IntQuant of every activation quantizer in `twin` for FusedIntQuant (same
    settings, no parameters or buffers, so state dicts are unchanged); returns how many.
    Only Brevitas's defaults are swapped: round half to even, plain clamp, no delay."""
    swapped = 0
    for module in twin.modules():
        tensor_quant = getattr(getattr(module, "fused_activation_quant_proxy", None),
                               "tensor_quant", None)
        old = getattr(tensor_quant, "int_quant", None)
        if (type(old) is IntQuant and type(old.float_to_int_impl) is RoundSte
                and type(old.tensor_clamp_impl) is TensorClamp
                and type(old.delay_wrapper.delay_impl) is _NoDelay):
            tensor_quant.int_quant = FusedIntQuant(
                narrow_range=old.narrow_range, signed=old.signed,
                input_view_impl=old.input_view_impl, float_to_int_impl=old.float_to_int_impl,
                tensor_clamp_impl=old.tensor_clamp_impl)
            swapped += 1
    return swapped
