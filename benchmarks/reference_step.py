"""nas-kws's BC-ResNet against Qualcomm's reference `BCResNets`, and the whole training iteration
against the bare step, as ratios measured in one process.

Both nets get the same random 40x101 batch of 100; rounds interleave the candidates so a load
change on a shared machine hits them alike, and each ratio is the median over rounds of the
per-round ratio. The training step is forward, cross-entropy, backward and SGD (momentum 0.9,
weight decay 1e-3, as the reference's main.py); nas-kws's goes through `train.train_step` in the
memory format `fit` uses. The whole iteration is `train.train_epoch` (store -> augment ->
features -> step) on the default synthetic set with experiments/bcresnetN.yaml.

    mkdir -p bcresnet-ref
    git --git-dir=$(fetched Qualcomm-AI-research/bcresnet) archive HEAD | tar -x -C bcresnet-ref
    python benchmarks/reference_step.py --reference bcresnet-ref [--taus 1,8] [--rounds 5]
    python benchmarks/reference_step.py --reference bcresnet-ref --profile   # torch.profiler tables
"""
from __future__ import annotations

import argparse
import copy
import importlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.config import ExperimentConfig, load_config
from nas_kws.data.loader import open_dataset
from nas_kws.data.pipeline import Pipeline
from nas_kws.device import set_threads
from nas_kws.models import create_model
from nas_kws.train import build_optimizer, build_scheduler, train_epoch, train_step

BATCH = 100
ROOT = Path(__file__).resolve().parent.parent


def reference_model(directory: str, tau: float) -> nn.Module:
    """The reference net of width 8 * tau, imported from a checkout of the reference code."""
    if not (Path(directory) / "bcresnet.py").is_file():
        raise SystemExit(f"--reference {directory}: no bcresnet.py there; expected a checkout of "
                         "Qualcomm-AI-research/bcresnet")
    sys.path.insert(0, str(directory))
    return importlib.import_module("bcresnet").BCResNets(int(tau * 8))


def config_for(tau: float) -> ExperimentConfig:
    return load_config(ExperimentConfig, ROOT / "experiments" / f"bcresnet{tau:g}.yaml")


def train_step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                  cfg: ExperimentConfig | None) -> Callable[[], None]:
    """One training step: nas-kws's `train_step` when `cfg` is given, else the plain loop the
    reference's main.py runs."""
    if cfg is not None:
        fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        model, x = model.to(memory_format=fmt).train(), x.contiguous(memory_format=fmt)
        opt = build_optimizer(model.parameters(), cfg.train)
        return lambda: train_step(model, x, y, opt, cfg.train, "benchmark")
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)

    def step() -> None:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return step


def infer_fn(model: nn.Module, x: torch.Tensor, channels_last: bool) -> Callable[[], None]:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model, x = model.to(memory_format=fmt).eval(), x.contiguous(memory_format=fmt)

    def run() -> None:
        with torch.no_grad():
            model(x)
    return run


def iteration_fn(model: nn.Module, cfg: ExperimentConfig, store, steps: int,
                 frontend: nn.Module | None = None) -> Callable[[], None]:
    """`steps` whole training iterations as `fit` runs them (with another `frontend` if given)."""
    fmt = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
    model.to(memory_format=fmt)
    pipe = Pipeline(store, cfg, model.feature_config, torch.device("cpu"))
    pipe.frontend = frontend or pipe.frontend
    opt = build_optimizer(model.parameters(), cfg.train)
    sched = build_scheduler(opt, cfg.train, len(pipe.train_loader))
    return lambda: train_epoch(model, pipe, opt, sched, cfg.train, 0, fmt, max_steps=steps)


def interleaved(fns: dict[str, Callable[[], None]], rounds: int, repeats: dict[str, int]
                ) -> dict[str, list[float]]:
    """Seconds per call of each function, one list entry per round; rounds alternate the
    functions (after one untimed warm-up call each)."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(repeats.get(name, 1)):
                fn()
            times[name].append((time.perf_counter() - start) / repeats.get(name, 1))
    return times


def ratio(times: dict[str, list[float]], slow: str, fast: str) -> float:
    """Median over rounds of time(slow) / time(fast): > 1 means `fast` is faster."""
    return statistics.median(a / b for a, b in zip(times[slow], times[fast]))


def profile_table(tau: float, rows: int, store=None) -> str:
    """torch.profiler's operator table over a few nas-kws training steps, or over a few whole
    iterations (store -> augment -> features -> step) when `store` is given."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    model = create_model(f"bcresnet{tau:g}")
    if store is None:
        x = torch.randn(BATCH, 1, *model.feature_config.shape)
        y = torch.randint(0, model.num_classes, (BATCH,))
        step = train_step_fn(model, x, y, config_for(tau))
    else:
        step = iteration_fn(model, config_for(tau), store, 3)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(1 if store is not None else 3):
            step()
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reference", required=True,
                        help="checkout of Qualcomm-AI-research/bcresnet (holds bcresnet.py)")
    parser.add_argument("--taus", default="1,8")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="training steps per round")
    parser.add_argument("--iteration_steps", type=int, default=10,
                        help="whole iterations per round (one epoch start each round)")
    parser.add_argument("--no_iteration", action="store_true",
                        help="skip the whole-iteration timing (needs the synthetic set)")
    parser.add_argument("--layouts", action="store_true",
                        help="also time nas-kws's step in the other memory format than the "
                        "recipe's train.channels_last (which layout wins depends on width and "
                        "threads)")
    parser.add_argument("--profile", action="store_true",
                        help="print torch.profiler tables of nas-kws's step and whole iteration "
                        "instead")
    args = parser.parse_args()
    threads = set_threads()
    taus = [float(t) for t in args.taus.split(",")]
    store = None if args.no_iteration else open_dataset(config_for(taus[0]).data, progress=False)
    if args.profile:
        for tau in taus:
            print(f"bcresnet{tau:g}, {threads} threads, 3 training steps\n{profile_table(tau, 20)}")
            if store is not None:
                print(f"bcresnet{tau:g}, 3 whole iterations\n{profile_table(tau, 25, store)}")
        return
    print(f"batch {BATCH}, 40x101, {threads} threads, {args.rounds} interleaved rounds; "
          "ratios are medians of per-round ratios\n")
    other = " | train, other layout: nas-kws / reference" if args.layouts else ""
    print("| tau | train: nas-kws / reference | infer: nas-kws / reference "
          f"| whole iteration / bare step{other} |")
    print("|---:|---:|---:|---:|" + ("---:|" if args.layouts else ""))
    for tau in taus:
        cfg = config_for(tau)
        torch.manual_seed(0)
        ours, ref = create_model(f"bcresnet{tau:g}"), reference_model(args.reference, tau)
        x = torch.randn(BATCH, 1, *ours.feature_config.shape)
        y = torch.randint(0, ours.num_classes, (BATCH,))
        fns = {"train_ref": train_step_fn(ref, x, y, None),
               "train_ours": train_step_fn(ours, x, y, cfg)}
        # own copies: infer_fn puts its net in eval mode, and the training steps must stay in
        # train mode (batch statistics in every BN) as in `fit`
        cl = cfg.train.channels_last
        if args.layouts:
            flipped = copy.deepcopy(cfg)
            flipped.train.channels_last = not cl
            fns["train_other_layout"] = train_step_fn(copy.deepcopy(ours), x, y, flipped)
        fns.update(infer_ref=infer_fn(copy.deepcopy(ref), x, False),
                   infer_ours=infer_fn(copy.deepcopy(ours), x, cl))
        if store is not None:
            fns["iteration"] = iteration_fn(create_model(f"bcresnet{tau:g}"), cfg, store,
                                            args.iteration_steps)
        repeats = {name: args.steps for name in fns if name != "iteration"}
        times = interleaved(fns, args.rounds, repeats)
        if store is not None:
            times["iteration"] = [s / args.iteration_steps for s in times["iteration"]]
        whole = f"{ratio(times, 'iteration', 'train_ours'):.2f}" if store is not None else "-"
        flip = (f" | {ratio(times, 'train_ref', 'train_other_layout'):.2f}" if args.layouts
                else "")
        print(f"| {tau:g} | {ratio(times, 'train_ref', 'train_ours'):.2f} "
              f"| {ratio(times, 'infer_ref', 'infer_ours'):.2f} | {whole}{flip} |", flush=True)
        print(f"<!-- tau {tau:g} ms per step (median): " + ", ".join(
            f"{k} {1000 * statistics.median(v):.0f}" for k, v in times.items()) + " -->")


if __name__ == "__main__":
    main()
