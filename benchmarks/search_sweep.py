"""Derived-net MACs across loss settings: the FLOPs regularizer must steer the search.

For each space, one seed and one short schedule, searches with Peter et al.'s mul#log at rising
beta, and with our budget loss at falling targets; prints the derived nets' MACs. Expected:
MACs fall as beta rises or the budget falls, and budget runs land within +-10% of their target.

    python benchmarks/search_sweep.py [--spaces proxyless_kws,bcresnet,hybrid] [--size small]
        [--betas 0.5,2,8] [--ref 20e6] [--budgets 20e6,10e6,5e6] [--epochs 2,8] [--arch_every 1]

(`--betas ''` or `--budgets ''` skips that half.)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from nas_kws.device import set_threads
from nas_kws.nas.search import search
from nas_kws.nas.search_config import load_search_config


def run_one(space: str, size: str, epochs: tuple[int, int], arch_every: int, loss: str,
            ref: float, beta: float, out: Path) -> dict:
    cfg = load_search_config(None, {
        "search.search_space": space, "data.synth_size": size, "train.seed": 0,
        "search.warmup_epochs": epochs[0], "search.n_epochs": epochs[1],
        "search.grad_update_arch_param_every": arch_every,
        "search.grad_reg_loss_type": loss, "search.flops_ref_value": ref,
        "search.grad_reg_loss_beta": beta})
    return search(cfg, out, progress=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--spaces", default="proxyless_kws,bcresnet,hybrid")
    p.add_argument("--size", default="small", help="synthetic set size (default small)")
    p.add_argument("--betas", default="0.5,2,8", help="mul#log betas, at --ref")
    p.add_argument("--ref", type=float, default=20e6, help="mul#log reference MACs")
    p.add_argument("--budgets", default="20e6,10e6,5e6", help="budget-loss targets")
    p.add_argument("--epochs", default="2,8", help="warm-up,search epochs")
    p.add_argument("--arch_every", type=int, default=1,
                   help="weight steps per architecture step (1: the small set has few steps)")
    args = p.parse_args()
    threads = set_threads()
    epochs = tuple(int(e) for e in args.epochs.split(","))
    settings = [("mul#log", args.ref, float(b)) for b in args.betas.split(",") if b]
    settings += [("budget", float(r), 4.0) for r in args.budgets.split(",") if r]
    print(f"synthetic set {args.size}, seed 0, {epochs[0]} warm-up + {epochs[1]} search epochs, "
          f"an architecture step every {args.arch_every} weight steps, {threads} threads\n")
    print("| space | loss | ref MACs | beta | derived MACs | x ref | supernet valid acc |")
    print("|---|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for space in args.spaces.split(","):
            for i, (loss, ref, beta) in enumerate(settings):
                shown_beta = f"{beta:g}" if loss == "mul#log" else "-"
                try:
                    m = run_one(space, args.size, epochs, args.arch_every, loss, ref, beta,
                                Path(tmp) / f"{space}{i}")
                except ValueError as err:   # a budget outside the space's MAC range
                    print(f"| {space} | {loss} | {ref / 1e6:.1f} M | {shown_beta} | {err} |")
                    continue
                print(f"| {space} | {loss} | {ref / 1e6:.1f} M | {shown_beta} | "
                      f"{m['derived_macs']:,} | {m['macs_vs_ref']:.3f} | "
                      f"{m['supernet_valid_acc']:.3f} |", flush=True)


if __name__ == "__main__":
    main()
