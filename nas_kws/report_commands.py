"""`nas-kws compare RUN... [--baselines ...]`: the comparison report (see nas_kws.report)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_compare(args: argparse.Namespace) -> int:
    from nas_kws.report import MARKDOWN, REPORT_FILES, compare
    from nas_kws.sweep.results import expand_sweeps

    baselines = [b for b in (args.baselines or "").split(",") if b]
    rows = compare(expand_sweeps(args.runs), args.out, baselines, args.train_missing,
                   args.baseline_epochs)
    print((Path(args.out) / MARKDOWN).read_text())
    print(f"written: {args.out}/{', '.join(REPORT_FILES)} ({len(rows)} models)")
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("compare",
                              help="table (Markdown, CSV) and plots of runs side by side")
    p.add_argument("runs", nargs="+", metavar="RUN",
                   help="run directories; a sweep folder stands for its Pareto nets")
    p.add_argument("--baselines", help="models that must appear, e.g. bcresnet1,bcresnet8,dscnn_s")
    p.add_argument("--train_missing", action="store_true",
                   help="train missing baselines with their recipes on the first run's data "
                        "and seeds")
    p.add_argument("--baseline_epochs", type=int, help="epochs for baselines trained here "
                                                       "(default: the recipe's)")
    p.add_argument("--out", default="runs/report", help="output folder (default runs/report)")
    p.set_defaults(func=cmd_compare)
