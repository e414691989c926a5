"""ProxylessNAS's mixed operation with binary gates (Cai et al. 2019, section 3.2).

A position holds N candidate blocks and architecture parameters alpha (N,), p = softmax(alpha).
Weight steps run one sampled path, so the supernet costs what one net costs. Architecture steps
also sample binary gates g (one-hot, the output is sum_k g_k * block_k(x)) and estimate
dL/dalpha_i = sum_j dL/dg_j * p_j * (delta_ij - p_i), with dL/dg_j = <dL/dy, block_j(x)>:
- full_v2: every candidate is involved; the other paths run inside the backward pass, one at a
  time and without autograd, so memory stays that of one path.
- two: two paths sampled by p (the active one picked by their renormalised p); only those two
  get gradients, and after the update both alphas are shifted so that their summed exp (their
  share of the softmax) is unchanged, leaving the other candidates' probabilities untouched.
Candidates are whole blocks (each with its own shortcut) and `zero` is the identity, so the zero
path has output x and receives a gradient like any other (in ProxylessNAS it gets none).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BINARY_MODES = ("full_v2", "two")


class _GateGradient(torch.autograd.Function):
    """Identity on the active path's output; its backward also returns dL/dg_k for the involved
    candidates k, running the inactive ones on the saved input."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, gates: torch.Tensor, x: torch.Tensor,
                op: "MixedOp") -> torch.Tensor:
        ctx.save_for_backward(out, x)
        ctx.op = op
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        out, x = ctx.saved_tensors
        op: MixedOp = ctx.op
        grads = torch.zeros(len(op.candidates), device=grad_out.device)
        with torch.no_grad():
            for k in op.involved:
                out_k = out if k == op.active else op.candidates[k](x)
                grads[k] = (out_k * grad_out).sum()
        return grad_out, grads, None, None


class MixedOp(nn.Module):
    def __init__(self, candidates: list[nn.Module]):
        super().__init__()
        if len(candidates) < 2:
            raise ValueError(f"MixedOp: expected at least 2 candidates, got {len(candidates)}")
        self.candidates = nn.ModuleList(candidates)
        # ProxylessNAS's init: near-uniform, with seeded random tie-breaks for the argmax
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(candidates)))
        self.active = 0
        self.involved: list[int] = []
        self.gates: torch.Tensor | None = None
        self._alpha_before: torch.Tensor | None = None

    def probs(self) -> torch.Tensor:
        return F.softmax(self.alpha, dim=0)

    def entropy(self) -> float:
        p = self.probs().detach()
        return float(-(p * torch.log(p.clamp_min(1e-12))).sum())

    def choose(self, index: int) -> None:
        """Run candidate `index` (no gates): for weight steps, evaluation and derivation."""
        self.active, self.involved, self.gates, self._alpha_before = index, [], None, None

    def sample_path(self, generator: torch.Generator, uniform: bool = False) -> None:
        """A weight step's path: uniform during warm-up, then drawn from p."""
        weights = torch.ones(len(self.candidates)) if uniform else self.probs().detach().cpu()
        self.choose(int(torch.multinomial(weights, 1, generator=generator)))

    def sample_gates(self, mode: str, generator: torch.Generator) -> None:
        """An architecture step's binary gates (see the module docstring)."""
        probs = self.probs().detach().cpu()
        if mode == "full_v2":
            self.choose(int(torch.multinomial(probs, 1, generator=generator)))
            self.involved = list(range(len(self.candidates)))
        elif mode == "two":
            pair = torch.multinomial(probs, 2, replacement=False, generator=generator).tolist()
            pick = int(torch.multinomial(F.softmax(self.alpha.detach().cpu()[pair], dim=0), 1,
                                         generator=generator))
            self.choose(pair[pick])
            self.involved = pair
            self._alpha_before = self.alpha.detach()[pair].clone()
        else:
            raise ValueError(f"grad_binary_mode: expected one of {BINARY_MODES}, got {mode!r}")
        self.gates = torch.zeros(len(self.candidates), device=self.alpha.device)
        self.gates[self.active] = 1.0
        self.gates.requires_grad_(True)

    def alpha_grad_from_gates(self, gate_grad: torch.Tensor) -> torch.Tensor:
        """sum_j dL/dg_j p_j (delta_ij - p_i) over the involved candidates (p renormalised
        on them)."""
        idx = torch.tensor(self.involved, device=self.alpha.device)
        p = F.softmax(self.alpha.detach()[idx], dim=0)
        g = gate_grad[idx]
        grad = torch.zeros_like(self.alpha)
        grad[idx] = p * (g - (p * g).sum())
        return grad

    @torch.no_grad()
    def rescale_two(self) -> None:
        """After a `two` update: keep the pair's total softmax mass as it was before the step."""
        if self._alpha_before is None:
            return
        idx = self.involved
        offset = torch.logsumexp(self.alpha[idx], 0) - torch.logsumexp(self._alpha_before, 0)
        self.alpha[idx] -= offset

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.candidates[self.active](x)
        if self.gates is None or not torch.is_grad_enabled():
            return out
        return _GateGradient.apply(out, self.gates, x, self)
