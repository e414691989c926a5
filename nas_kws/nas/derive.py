"""From architecture parameters to a net: argmax per position, or, under a MACs budget, the
most probable net whose MACs fall inside the budget band."""
from __future__ import annotations

import math

import numpy as np
import torch

from nas_kws.nas.cost import MacsTable

BUDGET_RESOLUTION = 1e-4     # MACs are bucketed in units of ref * this for the budget search


def argmax_picks(probs: list[torch.Tensor]) -> list[int]:
    return [int(p.argmax()) for p in probs]


def budget_picks(probs: list[torch.Tensor], table: MacsTable, low: float, high: float) -> list[int]:
    """argmax of sum_i log p_i(k_i) subject to low <= MACs <= high, exactly, by dynamic
    programming over bucketed MACs (a multiple-choice knapsack). The bucket rounding is kept
    out of the band's edges, so the returned net's exact MACs are always inside it."""
    if table.smallest() > high or table.largest() < low:
        raise ValueError(f"budget {low:,.0f}..{high:,.0f} MACs is outside what the space can "
                         f"build ({table.smallest():,} .. {table.largest():,} MACs)")
    unit = max(1.0, high * BUDGET_RESOLUTION)
    slack = len(table.choices) * unit          # worst-case accumulated rounding
    size = int(high / unit) + 1
    best = np.full(size, -np.inf)
    start = int(round(table.fixed / unit))
    best[min(start, size - 1)] = 0.0
    back = []
    for p, macs in zip(probs, table.choices):
        logp = torch.log(p.detach().clamp_min(1e-30)).cpu().numpy()
        new = np.full(size, -np.inf)
        pick = np.zeros(size, dtype=np.int64)
        for k, m in enumerate(macs):
            shift = int(round(m / unit))
            if shift >= size:
                continue
            cand = np.full(size, -np.inf)
            cand[shift:] = best[:size - shift] + logp[k]
            better = cand > new
            new[better], pick[better] = cand[better], k
        best = new
        back.append(pick)
    lo, hi = int(math.ceil((low + slack) / unit)), int((high - slack) / unit)
    window = best[max(lo, 0):hi + 1]
    if window.size == 0 or not np.isfinite(window).any():
        raise ValueError(f"no net of this space has {low:,.0f}..{high:,.0f} MACs")
    bucket = max(lo, 0) + int(np.argmax(window))
    picks = []
    for pick, macs in zip(reversed(back), reversed(table.choices)):
        k = int(pick[bucket])
        picks.append(k)
        bucket -= int(round(macs[k] / unit))
    picks.reverse()
    return picks


def derive_picks(probs: list[torch.Tensor], table: MacsTable,
                 budget: tuple[float, float] | None = None) -> list[int]:
    """Argmax per position; with a (low, high) MACs budget, the best net inside it."""
    return argmax_picks(probs) if budget is None else budget_picks(probs, table, *budget)
