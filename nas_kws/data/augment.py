"""Augmentation on whole batches, on the training device: time shift, background noise,
gain, and SpecAugment masks on the features."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from nas_kws.config import AugmentConfig


def _uniform(n: int, low: float, high: float, g: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=g, device=device)


class Augmenter:
    """Waveform augmentation. `_silence_` clips get louder noise (as in BC-ResNet)."""

    def __init__(self, cfg: AugmentConfig, noise: torch.Tensor, sample_rate: int,
                 silence_index: int | None = None):
        self.cfg = cfg
        self.noise = noise
        self.max_shift = int(round(cfg.shift_ms * sample_rate / 1000))
        self.silence_index = silence_index

    def __call__(self, waves: torch.Tensor, labels: torch.Tensor,
                 g: torch.Generator) -> torch.Tensor:
        batch, length = waves.shape
        device = waves.device
        if self.max_shift:
            m = self.max_shift
            offsets = torch.randint(0, 2 * m + 1, (batch,), generator=g, device=device)
            windows = F.pad(waves, (m, m)).unfold(1, length, 1)  # a view: (batch, 2m+1, length)
            waves = windows[torch.arange(batch, device=device), offsets]
        if len(self.noise) and self.cfg.noise_prob > 0:
            rows = torch.randint(0, len(self.noise), (batch,), generator=g, device=device)
            amp = _uniform(batch, 0.0, self.cfg.noise_max, g, device)
            if self.silence_index is not None:
                loud = _uniform(batch, 0.0, self.cfg.silence_noise_max, g, device)
                amp = torch.where(labels == self.silence_index, loud, amp)
            amp = amp * (torch.rand(batch, generator=g, device=device) < self.cfg.noise_prob)
            waves = waves + amp[:, None] * self.noise[rows]
        if self.cfg.gain_db:
            db = _uniform(batch, -self.cfg.gain_db, self.cfg.gain_db, g, device)
            waves = waves * torch.pow(10.0, db / 20)[:, None]
        return waves


def _masks(size: int, count: int, max_width: int, batch: int, g: torch.Generator,
           device) -> torch.Tensor:
    """(batch, size) boolean: `count` random bands of width 0..max_width per row."""
    pos = torch.arange(size, device=device)[None, :]
    hit = torch.zeros(batch, size, dtype=torch.bool, device=device)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (batch,), generator=g, device=device)
        start = (torch.rand(batch, generator=g, device=device) * (size - width + 1)).long()
        hit |= (pos >= start[:, None]) & (pos < (start + width)[:, None])
    return hit


class SpecAugment(nn.Module):
    """Frequency and time masks (value 0) on (B, 1, bins, frames) features, per clip."""

    def __init__(self, freq_masks: int = 0, freq_width: int = 0, time_masks: int = 0,
                 time_width: int = 0):
        super().__init__()
        self.freq_masks, self.freq_width = freq_masks, freq_width
        self.time_masks, self.time_width = time_masks, time_width

    def forward(self, feats: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        batch, _, bins, frames = feats.shape
        hit = torch.zeros(batch, bins, frames, dtype=torch.bool, device=feats.device)
        if self.freq_masks and self.freq_width:
            hit |= _masks(bins, self.freq_masks, self.freq_width, batch, g,
                          feats.device)[:, :, None]
        if self.time_masks and self.time_width:
            hit |= _masks(frames, self.time_masks, self.time_width, batch, g,
                          feats.device)[:, None, :]
        return feats.masked_fill(hit[:, None], 0.0)
