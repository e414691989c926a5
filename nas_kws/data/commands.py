"""`nas-kws data gsc | folders | synth`: get a source, index it, decode it into the store and
print how many clips each split holds per class."""
from __future__ import annotations

import argparse
from pathlib import Path

from nas_kws.data import synth
from nas_kws.data.folders import index_folders
from nas_kws.data.gsc import TASKS, download_gsc, index_gsc
from nas_kws.data.index import DatasetIndex
from nas_kws.data.store import build_store


def store_counts(store) -> dict[str, dict[str, int]]:
    """Clips per class per split as stored: what was listed less what was skipped."""
    return {split: {name: int((arrays.labels == label).sum())
                    for label, name in enumerate(store.classes)}
            for split, arrays in store.splits.items()}


def counts_table(classes: list[str], counts: dict[str, dict[str, int]]) -> str:
    """Clips per class (rows) and split (columns), with totals."""
    splits = list(counts)
    width = max(len(c) for c in [*classes, "total"])
    cols = [max(len(s), 6) for s in splits]
    lines = ["  ".join([f"{'class':<{width}}", *(f"{s:>{w}}" for s, w in zip(splits, cols))])]
    for name in classes:
        lines.append("  ".join([f"{name:<{width}}",
                                *(f"{counts[s][name]:>{w}}" for s, w in zip(splits, cols))]))
    lines.append("  ".join([f"{'total':<{width}}",
                            *(f"{sum(counts[s].values()):>{w}}" for s, w in zip(splits, cols))]))
    return "\n".join(lines)


def _prepare(index: DatasetIndex, sample_rate: int, num_samples: int, workers: int) -> None:
    """Decode the store (or find it cached) and print the summary."""
    store = build_store(index, sample_rate=sample_rate, num_samples=num_samples, workers=workers)
    print(f"{index.source}: {index.root}")
    print(counts_table(store.classes, store_counts(store)))
    stored = ", ".join(f"{name} {len(arrays)}" for name, arrays in store.splits.items())
    print(f"store: {store.root} ({stored}; noise crops {len(store.noise)}; "
          f"{sample_rate} Hz x {num_samples} samples)")


def run_gsc(args: argparse.Namespace) -> int:
    if args.download:
        download_gsc(args.root, args.version)
    index = index_gsc(args.root, version=args.version, task=args.task, seed=args.seed)
    _prepare(index, 16000, 16000, args.workers)
    return 0


def run_folders(args: argparse.Namespace) -> int:
    if args.sample_rate <= 0 or args.duration <= 0:
        raise ValueError(f"--sample_rate and --duration must be > 0, got {args.sample_rate}, "
                         f"{args.duration}")
    _prepare(index_folders(args.root), args.sample_rate, round(args.sample_rate * args.duration),
             args.workers)
    return 0


def run_synth(args: argparse.Namespace) -> int:
    synth.generate_synth(args.out, seed=args.seed, size=args.size, progress=True,
                         workers=args.workers)
    _prepare(index_gsc(args.out, version=2, task="12class", seed=args.seed), 16000, 16000,
             args.workers)
    return 0


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    data = subparsers.add_parser("data", help="download, index and decode audio data")
    sub = data.add_subparsers(dest="data_command", required=True, metavar="SOURCE")

    gsc_p = sub.add_parser("gsc", help="Google Speech Commands v1 or v2")
    gsc_p.add_argument("--version", type=int, choices=(1, 2), default=2)
    gsc_p.add_argument("--root", type=Path, required=True,
                       help="folder holding speech_commands_v0.0N/ (or the extracted archive "
                            "itself)")
    gsc_p.add_argument("--download", action="store_true",
                       help="fetch and extract the archive and the official test set into --root")
    gsc_p.add_argument("--task", choices=TASKS, default="12class")
    gsc_p.add_argument("--seed", type=int, default=0, help="seed of the unknown/silence sampling")
    gsc_p.set_defaults(func=run_gsc)

    folders_p = sub.add_parser("folders",
                               help="your own DIR/training|validation|testing/<class>/*.wav")
    folders_p.add_argument("--root", type=Path, required=True)
    folders_p.add_argument("--sample_rate", type=int, default=16000)
    folders_p.add_argument("--duration", type=float, default=1.0, help="clip length in seconds")
    folders_p.set_defaults(func=run_folders)

    synth_p = sub.add_parser("synth", help="generate the synthetic GSC-shaped set (no download)")
    synth_p.add_argument("--out", type=Path, required=True)
    synth_p.add_argument("--seed", type=int, default=0)
    synth_p.add_argument("--size", choices=list(synth.SYNTH_SIZES), default="default")
    synth_p.set_defaults(func=run_synth)

    for parser in (gsc_p, folders_p, synth_p):
        parser.add_argument("--workers", type=int, default=2, help="worker processes")
