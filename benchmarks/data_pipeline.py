"""Clips/s from stored waveforms to augmented feature batches, against a naive per-file loader.

The naive baseline is the per-item pattern common in KWS code: a torch Dataset that reads and
pads one WAV per item, shifts it and mixes in noise, and computes features per clip. Both paths
do the same augmentation (SpecAugment only on the fast path) and run in the same process.

    python benchmarks/data_pipeline.py [--clips 2000] [--data_root DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from nas_kws.config import AugmentConfig, DataConfig
from nas_kws.data.augment import Augmenter, SpecAugment
from nas_kws.data.loader import BatchLoader, open_dataset, open_index
from nas_kws.device import set_threads
from nas_kws.features import FeatureConfig, Frontend

BATCH = 100


class NaiveWavDataset(Dataset):
    def __init__(self, paths: list[Path], labels: list[int], features: FeatureConfig,
                 noise: np.ndarray):
        self.paths, self.labels, self.noise = paths, labels, noise
        self.frontend = Frontend(features)
        self.length = features.num_samples
        self.rng = np.random.default_rng(0)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        audio, _ = sf.read(self.paths[i], dtype="float32")
        audio = np.pad(audio[:self.length], (0, max(0, self.length - len(audio))))
        shift = int(self.rng.integers(-1600, 1601))
        audio = np.roll(audio, shift)
        if shift > 0:
            audio[:shift] = 0
        elif shift < 0:
            audio[shift:] = 0
        if self.rng.random() < 0.8:
            gain = self.rng.uniform(0, 0.1)
            audio = audio + gain * self.noise[self.rng.integers(len(self.noise))]
        with torch.no_grad():
            feats = self.frontend(torch.from_numpy(audio.astype(np.float32))[None])[0]
        return feats, self.labels[i]


def time_naive(paths, labels, features: FeatureConfig, noise: np.ndarray) -> float:
    loader = DataLoader(NaiveWavDataset(paths, labels, features, noise), batch_size=BATCH,
                        shuffle=True)
    start = time.perf_counter()
    count = sum(len(y) for _, y in loader)
    return count / (time.perf_counter() - start)


def time_store(store, features: FeatureConfig, clips: int) -> float:
    train = store.split("train")
    loader = BatchLoader(train.audio, train.labels, BATCH, shuffle=True, seed=0,
                         indices=np.arange(min(clips, len(train.labels))))
    noise = torch.from_numpy(np.array(store.noise)).float() / 32768
    augment = Augmenter(AugmentConfig(), noise, store.sample_rate, silence_index=0)
    spec = SpecAugment(2, 7, 2, 20)
    frontend = Frontend(features)
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    count = 0
    with torch.no_grad():
        for waves, labels in loader:
            spec(frontend(augment(waves, labels, g)), g)
            count += len(labels)
    return count / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=2000)
    parser.add_argument("--data_root", help="GSC-layout data (default: the cached synthetic set)")
    args = parser.parse_args()
    threads = set_threads()
    data = DataConfig(root=args.data_root)
    index = open_index(data)
    store = open_dataset(data)
    clips = index.splits["train"][:args.clips]
    paths = [Path(index.root) / c.path for c in clips if c.gain == 1.0 and c.start == 0]
    labels = [c.label for c in clips if c.gain == 1.0 and c.start == 0]
    print(f"{len(paths)} clips, batch {BATCH}, {threads} threads\n")
    print("| features | naive clips/s | store clips/s | speed-up |\n|---|---:|---:|---:|")
    for name, features in [("log-mel 40x101", FeatureConfig.logmel()),
                           ("MFCC 10x51", FeatureConfig.mfcc(10))]:
        naive = time_naive(paths, labels, features, np.array(store.noise) / 32768)
        fast = time_store(store, features, len(paths))
        print(f"| {name} | {naive:,.0f} | {fast:,.0f} | {fast / naive:.1f}x |")


if __name__ == "__main__":
    main()
