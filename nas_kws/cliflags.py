"""What every command line shares, so all of them read the same way:

- `add_set_flag`, `add_quiet_flag`, `add_debug_flag`: the `--set KEY=VALUE`, `--quiet` and
  `--debug` flags;
- `add_nproc_flag`: `--nproc N` for the commands that train in several processes (train,
  search, quantize qat), which `run_main` then starts through torchrun;
- `overrides_from_args`: named flags that are shortcuts for config keys, given as one
  {flag dest: dotted config key} map per command, plus `--set`, as dotted overrides;
- `run_main`: the one top-level error handler of `nas-kws`, arch_search.py and run_exp.py; it
  also joins the process group of a torchrun job (nas_kws.distributed).
"""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from typing import Any

from nas_kws import distributed
from nas_kws.config import check_at_least, parse_set_flags
from nas_kws.device import set_threads
from nas_kws.errors import EXPECTED_ERRORS


def add_set_flag(p: argparse.ArgumentParser,
                 example: str = "train.weight_decay=0 augment.shift_ms=50",
                 what: str = "any other config key") -> None:
    """`--set KEY=VALUE ...`: reaches every config key that has no flag of its own."""
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help=f"{what}, e.g. --set {example}")


def add_quiet_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_debug_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true",
                   help="show the traceback of expected errors (bad input, missing files) too")


def add_nproc_flag(p: argparse.ArgumentParser) -> None:
    """`--nproc N`: run the command in N processes on this machine (torchrun --standalone); the
    command then also runs under `torchrun ... -m nas_kws`, on one or several machines."""
    p.add_argument("--nproc", type=int, metavar="N",
                   help="train in N processes on this machine (DistributedDataParallel through "
                        "torchrun; gloo on CPU, NCCL on CUDA)")


def overrides_from_args(args: argparse.Namespace, flag_keys: Mapping[str, str]) -> dict[str, Any]:
    """Dotted config overrides ({"train.lr": 0.05, ...}) from the flags of `flag_keys`
    ({flag dest: config key}) that were given, then `--set` pairs, which win."""
    overrides = {key: getattr(args, flag) for flag, key in flag_keys.items()
                 if getattr(args, flag) is not None}
    overrides.update(parse_set_flags(getattr(args, "set", None) or []))
    return overrides


def run_main(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse `argv` and run `args.func(args)` (set with `set_defaults(func=...)`).

    An expected error (`nas_kws.errors.EXPECTED_ERRORS`) becomes one line `PROG CMD: error: ...`
    on stderr and exit code 2, as argparse reports a bad flag; with `--debug` (add it with
    `add_debug_flag`) it is raised with its traceback. Any other exception is a bug and always
    keeps its traceback.
    """
    args = parser.parse_args(argv)
    set_threads()
    try:
        nproc = _processes(args)
        if nproc > 1 and not distributed.launched():
            return distributed.launch(nproc, sys.argv[1:] if argv is None else list(argv))
        with distributed.session():
            return args.func(args) or 0
    except EXPECTED_ERRORS as err:
        if getattr(args, "debug", False):
            raise
        name = " ".join(filter(None, [parser.prog, getattr(args, "command", None)]))
        print(f"{name}: error: {err}", file=sys.stderr)
        return 2


def _processes(args: argparse.Namespace) -> int:
    """`--nproc` (1 without it). Under torchrun it must match the processes per machine, and a
    command without the flag cannot run there: it would write its files from every process."""
    if "nproc" not in args:
        if distributed.launched():
            raise ValueError("this command runs in one process; torchrun runs train, search "
                             "and quantize qat")
        return 1
    if args.nproc is None:
        return 1
    check_at_least(args.nproc, 1, "--nproc")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if distributed.launched() and args.nproc != local:
        raise ValueError(f"--nproc {args.nproc}: torchrun started {local} processes on this "
                         "machine; leave --nproc out under torchrun")
    return args.nproc
