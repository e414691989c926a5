"""A small learnable dataset in the custom-folders layout: each class is a tone band."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

TONE_CLASSES = {"low": 300.0, "mid": 900.0, "high": 2500.0, "sweep": 0.0}


def write_tone_folders(root: Path, per_class: dict[str, int] | None = None, seed: int = 0,
                       sample_rate: int = 16000) -> Path:
    """Write DIR/training|validation|testing/<class>/*.wav of 0.6 s tones at random onsets."""
    per_class = per_class or {"training": 30, "validation": 10, "testing": 10}
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.6 * sample_rate)) / sample_rate
    for split, count in per_class.items():
        for name, freq in TONE_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                f = freq * rng.uniform(0.9, 1.1)
                phase = 2 * np.pi * (f * t if freq else (200 * t + 2500 * t ** 2))
                tone = 0.3 * np.sin(phase) + 0.02 * rng.standard_normal(len(t))
                clip = np.zeros(sample_rate)
                start = rng.integers(0, sample_rate - len(t))
                clip[start:start + len(t)] = tone
                sf.write(folder / f"s{i % 5}_nohash_{i}.wav", clip.astype(np.float32), sample_rate,
                         subtype="PCM_16")
    return root
