"""Training samples/s and inference clips/s of BC-ResNets, plain eager against each speed-up.

Speed-ups tried: channels_last memory format, torch.compile, and BN folding for inference.
Every figure is a ratio to the plain eager model measured in the same run.

    python benchmarks/train_step.py [--models bcresnet1,bcresnet8] [--steps 6] [--compile]
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F

from nas_kws.device import set_threads
from nas_kws.models import create_model
from nas_kws.quant.fold import fold_batchnorm

BATCH = 100


def train_rate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
               channels_last: bool) -> float:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt).train()
    x = x.contiguous(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step()
    step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(y) / (time.perf_counter() - start)


@torch.no_grad()
def infer_rate(model: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    model.eval()
    model(x)
    start = time.perf_counter()
    for _ in range(steps):
        model(x)
    return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bcresnet1,bcresnet8")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--compile", action="store_true",
                        help="also try torch.compile (slow start)")
    args = parser.parse_args()
    threads = set_threads()
    print(f"batch {BATCH}, 40x101 log-mel, {threads} threads, {args.steps} timed steps\n")
    print("| model | variant | train samples/s | x eager | infer clips/s | x eager |")
    print("|---|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        base = create_model(name)
        x = torch.randn(BATCH, 1, *base.feature_config.shape)
        y = torch.randint(0, base.num_classes, (BATCH,))
        eager_train = train_rate(copy.deepcopy(base), x, y, args.steps, False)
        eager_infer = infer_rate(copy.deepcopy(base), x, args.steps)
        rows = [("eager", eager_train, eager_infer),
                ("channels_last", train_rate(copy.deepcopy(base), x, y, args.steps, True),
                 infer_rate(copy.deepcopy(base).to(memory_format=torch.channels_last),
                            x.contiguous(memory_format=torch.channels_last), args.steps)),
                ("BN folded (inference)", None,
                 infer_rate(fold_batchnorm(copy.deepcopy(base).eval()), x, args.steps))]
        if args.compile:
            rows.append(("torch.compile", train_rate(torch.compile(copy.deepcopy(base)), x, y,
                                                     args.steps, False),
                         infer_rate(torch.compile(copy.deepcopy(base)), x, args.steps)))
        for variant, tr, inf in rows:
            tr_txt = f"{tr:,.0f} | {tr / eager_train:.2f}" if tr else "- | -"
            print(f"| {name} | {variant} | {tr_txt} | {inf:,.0f} | {inf / eager_infer:.2f} |")


if __name__ == "__main__":
    main()
