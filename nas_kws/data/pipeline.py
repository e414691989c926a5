"""Everything between the waveform store and the model: loaders, augmentation and features,
shared by training, the search and fine-tuning."""
from __future__ import annotations

import numpy as np
import torch

from nas_kws.config import ExperimentConfig
from nas_kws.data.augment import Augmenter, SpecAugment
from nas_kws.data.index import SILENCE
from nas_kws.data.loader import BatchLoader
from nas_kws.features import FeatureConfig, Frontend


def spec_augment_for(cfg: ExperimentConfig) -> SpecAugment:
    a = cfg.augment
    return SpecAugment(a.freq_masks, a.freq_width, a.time_masks, a.time_width)


class Pipeline:
    """Everything between the store and the model: loaders, augmentation and features.

    In a job of several processes (`shard` = (rank, world size)) the training loader yields this
    process's part of every global batch, and `train_batch` augments it exactly as one process
    augments those clips of the whole batch."""

    def __init__(self, store, cfg: ExperimentConfig, features: FeatureConfig, device: torch.device,
                 shard: tuple[int, int] = (0, 1)):
        if features.sample_rate != store.sample_rate or features.num_samples != store.num_samples:
            raise ValueError(f"features: {features.sample_rate} Hz x {features.num_samples} "
                             f"samples do not match the data ({store.sample_rate} Hz x "
                             f"{store.num_samples})")
        t = cfg.train
        self.store, self.device = store, device
        self.classes = list(store.classes)
        self.frontend = Frontend(features).to(device)
        silence = self.classes.index(SILENCE) if SILENCE in self.classes else None
        noise = torch.from_numpy(np.array(store.noise)).float().div_(32768.0).to(device)
        self.augment = Augmenter(cfg.augment, noise, store.sample_rate, silence)
        self.spec_augment = spec_augment_for(cfg).to(device)
        train = store.split("train")
        # a split smaller than one batch trains on that partial batch rather than on nothing
        self.train_loader = BatchLoader(train.audio, train.labels, t.batch_size, shuffle=True,
                                        seed=t.seed, balanced=t.balanced,
                                        drop_last=len(train.labels) >= t.batch_size,
                                        split="train", shard=shard)
        self.seed = t.seed
        self.shard = shard

    def loader(self, split: str, batch_size: int) -> BatchLoader:
        arrays = self.store.split(split)
        return BatchLoader(arrays.audio, arrays.labels, batch_size, split=split)

    def generator(self, epoch: int) -> torch.Generator:
        """Augmentation randomness as a function of (seed, epoch): nothing to checkpoint."""
        return torch.Generator(device=self.device).manual_seed(self.seed * 7919 + epoch)

    def train_batch(self, waves: torch.Tensor, labels: torch.Tensor,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        waves, labels = waves.to(self.device, non_blocking=True), labels.to(self.device)
        rank, world = self.shard
        part = (rank * len(labels), world * len(labels)) if world > 1 else None
        with torch.no_grad():
            feats = self.spec_augment(self.frontend(self.augment(waves, labels, g, part)), g, part)
        return feats, labels
