"""Device choice, thread count and seeding, shared by every job."""
from __future__ import annotations

import os
import random

import numpy as np
import torch


def set_threads() -> int:
    """Use every core this process may run on (2 here), shared out among the processes of a
    torchrun job on this machine (`LOCAL_WORLD_SIZE`); `NAS_KWS_THREADS` overrides."""
    cores = len(os.sched_getaffinity(0)) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))
    n = int(os.environ.get("NAS_KWS_THREADS", 0)) or max(1, cores)
    torch.set_num_threads(n)
    return n


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: CUDA is not available on this machine; use cpu or auto")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device {name!r}: expected auto, cpu or cuda[:N]")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
