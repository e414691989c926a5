"""Evolutionary search over a trained supernet (as in SPOS and Once-for-All): nets of the MAC
band are scored by a fitness function (the supernet's accuracy on that path, batch norm
recalibrated), the best become parents, and children are made by uniform crossover and per-position
mutation, redrawn until they lie in the band. Fitness values are cached per net, so the budget
of evaluations is population + generations * children at most.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from nas_kws.nas.sample import BandSampler


@dataclass
class Scored:
    picks: list[int]
    macs: int
    fitness: float
    generation: int


def mutate(picks: list[int], sampler: BandSampler, rate: float, rng: np.random.Generator,
           tries: int = 50) -> list[int]:
    """Each position redrawn uniformly with probability `rate` (at least one), inside the band."""
    n_choices = [len(m) for m in sampler.table.choices]
    for _ in range(tries):
        child = list(picks)
        positions = [i for i in range(len(child)) if rng.random() < rate]
        for i in positions or [int(rng.integers(len(child)))]:
            child[i] = int(rng.integers(n_choices[i]))
        if child != picks and sampler.accepts(child):
            return child
    return sampler.draw(rng)


def crossover(a: list[int], b: list[int], sampler: BandSampler, rng: np.random.Generator,
              tries: int = 50) -> list[int]:
    """Each position from either parent, inside the band (else the first parent mutated)."""
    for _ in range(tries):
        child = [x if rng.random() < 0.5 else y for x, y in zip(a, b)]
        if sampler.accepts(child):
            return child
    return a


def evolve(fitness: Callable[[list[int]], float], sampler: BandSampler, rng: np.random.Generator,
           population: int = 16, generations: int = 6, parents: int = 6,
           mutation_rate: float = 0.15,
           on_scored: Callable[[Scored], None] | None = None) -> list[Scored]:
    """Every scored net, best first."""
    cache: dict[tuple[int, ...], Scored] = {}

    def score(picks: list[int], generation: int) -> Scored:
        key = tuple(picks)
        if key not in cache:
            cache[key] = Scored(picks, sampler.table.of(picks), fitness(picks), generation)
            if on_scored:
                on_scored(cache[key])
        return cache[key]

    pool = [score(p, 0) for p in sampler.draw_distinct(population, rng)]
    for generation in range(1, generations + 1):
        elite = sorted(pool, key=lambda s: -s.fitness)[:parents]
        children = []
        for k in range(population - parents):
            if k % 2 == 0:
                child = mutate(elite[int(rng.integers(len(elite)))].picks, sampler,
                               mutation_rate, rng)
            else:
                i, j = rng.choice(len(elite), 2, replace=False)
                child = mutate(crossover(elite[i].picks, elite[j].picks, sampler, rng), sampler,
                               mutation_rate / 2, rng)
            children.append(score(child, generation))
        pool = elite + children
    return sorted(cache.values(), key=lambda s: -s.fitness)
