"""Several processes training one net (torch.distributed, DistributedDataParallel), kept out of
the loops: which process this is, what it may do, and the few collectives the loops need.

A job is distributed when torchrun started it with more than one process (`WORLD_SIZE` > 1):
`session` joins the process group (gloo on CPU, NCCL for CUDA tensors), every process trains on
its shard of each global batch, gradients are averaged, and rank 0 alone writes the run
directory. Alone (the default), every helper here is a no-op and the loops run as before.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from nas_kws.device import rng_state

PER_RANK_SEED = 1_000_003     # process r > 0 of a job seeds its dropout stream seed * this + r


def launched() -> bool:
    """torchrun started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the process that writes checkpoints, logs, metrics and prints results."""
    return rank() == 0


def shard() -> tuple[int, int]:
    """(rank, world size): which part of every global batch this process trains on."""
    return rank(), world_size()


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Join the process group for the job's duration when torchrun started several processes:
    gloo for CPU tensors, plus NCCL for CUDA tensors (each process on the GPU of its local
    rank). Alone, nothing happens."""
    if not launched():
        yield
        return
    backend = "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        backend = "cpu:gloo,cuda:nccl"
    dist.init_process_group(backend)
    try:
        yield
    finally:
        dist.destroy_process_group()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. builds the waveform store), the others after it (and
    find its result cached), so no two processes build the same files at once."""
    if world_size() > 1 and not is_main():
        dist.barrier()
    yield
    if world_size() > 1 and is_main():
        dist.barrier()


def broadcast_object(value: Any) -> Any:
    """Rank 0's `value` on every process (e.g. a run directory named after the clock)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def wrap(model: nn.Module) -> nn.Module:
    """DistributedDataParallel around `model` when several processes train it (gradients are
    averaged during the backward pass), else `model` itself. Checkpoints and evaluation keep
    using `model`."""
    if world_size() == 1:
        return model
    return nn.parallel.DistributedDataParallel(model)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients that exist over the processes, in one all-reduce. For nets whose
    active part changes every step (a supernet's sampled path): every process ran the same path,
    so every process holds gradients for the same parameters, and unused ones stay None."""
    if world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view(g.shape))
        offset += g.numel()


def sum_over_ranks(values: list[float]) -> list[float]:
    """Elementwise sums of per-process counts (loss sums, hits, clips), e.g. for epoch logs."""
    if world_size() == 1:
        return values
    total = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(total)
    return total.tolist()


def check_replicas(module: nn.Module, where: str) -> None:
    """Every process must hold bit-identical parameters (rank 0 saves them for all); a replica
    that drifted is a bug, reported with the ranks that differ. Buffers (batch-norm running
    statistics) are not compared: they follow each process's own batches, and DDP overwrites
    them with rank 0's before every forward pass."""
    if world_size() == 1:
        return
    digest = hashlib.sha1()
    for p in module.parameters():
        digest.update(p.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    digests: list[str | None] = [None] * world_size()
    dist.all_gather_object(digests, digest.hexdigest())
    drifted = [r for r, d in enumerate(digests) if d != digests[0]]
    if drifted:
        raise RuntimeError(f"{where}: the parameters of rank(s) {drifted} differ from rank 0's")


def seed_ranks(seed: int) -> None:
    """Give each process its own dropout stream once the replicas are built (nanoGPT's seed
    offset); the batch order, augmentation and path sampling use their own shared generators."""
    if world_size() > 1:
        torch.manual_seed(seed * PER_RANK_SEED + rank())


def rank_rng_states() -> dict[str, Any]:
    """{"rng_ranks": every process's RNG states} on rank 0 for its checkpoint ({} elsewhere and
    when alone): a resumed job continues each process's dropout stream exactly."""
    if world_size() == 1:
        return {}
    states: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(rng_state(), states, dst=0)
    return {"rng_ranks": states} if is_main() else {}


def own_rng_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """This process's RNG states in `checkpoint`: its own when the job had as many processes,
    else rank 0's (a job resumed with another process count continues, but not bit-for-bit)."""
    states = checkpoint.get("rng_ranks") or [checkpoint["rng"]]
    return states[rank()] if len(states) == world_size() else states[0]


def _without_nproc(argv: list[str]) -> list[str]:
    """`argv` less `--nproc N` / `--nproc=N`, which torchrun's own parser would take for an
    abbreviation of its `--nproc-per-node` (and which the processes do not need)."""
    out, args = [], iter(argv)
    for arg in args:
        if arg == "--nproc":
            next(args, None)
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python -m nas_kws ARGV` in `nproc` processes on this machine through torchrun
    (`--standalone`); returns 2 when a process stopped on an expected error (it printed that
    error in one line), and re-raises any other failure."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    cores = len(os.sched_getaffinity(0))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    try:
        run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "-m", "nas_kws",
                        *_without_nproc(argv)]))
    except ChildFailedError as err:
        _, failure = err.get_first_failure()
        if failure.exitcode == 2:
            return 2
        raise
    return 0
