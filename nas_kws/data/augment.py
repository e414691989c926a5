"""Augmentation on whole batches, on the training device: time shift, background noise,
gain, and SpecAugment masks on the features."""
from __future__ import annotations

import torch
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
        """`part`: these clips' place in a global batch (see `Draws`). The result is a new
        tensor: the picked noise rows scaled (or zeros), with each clip added at its shift."""
        batch, length = waves.shape
        draw = Draws(batch, g, waves.device, part)
        shifts = draw.randint(-self.max_shift, self.max_shift + 1) if self.max_shift else None
        if len(self.noise) and self.cfg.noise_prob > 0:
            rows = draw.randint(0, len(self.noise))
            amp = draw.uniform(0.0, self.cfg.noise_max)
            if self.silence_index is not None:
                loud = draw.uniform(0.0, self.cfg.silence_noise_max)
                amp = torch.where(labels == self.silence_index, loud, amp)
            amp = amp * (draw.rand() < self.cfg.noise_prob)
            out = self.noise.index_select(0, rows).mul_(amp[:, None])
        else:
            out = torch.zeros_like(waves)
        if shifts is None:
            out += waves
        else:
            add_shifted(out, waves, shifts.tolist())
        if self.cfg.gain_db:
            db = draw.uniform(-self.cfg.gain_db, self.cfg.gain_db)
            out *= torch.pow(10.0, db / 20)[:, None]
        return out


def add_shifted(out: torch.Tensor, waves: torch.Tensor, shifts: list[int]) -> None:
    """out[i, t] += waves[i, t + shifts[i]] where that sample exists (zero padding). Row by row:
    on CPU a slice add per clip is about 2x faster than gathering from an unfolded padded
    copy."""
    length = waves.shape[1]
    for i, s in enumerate(shifts):
        if abs(s) < length:
            out[i, max(-s, 0):length - max(s, 0)] += waves[i, max(s, 0):length - max(-s, 0)]


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
        freq_on = bool(self.freq_masks and self.freq_width)
        time_on = bool(self.time_masks and self.time_width)
        if not (freq_on or time_on):   # nothing to mask: no draws, no copy
            return feats
        batch, _, bins, frames = feats.shape
        draw = Draws(batch, g, feats.device, part)
        hit = torch.zeros(batch, bins, frames, dtype=torch.bool, device=feats.device)
        if freq_on:
            hit |= _masks(bins, self.freq_masks, self.freq_width, draw)[:, :, None]
        if time_on:
            hit |= _masks(frames, self.time_masks, self.time_width, draw)[:, None, :]
        return feats.masked_fill(hit[:, None], 0.0)
