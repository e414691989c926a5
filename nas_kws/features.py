"""Feature front ends. The `FeatureConfig` travels with every checkpoint and export so a
model is never fed features it was not trained on."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio
from torch import nn

from nas_kws.config import check_keys

FEATURE_KINDS = ("logmel", "mfcc")


@dataclass(frozen=True)
class FeatureConfig:
    kind: str = "logmel"
    sample_rate: int = 16000
    duration: float = 1.0
    n_fft: int = 512
    win_length: int = 480
    hop_length: int = 160
    n_mels: int = 40
    n_mfcc: int = 0
    center: bool = True
    log_offset: float = 1e-6

    def __post_init__(self) -> None:
        # a zero or negative size would only fail deep inside torchaudio or the first conv
        for name in ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"features.{name}: expected an integer >= 1, got {value!r}")
        if not isinstance(self.duration, (int, float)) or not self.duration > 0:
            raise ValueError(f"features.duration: expected seconds > 0, got {self.duration!r}")
        if self.kind not in FEATURE_KINDS:
            raise ValueError(f"features.kind: expected one of {FEATURE_KINDS}, got {self.kind!r}")
        if self.kind == "mfcc" and not 1 <= self.n_mfcc <= self.n_mels:
            raise ValueError(f"features.n_mfcc: expected 1..n_mels ({self.n_mels}), got "
                             f"{self.n_mfcc}")
        if self.win_length > self.n_fft:
            raise ValueError(f"features.win_length ({self.win_length}) must not exceed n_fft "
                             f"({self.n_fft})")

    @classmethod
    def logmel(cls, n_mels: int = 40) -> "FeatureConfig":
        """BC-ResNet's input: 40 log-mels, 30 ms window, 10 ms hop -> 40x101 per second."""
        return cls(kind="logmel", n_mels=n_mels)

    @classmethod
    def mfcc(cls, n_mfcc: int = 10) -> "FeatureConfig":
        """Peter et al.'s input: 40 ms window, 20 ms hop, torchaudio's 128 mels -> n_mfcc x 51."""
        return cls(kind="mfcc", n_fft=640, win_length=640, hop_length=320, n_mels=128,
                   n_mfcc=n_mfcc)

    @classmethod
    def dscnn(cls) -> "FeatureConfig":
        """Hello Edge's input: 10 MFCC of 40 mels, 40 ms window, 20 ms hop, no padding -> 10x49."""
        return cls(kind="mfcc", n_fft=640, win_length=640, hop_length=320, n_mels=40, n_mfcc=10,
                   center=False)

    @property
    def num_samples(self) -> int:
        return int(round(self.sample_rate * self.duration))

    @property
    def shape(self) -> tuple[int, int]:
        """(bins, frames) of one clip."""
        n = self.num_samples
        usable = n if self.center else n - self.n_fft
        frames = usable // self.hop_length + 1
        return (self.n_mfcc if self.kind == "mfcc" else self.n_mels), frames

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "features") -> "FeatureConfig":
        """Unknown keys and bad values are errors naming `where` (e.g. the file and section)."""
        check_keys(data, sorted(f.name for f in fields(cls)), where)
        try:
            return cls(**data)
        except ValueError as err:  # its message names features.<key> already
            prefix = where.removesuffix("features").rstrip(": ")
            raise ValueError(f"{prefix}: {err}" if prefix else str(err)) from None


class MelPower(nn.Module):
    """Mel-filtered power spectrogram (..., n_mels, frames): torchaudio's MelSpectrogram (same
    window, STFT and filterbank) in fewer passes over memory, equal to float32 rounding.

    Why: torchaudio takes |z|^2 as a complex abs squared on the (freqs, frames) view torch.stft
    returns, then multiplies by the filterbank through a transposed copy, each pass over a
    batch's whole spectrum (20 MB for 100 clips). Here the clips go through in chunks whose
    spectrum stays in cache; the frames are cut and windowed as torch.stft does (reflect
    padding, window centred in n_fft) and go to one real FFT in (frames, freqs) layout, which
    skips torch.stft's own overhead (~30% of the STFT on CPU); |z|^2 is re^2 + im^2; the
    filterbank is one (clips x frames, freqs) @ (freqs, mels) product per chunk."""

    # complex spectrum per chunk (~40 clips of 1 s): stays in cache, yet few chunks, since each
    # op per chunk is a thread hand-off that costs much on a busy machine at 2 threads
    CHUNK_BYTES = 2 ** 23

    def __init__(self, config: "FeatureConfig"):
        super().__init__()
        self.config = config
        mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sample_rate, n_fft=config.n_fft, win_length=config.win_length,
            hop_length=config.hop_length, n_mels=config.n_mels, center=config.center)
        left = (config.n_fft - config.win_length) // 2   # torch.stft centres a short window
        window = F.pad(mel.spectrogram.window, (left, config.n_fft - config.win_length - left))
        self.register_buffer("window", window, persistent=False)
        self.register_buffer("fb", mel.mel_scale.fb, persistent=False)   # (freqs, mels)
        bins, frames = config.n_fft // 2 + 1, config.shape[1]
        self.chunk = max(1, self.CHUNK_BYTES // (bins * frames * 8))

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        c = self.config
        clips = waves.reshape(-1, waves.shape[-1])
        out = clips.new_empty(len(clips), c.shape[1], c.n_mels)
        for part, rows in zip(clips.split(self.chunk), out.split(self.chunk)):
            if c.center:
                half = c.n_fft // 2
                part = F.pad(part[:, None], (half, half), mode="reflect")[:, 0]
            frames = part.unfold(-1, c.n_fft, c.hop_length) * self.window
            z = torch.view_as_real(torch.fft.rfft(frames))    # (clips, frames, freqs, 2)
            power = z[..., 0].square().addcmul_(z[..., 1], z[..., 1])
            torch.matmul(power, self.fb, out=rows)
        return out.transpose(-1, -2).reshape(*waves.shape[:-1], c.n_mels, c.shape[1])


class Frontend(nn.Module):
    """Waveforms (B, L) -> features (B, 1, bins, frames), on whatever device the batch is on."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        self.mel = MelPower(config)
        if config.kind == "mfcc":
            self.mfcc = torchaudio.transforms.MFCC(
                sample_rate=config.sample_rate, n_mfcc=config.n_mfcc,
                melkwargs=dict(n_fft=config.n_fft, win_length=config.win_length,
                               hop_length=config.hop_length, n_mels=config.n_mels,
                               center=config.center))
            self.mfcc.MelSpectrogram = self.mel

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "mfcc":
            feats = self.mfcc(waves.float())
        else:  # the mel power is a new tensor: log in place
            feats = self.mel(waves.float()).add_(self.config.log_offset).log_()
        return feats.contiguous().unsqueeze(1)
