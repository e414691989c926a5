"""How fast does the supernet learn as the number of paths it trains grows? The diagnostic behind
the README's supernet paragraph (paths drawn afresh every step stay at chance without the
warm-up recipe of nas/sandwich.py).

Trains a fresh supernet of a space for E epochs with weight steps that cycle through K fixed
paths drawn uniformly from the budget band (K = 0: a new band path every step), and prints the
training accuracy per epoch for each K; `--switch N` trains one path for N epochs and then
scores other band paths, without updating, on the same batches.

    python benchmarks/supernet_paths.py --paths 1,3,10,0 --epochs 3 [--share_weights]
    python benchmarks/supernet_paths.py --switch 4 [--share_weights]
"""
from __future__ import annotations

import argparse
import tempfile

import numpy as np
import torch

from nas_kws.device import set_threads
from nas_kws.nas.search import _Search
from nas_kws.nas.search_config import load_search_config
from nas_kws.train import train_step


def open_job(args: argparse.Namespace) -> _Search:
    cfg = load_search_config(None, {
        "search.search_space": args.space, "search.flops_ref_value": args.budget,
        "search.strategy": "evolution", "search.path_sampling": "band",
        "search.share_weights": args.share_weights, "data.synth_size": args.synth_size,
        "train.lr": args.lr, "train.weight_decay": 1e-3, "train.batch_size": args.batch_size})
    job = _Search(cfg, tempfile.mkdtemp(prefix="supernet-paths-"), None, progress=False)
    for group in job.weight_opt.param_groups:
        group["lr"] = args.lr
    return job


def epoch_batches(job: _Search, epoch: int):
    job.weight_loader.set_epoch(epoch)
    generator = job.pipe.generator(epoch)
    for waves, labels in job.weight_loader:
        feats, labels = job.pipe.train_batch(waves, labels, generator)
        yield feats.contiguous(memory_format=job.memory_format), labels


def train_paths(job: _Search, paths: int, epochs: int) -> list[float]:
    """Training accuracy per epoch when weight steps cycle through `paths` band paths."""
    pool = job.sampler.draw_distinct(paths, np.random.default_rng(0)) if paths else []
    accuracies = []
    for epoch in range(epochs):
        rng, correct, seen = np.random.default_rng([1, epoch]), 0, 0
        for step, (feats, labels) in enumerate(epoch_batches(job, epoch)):
            job.supernet.choose(pool[step % len(pool)] if pool else job.sampler.draw(rng))
            _, logits = train_step(job.supernet, feats, labels, job.weight_opt, job.t, "step")
            correct += int((logits.argmax(1) == labels).sum())
            seen += len(labels)
        accuracies.append(correct / seen)
    return accuracies


@torch.no_grad()
def other_paths(job: _Search, trained: list[int], batches: list, n: int) -> None:
    for picks in job.sampler.draw_distinct(n, np.random.default_rng(7)):
        job.supernet.choose(picks)
        acc = np.mean([(job.supernet(f).argmax(1) == y).float().mean().item() for f, y in batches])
        same = sum(a == b for a, b in zip(picks, trained))
        print(f"| {picks} | {same} | {100 * acc:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--space", default="hybrid")
    p.add_argument("--budget", type=float, default=6e6)
    p.add_argument("--paths", default="1,3,10,0", help="paths per run (0: a new one each step)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--switch", type=int, help="train one path N epochs, then score 10 others")
    p.add_argument("--share_weights", action="store_true")
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--batch_size", type=int, default=100)
    p.add_argument("--synth_size", default="default")
    args = p.parse_args()
    threads = set_threads()
    print(f"{args.space} at {args.budget:,.0f} MACs, share_weights={args.share_weights}, "
          f"lr {args.lr}, batch {args.batch_size}, {threads} threads")
    if args.switch:
        job = open_job(args)
        trained = job.sampler.draw_distinct(1, np.random.default_rng(0))[0]   # train_paths' path
        accs = train_paths(job, 1, args.switch)
        print(f"one path, training accuracy per epoch: {[round(100 * a, 1) for a in accs]}")
        batches = list(epoch_batches(job, args.switch))[:3]
        print("| other band path | positions shared | accuracy % (train mode, no update) |")
        print("|---|---:|---:|")
        other_paths(job, trained, batches, 10)
        return
    print("| paths | training accuracy % per epoch |\n|---:|---|")
    for k in (int(x) for x in args.paths.split(",")):
        accs = train_paths(open_job(args), k, args.epochs)
        print(f"| {k or 'new each step'} | {' / '.join(f'{100 * a:.1f}' for a in accs)} |",
              flush=True)


if __name__ == "__main__":
    main()
