"""Weight steps that make a weight-sharing supernet learn on a small set: the teacher path
trained first and then on every step (Once-for-All's progressive shrinking: the largest net
first), and the sandwich rule with in-place distillation (BigNAS): each weight step trains the
teacher path on the labels and a few sampled paths on the teacher's soft predictions, summing
their gradients into one update.

Why: on a set of ~2,000 clips an epoch is ~20 steps, and paths drawn afresh every step give
each candidate a tenth of them, in ever different company, so no path gets past chance. A
teacher path that trains on every step learns like a net alone; with `share_weights` its
convolutions and batch-norm affines are the ones the smaller candidates of its family slice,
and its soft labels are an easier target for the sampled paths than the hard ones.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from nas_kws.config import TrainConfig
from nas_kws.nas.cost import MacsTable
from nas_kws.nas.space import SearchSpace
from nas_kws.nas.supernet import Supernet
from nas_kws.train import check_finite


def teacher_picks(space: SearchSpace, table: MacsTable, op: str) -> list[int]:
    """The teacher path: at each position the candidate with the most MACs, among those of op
    `op` where the position has one (`largest`: among all, BigNAS's largest net)."""
    picks = []
    for i, position in enumerate(space.searchable):
        ks = [k for k, c in enumerate(position.choices) if c["op"] == op] or range(
            len(position.choices))
        picks.append(max(ks, key=lambda k: table.choices[i][k]))
    return picks


def warmup_path(teacher: list[int], draw: Callable[[], list[int]], epoch: int,
                teacher_epochs: int, open_epochs: int, rng: np.random.Generator) -> list[int]:
    """A weights-only step's path: the teacher for the first `teacher_epochs`; then a drawn
    path whose positions each keep the teacher's candidate with a chance that falls linearly
    to 0 over `open_epochs` (progressive shrinking, all dimensions at once)."""
    if epoch < teacher_epochs:
        return teacher
    picks = draw()
    if open_epochs:
        opened = min(1.0, (epoch - teacher_epochs + 1) / open_epochs)
        picks = [k if rng.random() < opened else t for k, t in zip(picks, teacher)]
    return picks


def _backward(loss: torch.Tensor, where: str) -> None:
    check_finite(loss, where)
    loss.backward()


def sandwich_step(supernet: Supernet, feats: torch.Tensor, labels: torch.Tensor,
                  optimizer: torch.optim.Optimizer, cfg: TrainConfig, teacher: list[int],
                  draw: Callable[[], list[int]], paths: int, where: str,
                  after_backward: Callable[[], None]) -> tuple[float, int]:
    """One update from the teacher path (cross-entropy on the labels) and `paths` drawn paths
    (cross-entropy on the teacher's detached soft predictions). Returns the teacher's loss and
    the drawn paths' correct predictions (the accuracy of the sampled nets, not the teacher's)."""
    optimizer.zero_grad(set_to_none=True)
    supernet.choose(teacher)
    logits = supernet(feats)
    loss = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    _backward(loss, where)
    soft = F.softmax(logits.detach().float(), dim=1)
    hits = 0
    for _ in range(paths):
        supernet.choose(draw())
        out = supernet(feats)
        _backward(F.cross_entropy(out, soft), where)
        hits += int((out.detach().argmax(1) == labels).sum())
    after_backward()
    optimizer.step()
    return loss.item(), hits
