"""Augmentation on whole batches, on the training device: time shift, background noise,
gain, and SpecAugment masks on the features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.config import AugmentConfig


class Draws:
    """One random number per clip of a batch. `part` = (first row, global batch size) when this
    process holds rows of a larger global batch (nas_kws.distributed): the numbers are drawn
    for the whole global batch and cut to those rows, so each clip gets exactly what it gets
    when one process augments the whole batch, and every process's generator stays in step."""

    def __init__(self, batch: int, g: torch.Generator, device,
                 part: tuple[int, int] | None = None):
        start, self.total = part or (0, batch)
        self.rows = slice(start, start + batch)
        self.batch, self.g, self.device = batch, g, device

    def rand(self) -> torch.Tensor:
        return torch.rand(self.total, generator=self.g, device=self.device)[self.rows]

    def uniform(self, low: float, high: float) -> torch.Tensor:
        return low + (high - low) * self.rand()

    def randint(self, low: int, high: int) -> torch.Tensor:
        return torch.randint(low, high, (self.total,), generator=self.g,
                             device=self.device)[self.rows]


class Augmenter:
    """Waveform augmentation. `_silence_` clips get louder noise (as in BC-ResNet)."""

    def __init__(self, cfg: AugmentConfig, noise: torch.Tensor, sample_rate: int,
                 silence_index: int | None = None):
        self.cfg = cfg
        self.noise = noise
        self.max_shift = int(round(cfg.shift_ms * sample_rate / 1000))
        self.silence_index = silence_index

    def __call__(self, waves: torch.Tensor, labels: torch.Tensor, g: torch.Generator,
                 part: tuple[int, int] | None = None) -> torch.Tensor:
        """`part`: these clips' place in a global batch (see `Draws`)."""
        batch, length = waves.shape
        device = waves.device
        draw = Draws(batch, g, device, part)
        if self.max_shift:
            m = self.max_shift
            offsets = draw.randint(0, 2 * m + 1)
            windows = F.pad(waves, (m, m)).unfold(1, length, 1)  # a view: (batch, 2m+1, length)
            waves = windows[torch.arange(batch, device=device), offsets]
        if len(self.noise) and self.cfg.noise_prob > 0:
            rows = draw.randint(0, len(self.noise))
            amp = draw.uniform(0.0, self.cfg.noise_max)
            if self.silence_index is not None:
                loud = draw.uniform(0.0, self.cfg.silence_noise_max)
                amp = torch.where(labels == self.silence_index, loud, amp)
            amp = amp * (draw.rand() < self.cfg.noise_prob)
            waves = waves + amp[:, None] * self.noise[rows]
        if self.cfg.gain_db:
            db = draw.uniform(-self.cfg.gain_db, self.cfg.gain_db)
            waves = waves * torch.pow(10.0, db / 20)[:, None]
        return waves


def _masks(size: int, count: int, max_width: int, draw: Draws) -> torch.Tensor:
    """(batch, size) boolean: `count` random bands of width 0..max_width per row."""
    pos = torch.arange(size, device=draw.device)[None, :]
    hit = torch.zeros(draw.batch, size, dtype=torch.bool, device=draw.device)
    for _ in range(count):
        width = draw.randint(0, max_width + 1)
        start = (draw.rand() * (size - width + 1)).long()
        hit |= (pos >= start[:, None]) & (pos < (start + width)[:, None])
    return hit


class SpecAugment(nn.Module):
    """Frequency and time masks (value 0) on (B, 1, bins, frames) features, per clip."""

    def __init__(self, freq_masks: int = 0, freq_width: int = 0, time_masks: int = 0,
                 time_width: int = 0):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, feats: torch.Tensor, g: torch.Generator,
                part: tuple[int, int] | None = None) -> torch.Tensor:
        """`part`: these clips' place in a global batch (see `Draws`)."""
        batch, _, bins, frames = feats.shape
        draw = Draws(batch, g, feats.device, part)
        hit = torch.zeros(batch, bins, frames, dtype=torch.bool, device=feats.device)
        if self.freq_masks and self.freq_width:
            hit |= _masks(bins, self.freq_masks, self.freq_width, draw)[:, :, None]
        if self.time_masks and self.time_width:
            hit |= _masks(frames, self.time_masks, self.time_width, draw)[:, None, :]
        return feats.masked_fill(hit[:, None], 0.0)
