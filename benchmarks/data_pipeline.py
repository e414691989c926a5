"""Clips/s from stored waveforms to augmented feature batches, against a naive per-file loader.

The naive baseline is the pattern of the reference BC-ResNet code: a torch Dataset that reads
and pads one WAV per item and computes features per clip. Both run here, in the same process.

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
    def __init__(self, paths: list[Path], labels: list[int], features: FeatureConfig):
        self.paths, self.labels = paths, labels
        self.frontend = Frontend(features)
        self.length = features.num_samples

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        audio, _ = sf.read(self.paths[i], dtype="float32")
        audio = np.pad(audio[:self.length], (0, max(0, self.length - len(audio))))
        with torch.no_grad():
            feats = self.frontend(torch.from_numpy(audio)[None])[0]
        return feats, self.labels[i]


def time_naive(paths, labels, features: FeatureConfig) -> float:
    loader = DataLoader(NaiveWavDataset(paths, labels, features), batch_size=BATCH, shuffle=True)
    start = time.perf_counter()
    count = sum(len(y) for _, y in loader)
    return count / (time.perf_counter() - start)


def time_store(store, features: FeatureConfig, clips: int) -> float:
    train = store.split("train")
    loader = BatchLoader(train.audio, train.labels, BATCH, shuffle=True, seed=0,
                         indices=np.arange(min(clips, len(train.labels))))
    noise = torch.from_numpy(store.noise[:]).float() / 32768
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
    print(f"| features | naive clips/s | store clips/s | speed-up |\n|---|---:|---:|---:|")
    for name, features in [("log-mel 40x101", FeatureConfig.logmel()),
                           ("MFCC 10x51", FeatureConfig.mfcc(10))]:
        naive = time_naive(paths, labels, features)
        fast = time_store(store, features, len(paths))
        print(f"| {name} | {naive:,.0f} | {fast:,.0f} | {fast / naive:.1f}x |")


if __name__ == "__main__":
    main()
