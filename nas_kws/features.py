"""Feature front ends. The `FeatureConfig` travels with every checkpoint and export so a
model is never fed features it was not trained on."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
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


class PowerSpectrogram(torchaudio.transforms.Spectrogram):
    """torchaudio's power spectrogram with |z|^2 taken as re^2 + im^2 of the complex STFT, not as
    a complex abs squared: about 3x faster on CPU, equal to float32 rounding (at most 2.4e-7
    relative; no shipped reference run changed a prediction)."""

    def __init__(self, config: "FeatureConfig"):
        super().__init__(n_fft=config.n_fft, win_length=config.win_length,
                         hop_length=config.hop_length, center=config.center, power=None)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        spec = super().forward(waveform)
        return spec.real.square() + spec.imag.square()


class Frontend(nn.Module):
    """Waveforms (B, L) -> features (B, 1, bins, frames), on whatever device the batch is on."""

    def __init__(self, config: FeatureConfig):
        super().__init__()
        self.config = config
        mel_kwargs = dict(n_fft=config.n_fft, win_length=config.win_length,
                          hop_length=config.hop_length, n_mels=config.n_mels, center=config.center)
        if config.kind == "logmel":
            self.transform = torchaudio.transforms.MelSpectrogram(sample_rate=config.sample_rate,
                                                                  **mel_kwargs)
        else:
            self.transform = torchaudio.transforms.MFCC(sample_rate=config.sample_rate,
                                                        n_mfcc=config.n_mfcc, melkwargs=mel_kwargs)
        mel = self.transform if config.kind == "logmel" else self.transform.MelSpectrogram
        mel.spectrogram = PowerSpectrogram(config)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        feats = self.transform(waves.float())
        if self.config.kind == "logmel":
            feats = torch.log(feats + self.config.log_offset)
        return feats.unsqueeze(1)
