"""From a data config to batches: open (or build) the waveform store, then iterate it.

Epochs read the memory-mapped int16 store, never WAV files; order is a function of
(seed, epoch) only, so a resumed run sees exactly the batches an uninterrupted one would.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from nas_kws import distributed
from nas_kws.config import DataConfig
from nas_kws.data.index import DatasetIndex

DATASETS = ("synth", "gsc", "folders")


def open_index(cfg: DataConfig) -> DatasetIndex:
    from nas_kws.data.folders import index_folders
    from nas_kws.data.gsc import index_gsc

    if cfg.dataset not in DATASETS:
        raise ValueError(f"data.dataset: expected one of {DATASETS}, got {cfg.dataset!r}")
    if cfg.dataset == "folders":
        if cfg.root is None:
            raise ValueError("data.root: dataset 'folders' needs --data_root DIR "
                             "(DIR/training|validation|testing/<class>/*.wav)")
        return index_folders(cfg.root)
    if cfg.dataset == "gsc" and cfg.root is None:
        raise ValueError("data.root: dataset 'gsc' needs --data_root DIR; get the data with "
                         "`nas-kws data gsc --version 2 --root DIR --download`")
    root = cfg.root
    if root is None:
        from nas_kws.data.synth import ensure_synth

        root = ensure_synth(seed=cfg.seed, size=cfg.synth_size)
    if cfg.dataset == "gsc":
        return index_gsc(root, version=cfg.version, task=cfg.task, seed=cfg.seed)
    index = index_gsc(root, version=2, task=cfg.task, seed=cfg.seed)
    index.source = f"synth/{cfg.task}"
    return index


def open_dataset(cfg: DataConfig, progress: bool = True):
    """Index the source and return its waveform store, decoding it on first use only (by rank 0
    first in a job of several processes; the others then open its cache)."""
    from nas_kws.data.store import build_store

    with distributed.main_first():
        index = open_index(cfg)
        return build_store(index, sample_rate=cfg.sample_rate,
                           num_samples=int(round(cfg.sample_rate * cfg.duration)),
                           progress=progress and distributed.is_main())


class BatchLoader:
    """Batches of (float waveforms in [-1, 1], labels) from packed int16 arrays; `split` names
    them in errors.

    `shard` = (rank, world size) of a job of several processes: every process draws the same
    global batches (`batch_size` clips) and reads its equal, contiguous part of each, so together
    they train on exactly the clips one process would. A last partial batch is cut to a
    multiple of the world size (at most world size - 1 clips of it are left out)."""

    def __init__(self, audio: np.ndarray, labels: np.ndarray, batch_size: int,
                 shuffle: bool = False, seed: int = 0, balanced: bool = False,
                 drop_last: bool = False, indices: np.ndarray | None = None,
                 split: str = "given", shard: tuple[int, int] = (0, 1)):
        if batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
        rank, world = shard
        if batch_size % world:
            raise ValueError(f"train.batch_size {batch_size}: the global batch ({split}) must "
                             f"split evenly over the {world} processes")
        self.audio = audio
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)
        if len(self.indices) == 0:
            raise ValueError(f"the {split} split has no clips: the dataset lists none for it, "
                             "or every one was skipped as unreadable")
        if len(self.indices) < world:
            raise ValueError(f"the {split} split has {len(self.indices)} clips, fewer than the "
                             f"{world} processes sharing each batch")
        self.batch_size = batch_size
        self.shuffle = shuffle or balanced
        self.balanced = balanced
        self.seed = seed
        self.drop_last = drop_last
        self.rank, self.world = rank, world
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        """Global batches; a last partial one counts when every process gets a clip of it."""
        full, rest = divmod(len(self.indices), self.batch_size)
        return full + int(not self.drop_last and rest >= self.world)

    def order(self) -> np.ndarray:
        """This epoch's sample order: shuffled, or drawn with class-balanced weights."""
        if not self.shuffle:
            return self.indices
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.balanced:
            labels = torch.from_numpy(self.labels[self.indices])
            weights = 1.0 / torch.bincount(labels).float()[labels]
            picks = torch.multinomial(weights, len(self.indices), replacement=True, generator=g)
        else:
            picks = torch.randperm(len(self.indices), generator=g)
        return self.indices[picks.numpy()]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self.order()
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            if self.world > 1:
                part = len(idx) // self.world
                idx = idx[self.rank * part:(self.rank + 1) * part]
            rows = np.sort(idx)
            inverse = np.argsort(np.argsort(idx))
            # x * 2^-15 is exactly x / 32768, and a multiply is ~2x faster than a divide here
            waves = torch.from_numpy(np.asarray(self.audio[rows])[inverse]).float().mul_(2.0 ** -15)
            yield waves, torch.from_numpy(self.labels[idx])
