"""`python -m nas_kws.sweep.launch CMD ARGS...` runs `nas-kws CMD ARGS...` as one step of a sweep
trial, in a process that dies with the worker that started it: a worker killed mid-trial (kill
-9, a lost machine) leaves no step running on, holding its run directory's lock against the
retry of the trial."""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

from nas_kws.cli import main
from nas_kws.sweep.pipeline import PARENT_ENV

PR_SET_PDEATHSIG = 1   # linux/prctl.h


def die_with_parent() -> None:
    """Ask Linux for SIGKILL when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    parent = os.environ.get(PARENT_ENV)
    if parent and os.getppid() != int(parent):
        sys.exit(f"nas-kws sweep step: the worker (pid {parent}) is gone")


if __name__ == "__main__":
    die_with_parent()
    sys.exit(main(sys.argv[1:]))
