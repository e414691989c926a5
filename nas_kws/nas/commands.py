"""`nas-kws search` and `arch_search.py`: Peter et al.'s flags onto the search config.

    python arch_search.py --flops_ref_value 20e6 --n_mfcc 10          # or: nas-kws search ...
    python arch_search.py --preset paper --grad_reg_loss_beta 4       # Peter et al.'s mul#log
    nas-kws search --strategy random --n 5 --search_space hybrid --flops_ref_value 6e6 --path R
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from nas_kws import distributed
from nas_kws.cliflags import (
    add_debug_flag,
    add_nproc_flag,
    add_quiet_flag,
    add_set_flag,
    overrides_from_args,
    run_main,
)
from nas_kws.nas.arch_loss import REG_LOSS_TYPES
from nas_kws.nas.mixed_op import BINARY_MODES
from nas_kws.nas.search_config import PRESETS, STRATEGIES, TARGETS, SearchConfig, load_search_config
from nas_kws.runs import RunDir

DISTRIBUTED_STRATEGIES = ("proxyless", "evolution")   # the supernet strategies

FLAG_KEYS = {  # flag -> config key (Peter et al.'s flag names where they exist)
    "strategy": "search.strategy", "n": "search.n_random",
    "search_space": "search.search_space", "width_mult": "search.width_mult",
    "n_epochs": "search.n_epochs", "warmup_epochs": "search.warmup_epochs",
    "arch_lr": "search.arch_lr",
    "grad_update_arch_param_every": "search.grad_update_arch_param_every",
    "grad_binary_mode": "search.grad_binary_mode", "target_hardware": "search.target_hardware",
    "flops_ref_value": "search.flops_ref_value", "grad_reg_loss_type": "search.grad_reg_loss_type",
    "grad_reg_loss_alpha": "search.grad_reg_loss_alpha",
    "grad_reg_loss_beta": "search.grad_reg_loss_beta",
    "grad_reg_loss_lambda": "search.grad_reg_loss_lambda",
    "budget_tolerance": "search.budget_tolerance", "init_lr": "train.lr",
    "max_flash_kb": "search.max_flash_kb", "max_sram_kb": "search.max_sram_kb",
    "train_batch_size": "train.batch_size", "manual_seed": "train.seed", "device": "train.device",
    "dataset": "data.dataset", "data_root": "data.root", "n_mfcc": "features.n_mfcc",
}

# the flags that take one number, in --help order: (flag, type, help; None where the name says it)
NUMBER_FLAGS: tuple[tuple[str, type, str | None], ...] = (
    ("grad_reg_loss_alpha", float, None), ("grad_reg_loss_beta", float, None),
    ("grad_reg_loss_lambda", float, None),
    ("budget_tolerance", float, "budget mode: +- fraction (0.1)"),
    ("max_flash_kb", float, "MCU flash bound of the derived / drawn nets, KiB (0: none)"),
    ("max_sram_kb", float, "MCU peak SRAM bound of the derived / drawn nets, KiB (0: none)"),
    ("arch_lr", float, None), ("warmup_epochs", int, None), ("n_epochs", int, None),
    ("grad_update_arch_param_every", int, None),
    ("init_lr", float, "weight lr of the search epochs"),
    ("train_batch_size", int, None), ("manual_seed", int, None),
)


def add_search_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--path", help="run directory (default runs/search-<space>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the search in --path")
    p.add_argument("--warmup_from", metavar="RUN",
                   help="a fresh search in --path that starts after RUN's warm-up (its "
                        "checkpoint after warmup_epochs, same warm-up settings; e.g. strategy "
                        "evolution with n_epochs 0): ablations of the search epochs share it")
    p.add_argument("--config", help="search config YAML (sections data, augment, train, search)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="paper: Peter et al.'s schedule and loss (40 warm-up + 120 search "
                        "epochs, full_v2, arch lr 4e-3, mul#log)")
    p.add_argument("--strategy", choices=STRATEGIES,
                   help="proxyless (default: the gradient search) or random (the baseline: "
                        "--n nets drawn uniformly from the space's nets inside the MAC band)")
    p.add_argument("--n", type=int, help="strategy random: how many nets (default 5)")
    p.add_argument("--search_space", help="proxyless_kws (default), bcresnet, hybrid or a .yaml")
    p.add_argument("--width_mult", type=float)
    p.add_argument("--n_mfcc", type=int, help="MFCC count for MFCC spaces (default: the space's)")
    p.add_argument("--dataset", help="synth (default, embedded synthetic set), gsc or folders")
    p.add_argument("--data_root")
    p.add_argument("--target_hardware", choices=TARGETS)
    p.add_argument("--flops_ref_value", type=float, help="MAC reference/budget, e.g. 20e6")
    p.add_argument("--grad_reg_loss_type", choices=REG_LOSS_TYPES,
                   help="budget (default: land within +-budget_tolerance of flops_ref_value), "
                        "mul#log or add#linear (Peter et al.)")
    p.add_argument("--grad_binary_mode", choices=BINARY_MODES)
    for flag, kind, text in NUMBER_FLAGS:
        p.add_argument(f"--{flag}", type=kind, help=text)
    p.add_argument("--device", help="auto (CUDA when present), cpu, cuda")
    add_set_flag(p, "train.max_steps_per_epoch=10")
    add_quiet_flag(p)


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return load_search_config(args.config, overrides_from_args(args, FLAG_KEYS), args.preset)


def print_summary(metrics: dict[str, Any], run_dir: Path) -> None:
    print(f"derived net ({metrics['search_space']}):")
    for i, label in enumerate(metrics["blocks"]):
        print(f"  block {i:2d}  {label}")
    ref = metrics["flops_ref_value"]
    print(f"MACs {metrics['derived_macs']:,} ({metrics['derived_macs'] / 1e6:.2f} M) against "
          f"flops_ref_value {ref / 1e6:.2f} M ({metrics['macs_vs_ref']:.2f}x); params "
          f"{metrics['derived_params']:,}")
    if metrics.get("supernet_valid_acc") is not None:
        print(f"derived path in the supernet: valid accuracy {metrics['supernet_valid_acc']:.4f}")
    else:
        print(f"picked {metrics['picked']} after {metrics['trained_epochs']} training epochs: "
              f"valid accuracy {metrics['best_valid_acc']:.4f}")
    print(f"genotype: {metrics['genotype']}\nretrain:  python run_exp.py --path {run_dir} --train")


def print_random(summary: dict[str, Any]) -> None:
    low, high = summary["band"]
    print(f"{summary['n']} nets drawn uniformly from the {summary['nets_in_band']:,.0f} nets of "
          f"{summary['search_space']} with {low:,.0f}..{high:,.0f} MACs:")
    for run, macs in zip(summary["runs"], summary["derived_macs"]):
        print(f"  {run}  {macs:,} MACs   retrain: python run_exp.py --path {run} --train")


def run_command(args: argparse.Namespace) -> int:
    if args.resume and args.warmup_from:
        raise ValueError("--warmup_from starts a fresh search; --resume continues one in --path")
    if args.resume:
        if not args.path:
            raise ValueError("--resume needs --path RUN_DIR")
        cfg = load_search_config(RunDir(args.path).config_path)
        run_dir = Path(args.path)
    else:
        cfg = config_from_args(args)
        run_dir = Path(args.path or distributed.broadcast_object(
            f"runs/search-{Path(cfg.search.search_space).stem}-{time.strftime('%Y%m%d-%H%M%S')}"))
    run = RunDir(run_dir)
    with run.locked():  # a second search into the same --path is refused, not interleaved
        if not args.resume and run.started and distributed.is_main():
            raise ValueError(f"{run_dir} already holds a run; use --resume or another --path")
        return _run_search(cfg, run_dir, args)


def _run_search(cfg: SearchConfig, run_dir: Path, args: argparse.Namespace) -> int:
    """The search of `cfg.search.strategy`, in `run_dir`, and its summary."""
    if distributed.world_size() > 1 and cfg.search.strategy not in DISTRIBUTED_STRATEGIES:
        raise ValueError(f"search.strategy {cfg.search.strategy}: runs in one process; torchrun "
                         f"spreads {' and '.join(DISTRIBUTED_STRATEGIES)} over several")
    if args.warmup_from and cfg.search.strategy not in DISTRIBUTED_STRATEGIES:
        raise ValueError(f"--warmup_from: search.strategy {cfg.search.strategy} has no supernet "
                         f"warm-up; {' and '.join(DISTRIBUTED_STRATEGIES)} have one")
    if cfg.search.strategy == "halving":
        from nas_kws.nas.halving import successive_halving

        metrics = successive_halving(cfg, run_dir, progress=not args.quiet)
        print_summary(metrics, run_dir)
        return 0
    if cfg.search.strategy == "random":
        from nas_kws.nas.random_search import random_search

        print_random(random_search(cfg, run_dir, progress=not args.quiet))
        return 0
    from nas_kws.nas.search import search

    metrics = search(cfg, run_dir, resume=args.resume, progress=not args.quiet,
                     warmup_from=args.warmup_from)
    if distributed.is_main():
        print_summary(metrics, run_dir)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="ProxylessNAS architecture search (arch_search.py)")
    add_search_flags(p)
    add_nproc_flag(p)
    p.set_defaults(func=run_command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="arch_search.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_search_flags(parser)
    add_debug_flag(parser)
    parser.set_defaults(func=run_command)
    return run_main(parser, argv)

