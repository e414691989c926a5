"""Supernet step times as ratios to a training step of the derived net (same batch, same run).

For each space, a few paths are drawn; for each, the derived net (built from its genotype)
takes a training step and the supernet takes a weight step on the same path, then an
architecture step in each binary mode. Goal: weight step at most 2x the derived net's step.

    python benchmarks/search_step.py [--spaces proxyless_kws,bcresnet,hybrid] [--batch 100]
"""
from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from nas_kws.device import set_threads
from nas_kws.models.genotype import build_from_genotype
from nas_kws.nas.arch_loss import arch_loss
from nas_kws.nas.cost import macs_table
from nas_kws.nas.space import load_space
from nas_kws.nas.supernet import Supernet


def timed(step, repeats: int) -> float:
    """Median seconds of `step()` after one warm-up call."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def bench_space(name: str, batch: int, paths: int, repeats: int) -> list[tuple[str, float]]:
    torch.manual_seed(0)
    space = load_space(name)
    supernet = Supernet(space).train()
    table = macs_table(supernet)
    supernet.to(memory_format=torch.channels_last)       # as the search and the trainer run
    x = torch.randn(batch, 1, *space.features.shape).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 12, (batch,))
    weight_opt = torch.optim.SGD(supernet.weight_parameters(), lr=0.01, momentum=0.9)
    arch_opt = torch.optim.Adam(supernet.arch_parameters(), lr=1e-3, betas=(0.0, 0.999))
    g = torch.Generator().manual_seed(0)
    derived_t, weight_t, arch_t = [], [], {"full_v2": [], "two": []}
    for _ in range(paths):
        supernet.sample_paths(g)
        picks = [m.active for m in supernet.mixed_ops]
        derived = build_from_genotype(space.genotype(picks)).train()
        derived.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(derived.parameters(), lr=0.01, momentum=0.9)

        def derived_step() -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(derived(x), y).backward()
            opt.step()

        def weight_step() -> None:
            supernet.choose(picks)
            weight_opt.zero_grad(set_to_none=True)
            F.cross_entropy(supernet(x), y).backward()
            weight_opt.step()

        derived_t.append(timed(derived_step, repeats))
        weight_t.append(timed(weight_step, repeats))
        for mode in arch_t:
            def arch_step() -> None:
                supernet.sample_gates(mode, g)
                ce = F.cross_entropy(supernet(x), y)
                loss = arch_loss(ce, table.expected(supernet.probs()), "mul#log", 20e6, beta=4)
                arch_opt.zero_grad(set_to_none=True)
                supernet.arch_backward(loss)
                arch_opt.step()
                if mode == "two":
                    supernet.rescale_two()

            arch_t[mode].append(timed(arch_step, max(1, repeats // 2)))
    base = sum(derived_t) / paths
    rows = [("derived net train step", base), ("supernet weight step", sum(weight_t) / paths)]
    rows += [(f"supernet arch step ({mode})", sum(t) / paths) for mode, t in arch_t.items()]
    return [(label, seconds, seconds / base) for label, seconds in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default="proxyless_kws,bcresnet,hybrid")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--paths", type=int, default=3, help="sampled paths averaged per space")
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args()
    threads = set_threads()
    print(f"batch {args.batch}, {threads} threads, {args.paths} sampled paths per space\n")
    print("| space | step | ms | x derived step |\n|---|---|---:|---:|")
    for name in args.spaces.split(","):
        for label, seconds, ratio in bench_space(name, args.batch, args.paths, args.repeats):
            print(f"| {name} | {label} | {seconds * 1e3:.1f} | {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
