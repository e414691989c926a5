"""Background-noise generators: colored noise, mains hum and speech babble, all at unit RMS.

Each takes its own numpy Generator, so a noise is a pure function of its seed."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

COLORS = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # power spectral density ~ 1 / f**exponent


def unit_rms(x: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / max(rms, 1e-12)).astype(np.float32)


def colored_noise(n: int, rng: np.random.Generator, exponent: float, sample_rate: int = 16000,
                  floor_hz: float = 20.0) -> np.ndarray:
    """Gaussian noise shaped in the frequency domain; below `floor_hz` the spectrum is held flat so
    brown noise does not drift, and DC is removed."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.maximum(np.fft.rfftfreq(n, 1.0 / sample_rate), floor_hz)
    spectrum *= freqs ** (-exponent / 2)
    spectrum[0] = 0.0
    return unit_rms(np.fft.irfft(spectrum, n))


def mains_hum(n: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """50 or 60 Hz (slightly off nominal) with random harmonics up to 2 kHz, plus a faint hiss.
    One cycle is drawn into a table and read at the hum's frequency (a sum of sines per sample
    is slow)."""
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    harmonics = np.arange(1, int(2000 // f0) + 1)
    amplitudes = (rng.uniform(0.2, 1.0, len(harmonics))
                  * harmonics ** -rng.uniform(0.5, 1.5, len(harmonics)))
    phases = rng.uniform(0, 2 * np.pi, len(harmonics))
    table_size = 1024
    cycle = np.arange(table_size + 1) / table_size
    table = amplitudes @ np.sin(2 * np.pi * harmonics[:, None] * cycle + phases[:, None])
    position = (f0 * np.arange(n) / sample_rate) % 1.0 * table_size
    hum = np.interp(position, np.arange(table_size + 1), table)
    return unit_rms(unit_rms(hum) + 0.03 * rng.standard_normal(n))


def babble(streams: Sequence[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once: each stream looped to `n` samples, started at a random point and
    weighted at random, then summed."""
    mix = np.zeros(n)
    for stream in streams:
        looped = np.resize(unit_rms(stream), n)
        mix += rng.uniform(0.5, 1.0) * np.roll(looped, int(rng.integers(n)))
    return unit_rms(mix)


def make_noise(kind: str, n: int, rng: np.random.Generator, sample_rate: int = 16000) -> np.ndarray:
    """One of "white", "pink", "brown", "hum" (babble needs speech: see `babble`)."""
    if kind == "hum":
        return mains_hum(n, rng, sample_rate)
    if kind not in COLORS:
        raise ValueError(f"unknown noise kind {kind!r}: expected one of "
                         f"{', '.join([*COLORS, 'hum'])}")
    return colored_noise(n, rng, COLORS[kind], sample_rate)
