"""Architecture losses: cross-entropy on held-out training batches plus a MACs term, and
penalties for flash / SRAM bounds.

- mul#log (Peter et al., ProxylessNAS): CE * alpha * (log E[F] / log ref)^beta. A soft pull
  towards fewer MACs that grows with beta; it enforces no budget.
- add#linear (ProxylessNAS): CE + lambda * (E[F] - ref) / ref.
- budget (ours): CE + mu * log(E[F] / ref), with a multiplier mu that integrates the derived
  net's error after every architecture step, mu += rate * log(F_derived / ref), unless the
  derived net is already within half the tolerance. mu turns negative when the net is too
  small, so the search is pushed towards the budget from both sides; derivation then picks the
  most probable net inside ref * (1 +- tolerance) (see derive.py).
- bound_penalty (ours): weight * relu(E[cost] / limit - 1) per memory bound (flash, peak SRAM),
  added to any of the above.
"""
from __future__ import annotations

import math

import torch

REG_LOSS_TYPES = ("mul#log", "add#linear", "budget")


def arch_loss(ce: torch.Tensor, expected_macs: torch.Tensor | None, kind: str, ref: float,
              alpha: float = 1.0, beta: float = 4.0, lam: float = 0.1,
              multiplier: float = 0.0) -> torch.Tensor:
    """The architecture step's loss; `expected_macs` None means no hardware target (CE only)."""
    if expected_macs is None:
        return ce
    if kind == "mul#log":
        return alpha * ce * (torch.log(expected_macs) / math.log(ref)) ** beta
    if kind == "add#linear":
        return ce + lam * (expected_macs - ref) / ref
    if kind == "budget":
        return ce + multiplier * torch.log(expected_macs / ref)
    raise ValueError(f"grad_reg_loss_type: expected one of {REG_LOSS_TYPES}, got {kind!r}")


class BudgetMultiplier:
    """The adaptive multiplier of the budget loss (state: one float, saved with checkpoints)."""

    def __init__(self, ref: float, tolerance: float = 0.1, rate: float = 0.5, value: float = 0.0):
        if not 0 < tolerance < 1:
            raise ValueError(f"budget_tolerance: expected a fraction in (0, 1), got {tolerance}")
        self.ref, self.tolerance, self.rate, self.value = ref, tolerance, rate, value

    def within(self, macs: float) -> bool:
        return abs(macs - self.ref) <= self.tolerance * self.ref

    def update(self, derived_macs: float) -> float:
        error = math.log(derived_macs / self.ref)
        if abs(error) > math.log1p(self.tolerance / 2):
            self.value += self.rate * error
        return self.value


def bound_penalty(expected: torch.Tensor, limit: float, weight: float) -> torch.Tensor:
    """weight * relu(expected / limit - 1): nothing while the expected cost is within the bound,
    so a distribution that already respects it is left to the cross-entropy and the MACs term,
    and a pull proportional to the relative excess beyond it (scale-free, so one weight serves
    flash and SRAM). Not a log barrier: the search starts near-uniform, usually over the bound,
    where a barrier is undefined. Derivation enforces the bound exactly anyway (derive.py); the
    penalty only moves probability towards nets that respect it. An infinite limit gives 0."""
    return weight * torch.relu(expected / limit - 1)
