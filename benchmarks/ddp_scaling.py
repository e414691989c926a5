"""Training samples/s of BC-ResNets in 1 process against N processes (DistributedDataParallel
through torchrun, gloo on CPU), on the same global batch, as ratios measured in the same run.

Each job reads its part of every global batch of random clips from a BatchLoader, computes
log-mel features and takes the trainer's step (`train.train_step`) on the wrapped model, as
`nas-kws train --nproc N` does. Processes share the machine's cores (`set_threads`): 1 process
uses them all, N processes use cores / N threads each, so on a 2-core machine little is to be
gained; the script is meant for machines with more cores or GPUs.

    python benchmarks/ddp_scaling.py [--models bcresnet1,bcresnet8] [--nproc 2] [--steps 8]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import torch

from nas_kws import distributed
from nas_kws.config import TrainConfig
from nas_kws.data.loader import BatchLoader
from nas_kws.device import pick_device, set_threads
from nas_kws.features import Frontend
from nas_kws.models import create_model
from nas_kws.nas.search import endless
from nas_kws.train import build_optimizer, train_step

BATCH = 100        # the global batch of the BC-ResNet recipes
WARMUP_STEPS = 2


def worker(model_name: str, steps: int) -> None:
    """One process of a job: time `steps` training steps; rank 0 prints one JSON line."""
    with distributed.session():
        threads = set_threads()
        device = pick_device("auto")
        torch.manual_seed(0)
        model = create_model(model_name).to(device, memory_format=torch.channels_last)
        features = model.feature_config
        rng = np.random.default_rng(0)
        audio = rng.integers(-3000, 3000, (4 * BATCH, features.num_samples), dtype=np.int16)
        labels = rng.integers(0, model.num_classes, 4 * BATCH)
        loader = BatchLoader(audio, labels, BATCH, shuffle=True, drop_last=True,
                             split="random clips", shard=distributed.shard())
        frontend = Frontend(features).to(device)
        cfg = TrainConfig()
        replicas = distributed.wrap(model).train()
        optimizer = build_optimizer(model.parameters(), cfg)
        batches = endless(loader, 0)

        def step() -> None:
            waves, y = next(batches)
            with torch.no_grad():
                feats = frontend(waves.to(device)).contiguous(memory_format=torch.channels_last)
            train_step(replicas, feats, y.to(device), optimizer, cfg, "benchmark")

        for _ in range(WARMUP_STEPS):
            step()
        started = time.perf_counter()
        for _ in range(steps):
            step()             # each step's gradient all-reduce keeps the processes in step
        seconds = time.perf_counter() - started
        if distributed.is_main():
            print(json.dumps({"samples_per_s": steps * BATCH / seconds, "threads": threads}))


def measure(model_name: str, nproc: int, steps: int) -> dict:
    """Run a job of `nproc` processes through torchrun; rank 0's result."""
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          f"--nproc-per-node={nproc}", __file__, "--worker", "--models",
                          model_name, "--steps", str(steps)],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bcresnet1,bcresnet8")
    parser.add_argument("--nproc", type=int, default=2, help="processes to compare with 1")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per job")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.models, args.steps)
        return
    print(f"global batch {BATCH}, 40x101 log-mel, {args.steps} timed steps, "
          f"{pick_device('auto').type}\n")
    print("| model | processes | threads each | train samples/s | x 1 process |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models.split(","):
        alone = measure(name, 1, args.steps)
        spread = measure(name, args.nproc, args.steps)
        for nproc, result in ((1, alone), (args.nproc, spread)):
            print(f"| {name} | {nproc} | {result['threads']} | {result['samples_per_s']:,.1f} | "
                  f"{result['samples_per_s'] / alone['samples_per_s']:.2f} |", flush=True)


if __name__ == "__main__":
    main()
