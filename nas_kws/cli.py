"""The `nas-kws` command: each command module adds its own subcommands; this file only
dispatches."""
from __future__ import annotations

import argparse
import importlib
import sys

from nas_kws.cliflags import add_debug_flag, run_main

COMMAND_MODULES = (
    "nas_kws.train_commands",
    "nas_kws.data.commands",
    "nas_kws.profiling_commands",
    "nas_kws.nas.commands",
    "nas_kws.quant.commands",
    "nas_kws.quant.export_commands",
    "nas_kws.report_commands",
    "nas_kws.demo_commands",
    "nas_kws.sweep.commands",
    "nas_kws.zoo_commands",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nas-kws", description=__doc__)
    add_debug_flag(parser)
    parser.set_defaults(nas_kws_parser=parser)  # the demo runs its steps through it
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run_main(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
