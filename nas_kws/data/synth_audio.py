"""The audio of the synthetic set (nas_kws/data/synth.py holds the recipe): eSpeak NG speech of a
speaker, resampled to 16 kHz, placed in a 1 s window, leveled, optionally reverberated and mixed
with noise; babble; the `_background_noise_` files; and the worker job that writes a speaker's
clips.

eSpeak's synthesis state carries over between calls, so `render_speaker` and `make_babble` run
in fresh worker processes: the output then depends on the seed alone.
"""
from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from nas_kws.data import espeak
from nas_kws.data.noise import babble, make_noise, unit_rms

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s, as GSC
# English voices of the shipped data that speak the set's words (en-shaw only changes the script)
ACCENTS = ("en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029")
# babble text: common words that neither are nor sound like any of synth.WORDS
FILLER_WORDS = ("the", "and", "of", "in", "that", "it", "was", "with", "as", "his", "they", "at",
                "be", "this", "from", "have", "or", "by", "but", "not", "what", "all", "were", "we",
                "when", "your", "can", "said", "there", "use", "each", "which", "she", "how",
                "their", "if", "will", "about", "many", "then", "them", "these", "some", "her",
                "would", "make", "like", "him", "into", "time", "has", "look", "more", "people",
                "water", "been", "call", "who", "its", "find", "long", "day", "did", "get", "come",
                "made", "may", "part", "over", "new", "sound", "take", "only", "little", "work",
                "place", "year", "live", "most", "very", "after", "thing", "our", "just", "name",
                "good", "man", "think", "great", "where", "help", "much", "before", "line", "mean",
                "old", "same", "tell", "boy", "small", "large", "city", "table", "window", "garden",
                "morning")
_VOLUME = 60                # eSpeak volume: below its default 100, where some variants saturate
RNG_SPEAKERS, RNG_CLIP, RNG_NOISE_FILES, RNG_BABBLE = range(4)   # RNG stream tags
ClipName = tuple[int, str, int, str]   # (word index, word, take, relative path)


@dataclass(frozen=True)
class Variation:
    """The random ranges, in one place; written to synth_config.json."""
    speaker_rate_wpm: tuple[int, int] = (120, 240)
    speaker_pitch: tuple[int, int] = (15, 85)           # eSpeak 0-100, 50 = the voice's own
    speaker_pitch_range: tuple[int, int] = (15, 90)
    rate_jitter: tuple[float, float] = (0.9, 1.1)       # per clip, times the speaker's rate
    pitch_jitter: int = 6                               # per clip, +- on the speaker's pitch
    punctuation: tuple[str, ...] = ("", ".", "?", "!")  # sets the intonation
    level_dbfs: tuple[float, float] = (-35.0, -15.0)    # RMS of the speech
    reverb_prob: float = 0.5
    rt60_s: tuple[float, float] = (0.1, 0.8)
    direct_to_reverb_db: tuple[float, float] = (0.0, 12.0)
    noise_prob: float = 0.85
    noise_kinds: tuple[str, ...] = ("white", "pink", "brown", "hum", "babble")
    snr_db: tuple[float, float] = (-5.0, 30.0)
    babble_talkers: int = 6
    babble_bank_seconds: int = 20                       # clip babble (not the background's)


VARIATION = Variation()


@dataclass(frozen=True)
class Speaker:
    index: int
    id: str         # 8 hex digits, as GSC
    split: str      # "train", "valid" or "test"
    voice: str      # "accent+variant"
    rate: int
    pitch: int
    pitch_range: int


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling by cutting the spectrum (as scipy.signal.resample), with a cosine
    roll-off over the top 5 % of the new band. The signal is taken as periodic, so its ends must
    be quiet; it is zero-padded to a whole number of resampling periods."""
    step_in = orig_sr // math.gcd(orig_sr, new_sr)
    n_in = -(-len(x) // step_in) * step_in
    n_out = n_in * new_sr // orig_sr
    spectrum = np.fft.rfft(x, n_in)[:n_out // 2 + 1]
    bins = len(spectrum)
    ramp = max(1, bins // 20)
    taper = np.ones(bins)
    taper[bins - ramp:] = 0.5 * (1 + np.cos(np.pi * np.arange(1, ramp + 1) / ramp))
    return (np.fft.irfft(spectrum * taper, n_out) * (n_out / n_in)).astype(np.float32)


def reverberate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Convolve with a direct path plus an exponentially decaying noise tail (-60 dB at RT60);
    the output keeps the length of `x`."""
    v = VARIATION
    rt60 = rng.uniform(*v.rt60_s)
    n = int(rt60 * SAMPLE_RATE)
    tail = rng.standard_normal(n) * 10 ** (-3 * np.arange(n) / n)
    tail *= 10 ** (-rng.uniform(*v.direct_to_reverb_db) / 20) / np.sqrt(np.sum(tail ** 2))
    tail[0] = 1.0
    nfft = 1 << (len(x) + n - 1).bit_length()
    wet = np.fft.irfft(np.fft.rfft(x, nfft) * np.fft.rfft(tail, nfft), nfft)
    return wet[:len(x)].astype(np.float32)


def _speak(text: str, voice: str, rate: int, pitch: int, pitch_range: int) -> np.ndarray:
    """Float speech at eSpeak's rate, trimmed to where it is above -40 dB of its peak, 5 ms
    fades."""
    speech = espeak.get_espeak().synthesize(text, voice, rate, pitch, pitch_range, _VOLUME)
    speech = speech.astype(np.float32) / 32768
    loud = np.flatnonzero(np.abs(speech) > 0.01 * np.abs(speech).max(initial=0.0))
    if len(loud) == 0:
        raise RuntimeError(f"eSpeak produced silence for {text!r} with voice {voice!r}")
    speech = speech[loud[0]:loud[-1] + 1]
    fade = min(len(speech) // 2, espeak.SAMPLE_RATE // 200)
    ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
    speech[:fade] *= ramp
    speech[len(speech) - fade:] *= ramp[::-1]
    return speech


def render_clip(speaker: Speaker, word: str, rng: np.random.Generator,
                babble_bank: np.ndarray) -> np.ndarray:
    """One 1 s int16 clip at 16 kHz of `speaker` saying `word`."""
    v = VARIATION
    rate = int(np.clip(round(speaker.rate * rng.uniform(*v.rate_jitter)), 80, 450))
    pitch = int(np.clip(speaker.pitch + rng.integers(-v.pitch_jitter, v.pitch_jitter + 1), 0, 100))
    speech = _speak(word + rng.choice(v.punctuation), speaker.voice, rate, pitch,
                    speaker.pitch_range)
    # place the word at random in the 1 s window (crop if longer), then resample the whole window
    window = np.zeros(espeak.SAMPLE_RATE, np.float32)
    if len(speech) >= len(window):
        start = int(rng.integers(len(speech) - len(window) + 1))
        window[:] = speech[start:start + len(window)]
        begin, end = 0, CLIP_SAMPLES
    else:
        offset = int(rng.integers(len(window) - len(speech) + 1))
        window[offset:offset + len(speech)] = speech
        begin = offset * SAMPLE_RATE // espeak.SAMPLE_RATE
        end = max(begin + 1, (offset + len(speech)) * SAMPLE_RATE // espeak.SAMPLE_RATE)
    clip = resample(window, espeak.SAMPLE_RATE, SAMPLE_RATE)
    if rng.random() < v.reverb_prob:
        clip = reverberate(clip, rng)
    level = 10 ** (rng.uniform(*v.level_dbfs) / 20)
    clip *= level / max(float(np.sqrt(np.mean(np.square(clip[begin:end])))), 1e-9)
    if rng.random() < v.noise_prob:
        kind = rng.choice(v.noise_kinds)
        if kind == "babble":
            start = int(rng.integers(len(babble_bank) - CLIP_SAMPLES + 1))
            noise = unit_rms(babble_bank[start:start + CLIP_SAMPLES])
        else:
            noise = make_noise(kind, CLIP_SAMPLES, rng, SAMPLE_RATE)
        clip += noise * (level / 10 ** (rng.uniform(*v.snr_db) / 20))
    peak = float(np.abs(clip).max())
    if peak > 0.99:  # turn the whole mix down rather than clip it: the SNR stays as drawn
        clip *= 0.99 / peak
    return np.round(clip * 32767).astype(np.int16)


def make_babble(seed: int, tag: int, seconds: int) -> np.ndarray:
    """`seconds` of babble at 16 kHz: talkers with random voices reading random filler words.
    Run it in a fresh process (see the module docstring)."""
    v = VARIATION
    rng = np.random.default_rng([seed, RNG_BABBLE, tag])
    need = seconds * espeak.SAMPLE_RATE
    streams = []
    for _ in range(v.babble_talkers):
        voice = f"{rng.choice(ACCENTS)}+{rng.choice(espeak.variants())}"
        rate = int(rng.integers(v.speaker_rate_wpm[0], v.speaker_rate_wpm[1] + 1))
        pitch = int(rng.integers(v.speaker_pitch[0], v.speaker_pitch[1] + 1))
        parts, have = [], 0
        while have < need:
            words = rng.choice(FILLER_WORDS, size=int(rng.integers(6, 15)))
            text = " ".join(words) + rng.choice([".", "?", "!", ","])
            part = espeak.get_espeak().synthesize(text, voice, rate, pitch, 50, _VOLUME)
            parts.append(part)
            have += len(part)
        stream = np.concatenate(parts)[:need].astype(np.float32) / 32768
        streams.append(resample(stream, espeak.SAMPLE_RATE, SAMPLE_RATE))
    return babble(streams, seconds * SAMPLE_RATE, rng)


def write_wav(path: str | os.PathLike, samples: np.ndarray) -> None:
    """16 kHz 16-bit PCM WAV; encoded in memory and written at once (libsndfile's many small writes
    to a file take 20 times longer)."""
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    Path(path).write_bytes(buffer.getvalue())


def render_speaker(job: tuple[str, int, Speaker, list[ClipName], np.ndarray]
                   ) -> tuple[str, list[str]]:
    """The worker job: write the clips `names` of one speaker under the folder `out`; returns
    (split, relative paths). Run it in a fresh process (see the module docstring)."""
    out, seed, speaker, names, babble_bank = job
    paths = []
    for w, word, take, rel in names:
        rng = np.random.default_rng([seed, RNG_CLIP, speaker.index, w, take])
        write_wav(os.path.join(out, rel), render_clip(speaker, word, rng, babble_bank))
        paths.append(rel)
    return speaker.split, paths


def noise_files(seed: int, seconds: int) -> dict[str, np.ndarray]:
    """The colored and hum files of `_background_noise_` (babble comes from a worker)."""
    rng = np.random.default_rng([seed, RNG_NOISE_FILES])
    n = seconds * SAMPLE_RATE
    return {f"{kind}_noise.wav" if kind != "hum" else "mains_hum.wav":
            make_noise(kind, n, rng, SAMPLE_RATE)
            for kind in ("white", "pink", "brown", "hum")}
