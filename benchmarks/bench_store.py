"""Waveform store speed: decoding with 0 vs N worker processes, and one epoch read from the
memory-mapped store vs decoding the WAV files again.

    python benchmarks/bench_store.py [--clips 4000] [--workers 2]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from nas_kws.data.folders import index_folders
from nas_kws.data.store import build_store, read_clip


def make_clips(root: Path, clips: int) -> None:
    """GSC-like clips: 1 s, 16 kHz, 16-bit mono, split 80/10/10 over 10 classes."""
    rng = np.random.default_rng(0)
    for i in range(clips):
        split = "training" if i % 10 < 8 else "validation" if i % 10 == 8 else "testing"
        path = root / split / f"word{i % 7}" / f"{i:06x}_nohash_0.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(path), rng.integers(-3000, 3000, 16000, dtype=np.int16), 16000)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clips", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_clips(root / "data", args.clips)
        index = index_folders(root / "data")
        n = sum(len(v) for v in index.splits.values())
        inline = timed(lambda: build_store(index, cache_root=root / "a", progress=False, workers=0))
        pooled = timed(lambda: build_store(index, cache_root=root / "b", progress=False,
                                           workers=args.workers))
        cached = timed(lambda: build_store(index, cache_root=root / "b", progress=False))
        train = build_store(index, cache_root=root / "b", progress=False).split("train")
        order = np.random.default_rng(0).permutation(len(train))
        memmap = timed(lambda: [np.asarray(train.audio[np.sort(order[i:i + 100])], np.float32)
                                for i in range(0, len(order), 100)])
        refs = index.splits["train"]
        wavs = timed(lambda: [read_clip(root / "data" / refs[j].path, 0, 1.0, 16000, 16000)
                              for j in order])
    rows = [("build the store, 1 process", inline, n, 1.0),
            (f"build the store, {args.workers} worker processes", pooled, n, inline / pooled),
            ("open the cached store (fingerprint + mmap)", cached, n, inline / cached),
            ("train epoch decoding the WAVs", wavs, len(order), 1.0),
            ("train epoch from the memory-mapped store", memmap, len(order), wavs / memmap)]
    print(f"{n} clips of 1 s at 16 kHz")
    print(f"{'step':<44} {'seconds':>8} {'clips/s':>9} {'ratio':>7}")
    for name, seconds, clips, ratio in rows:
        print(f"{name:<44} {seconds:>8.2f} {clips / seconds:>9.0f} {ratio:>6.1f}x")


if __name__ == "__main__":
    main()
