"""The supernet of a search space: the genotype net with a `MixedOp` at every searchable
position. It trains like one net (one sampled path per weight step) and exposes the
architecture parameters, their gradients through the binary gates, and the current picks."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from nas_kws.models.genotype import KWSNet, build_block, build_head, build_stem
from nas_kws.nas.mixed_op import MixedOp
from nas_kws.nas.shared_weights import share_family_weights
from nas_kws.nas.space import SearchSpace


class Supernet(KWSNet):
    """`share_weights`: the candidates of a block family at a position slice one set of conv
    weights (shared_weights.py) instead of holding their own."""

    def __init__(self, space: SearchSpace, num_classes: int = 12, share_weights: bool = False):
        blocks = []
        for position in space.positions:
            channels = position.in_shape[0]
            if position.searchable:
                candidates = [build_block(c, channels) for c in position.choices]
                if share_weights:
                    share_family_weights(position.choices, candidates)
                blocks.append(MixedOp(candidates))
            else:
                blocks.append(build_block(position.choices[0], channels))
        super().__init__(build_stem(space.stem), blocks,
                         build_head(space.head, space.head_in_shape, num_classes))
        self.space = space
        self.feature_config = space.features
        self.num_classes = num_classes
        self.mixed_ops = [b for b in self.blocks if isinstance(b, MixedOp)]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [m.alpha for m in self.mixed_ops]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def probs(self) -> list[torch.Tensor]:
        return [m.probs() for m in self.mixed_ops]

    def entropies(self) -> list[float]:
        return [m.entropy() for m in self.mixed_ops]

    def argmax(self) -> list[int]:
        return [int(m.alpha.argmax()) for m in self.mixed_ops]

    def choose(self, picks: list[int]) -> None:
        """Run the net with candidate picks[i] at searchable position i."""
        for m, k in zip(self.mixed_ops, picks):
            m.choose(k)

    def sample_paths(self, generator: torch.Generator, uniform: bool = False) -> None:
        for m in self.mixed_ops:
            m.sample_path(generator, uniform)

    def sample_gates(self, mode: str, generator: torch.Generator) -> None:
        for m in self.mixed_ops:
            m.sample_gates(mode, generator)

    def arch_backward(self, loss: torch.Tensor) -> None:
        """Set alpha.grad: the direct part (the cost term) plus the part through the gates.
        Only architecture gradients are computed; the weights get none."""
        alphas = self.arch_parameters()
        gates = [m.gates for m in self.mixed_ops]
        grads = torch.autograd.grad(loss, alphas + gates, allow_unused=True)
        for m, direct, gate_grad in zip(self.mixed_ops, grads[:len(alphas)], grads[len(alphas):]):
            grad = m.alpha_grad_from_gates(gate_grad if gate_grad is not None
                                           else torch.zeros_like(m.alpha))
            m.alpha.grad = grad if direct is None else grad + direct

    def rescale_two(self) -> None:
        for m in self.mixed_ops:
            m.rescale_two()

    @torch.no_grad()
    def recalibrate_bn(self, batches: Iterable[torch.Tensor]) -> None:
        """Re-estimate BatchNorm statistics for the current path (an average over `batches`).
        Each candidate's running statistics only move while it is sampled, so without this an
        eval-mode accuracy of the derived path mostly measures stale statistics."""
        norms = [m for m in self.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        self.train()
        for feats in batches:
            self(feats)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
