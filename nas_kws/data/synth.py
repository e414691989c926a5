"""The embedded default dataset: the 35 Speech Commands v2 words spoken by eSpeak NG "speakers",
written in exactly the GSC v2 layout so the GSC reader takes it unchanged.

A speaker is a voice setting (accent, timbre variant, pitch, intonation range, speaking rate).
Speakers are disjoint across train / valid / test, and so are their timbre variants, so test
voices are never heard in training. Each clip also gets its own rate and pitch jitter,
intonation (punctuation), position in the 1 s window, level, optional reverberation and
background noise down to -5 dB SNR.

Everything is a function of the seed: clip (speaker, word, take) draws from
`default_rng([seed, CLIP, speaker, word, take])`, and every speaker (and each babble source)
runs in a fresh worker process, because eSpeak's synthesis state carries over between calls.
Hence the same seed gives byte-identical files for any number of workers.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import io
import json
import math
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from tqdm import tqdm

from nas_kws.data import espeak
from nas_kws.data.index import KEYWORDS, NOISE_DIR
from nas_kws.data.noise import babble, make_noise, unit_rms
from nas_kws.fileio import cache_dir, write_json, write_text

RECIPE_VERSION = 4          # bump when the output of a seed changes; it names the cache folder
SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s, as GSC
OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
               "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
               "backward", "follow", "forward", "learn", "visual")
WORDS = KEYWORDS + OTHER_WORDS
# English voices of the shipped data that speak these words (en-shaw only changes the script)
ACCENTS = ("en", "en-us", "en-us-nyc", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-029")
# babble text: common words that neither are nor sound like any of WORDS
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
CONFIG_NAME = "synth_config.json"
COMPLETE_MARKER = ".complete"
_VOLUME = 60                # eSpeak volume: below its default 100, where some variants saturate
_SPEAKERS, _CLIP, _NOISE_FILES, _BABBLE = range(4)   # RNG stream tags


@dataclass(frozen=True)
class SynthSize:
    speakers: int           # all splits together
    keyword_takes: int      # clips per speaker for each of the 10 keywords
    other_takes: int        # ... and for each of the 25 other words
    noise_seconds: int      # length of each `_background_noise_` file
    held_speakers: int = 0  # speakers in valid and in test each; 0: 10 % each (at least one)

    @property
    def clips_per_speaker(self) -> int:
        return len(KEYWORDS) * self.keyword_takes + len(OTHER_WORDS) * self.other_takes


SYNTH_SIZES = {
    # 210 clips: tests
    "tiny": SynthSize(speakers=6, keyword_takes=1, other_takes=1, noise_seconds=5),
    # 1,080: demos
    "small": SynthSize(speakers=24, keyword_takes=2, other_takes=1, noise_seconds=30),
    # 96 training speakers (4,320 clips); 52 speakers each in valid and test, so each 12-class
    # split holds 1,248 clips (binomial std <= 1.2 points at 80 %)
    "default": SynthSize(speakers=200, keyword_takes=2, other_takes=1, noise_seconds=60,
                         held_speakers=52),                                               # 9,000
    "large": SynthSize(speakers=400, keyword_takes=5, other_takes=2, noise_seconds=60),     # 40,000
}


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


def make_speakers(seed: int, count: int, held: int = 0) -> list[Speaker]:
    """`count` speakers, `held` each to valid and test (0: 10 %, at least one); each split draws
    its timbre variants from its own share of the shipped variants."""
    rng = np.random.default_rng([seed, _SPEAKERS])
    held = held or max(1, round(0.1 * count))
    if 2 * held >= count:
        raise ValueError(f"held_speakers {held}: leaves no training speaker of {count}")
    splits = ["test"] * held + ["valid"] * held + ["train"] * (count - 2 * held)
    pool = list(rng.permutation(espeak.variants()))
    share = max(1, round(0.1 * len(pool)))
    pools = {"test": pool[:share], "valid": pool[share:2 * share], "train": pool[2 * share:]}
    used = dict.fromkeys(pools, 0)
    v = VARIATION
    speakers = []
    for index, slot in enumerate(rng.permutation(count)):
        split = splits[slot]
        variant = pools[split][used[split] % len(pools[split])]
        used[split] += 1
        speakers.append(Speaker(
            index=index,
            # odd factor: unique
            id=f"{(index * 0x9E3779B1 + seed * 0x7FEB352D + 0x2545F491) % 2**32:08x}",
            split=split, voice=f"{rng.choice(ACCENTS)}+{variant}",
            rate=int(rng.integers(v.speaker_rate_wpm[0], v.speaker_rate_wpm[1] + 1)),
            pitch=int(rng.integers(v.speaker_pitch[0], v.speaker_pitch[1] + 1)),
            pitch_range=int(rng.integers(v.speaker_pitch_range[0], v.speaker_pitch_range[1] + 1))))
    return speakers


def clip_names(speaker: Speaker, size: SynthSize) -> list[tuple[int, str, int, str]]:
    """(word index, word, take, relative path) of every clip of `speaker`."""
    names = []
    for w, word in enumerate(WORDS):
        takes = size.keyword_takes if word in KEYWORDS else size.other_takes
        names += [(w, word, n, f"{word}/{speaker.id}_nohash_{n}.wav") for n in range(takes)]
    return names


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
    rng = np.random.default_rng([seed, _BABBLE, tag])
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


def _speaker_job(job: tuple[str, int, Speaker, SynthSize, np.ndarray]) -> tuple[str, list[str]]:
    """Write all clips of one speaker; returns (split, relative paths)."""
    out, seed, speaker, size, babble_bank = job
    paths = []
    for w, word, take, rel in clip_names(speaker, size):
        rng = np.random.default_rng([seed, _CLIP, speaker.index, w, take])
        write_wav(os.path.join(out, rel), render_clip(speaker, word, rng, babble_bank))
        paths.append(rel)
    return speaker.split, paths


def _noise_files(seed: int, seconds: int) -> dict[str, np.ndarray]:
    """The colored and hum files of `_background_noise_` (babble comes from a worker)."""
    rng = np.random.default_rng([seed, _NOISE_FILES])
    n = seconds * SAMPLE_RATE
    return {f"{kind}_noise.wav" if kind != "hum" else "mains_hum.wav":
            make_noise(kind, n, rng, SAMPLE_RATE)
            for kind in ("white", "pink", "brown", "hum")}


def _recipe(seed: int, size: str) -> dict:
    return {"recipe_version": RECIPE_VERSION, "seed": seed, "size": size}


@contextlib.contextmanager
def _locked(out: Path) -> Iterator[None]:
    """One writer per dataset folder across processes (two runs may ask for the same cache)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / f".{out.name}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _reusable(out: Path, recipe: dict) -> bool:
    """True when `out` already holds this complete dataset; clears an interrupted one."""
    config = out / CONFIG_NAME
    if (out / COMPLETE_MARKER).exists():
        existing = {k: json.loads(config.read_text()).get(k) for k in recipe}
        if existing != recipe:
            raise ValueError(f"{out} already holds a synthetic set made with {existing}, not "
                             f"{recipe}: choose another output folder or delete it")
        return True
    if out.exists() and any(out.iterdir()):
        if not config.exists():
            raise ValueError(f"{out} is not empty and holds no {CONFIG_NAME}: refusing to write a "
                             f"synthetic set over it")
        shutil.rmtree(out)  # an interrupted generation: start again
    return False


def _readme(recipe: dict, size: SynthSize, counts: dict[str, int]) -> str:
    return (
        "Synthetic keyword-spotting set made by nas-kws (nas_kws/data/synth.py) with eSpeak NG.\n"
        "Layout and file format as Google Speech Commands v2: one folder per word holding\n"
        "<speaker>_nohash_<n>.wav (16 kHz mono 16-bit PCM, 1 s), _background_noise_/*.wav,\n"
        "validation_list.txt and testing_list.txt; the other files are training clips.\n\n"
        f"Recipe version {recipe['recipe_version']}, seed {recipe['seed']}, size {recipe['size']}: "
        f"{size.speakers} speakers, {size.keyword_takes} take(s) per keyword and "
        f"{size.other_takes} per other word.\n"
        f"Clips: {counts['train']} train, {counts['valid']} validation, {counts['test']} test.\n"
        "A speaker is an eSpeak voice setting (accent, timbre variant, pitch, range, rate); "
        "speakers and\n"
        "timbre variants are disjoint across the splits. "
        "Per clip: rate and pitch jitter, intonation,\n"
        "position, level, reverberation, background noise at random SNR. The noise files are at\n"
        f"-20 dBFS RMS. All ranges, the speakers and the library versions are in {CONFIG_NAME}.\n"
        "Same seed and size -> identical files.\n")


def generate_synth(out: Path, seed: int = 0, size: str = "default", progress: bool = True,
                   workers: int = 2) -> Path:
    """Write the synthetic set to `out` (or reuse it when complete) and return `out`."""
    if size not in SYNTH_SIZES:
        raise ValueError(f"unknown synthetic set size {size!r}: expected one of "
                         f"{', '.join(SYNTH_SIZES)}")
    if workers < 1:
        raise ValueError(f"workers={workers}: expected at least 1")
    out, spec, recipe = Path(out), SYNTH_SIZES[size], _recipe(seed, size)
    with _locked(out):
        if _reusable(out, recipe):
            return out
        speakers = make_speakers(seed, spec.speakers, spec.held_speakers)
        for word in WORDS:
            (out / word).mkdir(parents=True, exist_ok=True)
        (out / NOISE_DIR).mkdir()
        write_json(out / CONFIG_NAME, {
            **recipe, "sizes": asdict(spec), "variation": asdict(VARIATION), "words": list(WORDS),
            "accents": list(ACCENTS), "variants": list(espeak.variants()),
            "versions": {"espeak-ng": espeak.get_espeak().version(),
                         "espeakng-loader": importlib.metadata.version("espeakng-loader"),
                         "numpy": np.__version__, "soundfile": sf.__version__},
            "speakers": [asdict(s) for s in speakers]})
        # forkserver + one task per child: every task starts from a pristine eSpeak state
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
        with context.Pool(workers, maxtasksperchild=1) as pool, \
                tqdm(total=spec.speakers * spec.clips_per_speaker, desc=f"synth {size}",
                     unit="clip", disable=not progress) as bar:
            # two independent babbles: one mixed into clips, one for `_background_noise_`
            bank = pool.apply(make_babble, (seed, 0, VARIATION.babble_bank_seconds))
            background = pool.apply_async(make_babble, (seed, 1, spec.noise_seconds))
            jobs = [(str(out), seed, s, spec, bank) for s in speakers]
            for split, paths in pool.imap_unordered(_speaker_job, jobs):
                splits[split] += paths
                bar.update(len(paths))
            noises = {**_noise_files(seed, spec.noise_seconds), "babble.wav": background.get()}
        for name, noise in noises.items():
            write_wav(out / NOISE_DIR / name, np.round(0.1 * noise * 32767).astype(np.int16))
        write_text(out / "validation_list.txt", "".join(f"{p}\n" for p in sorted(splits["valid"])))
        write_text(out / "testing_list.txt", "".join(f"{p}\n" for p in sorted(splits["test"])))
        counts = {k: len(v) for k, v in splits.items()}
        write_text(out / "README.txt", _readme(recipe, spec, counts))
        write_text(out / COMPLETE_MARKER, "")
    return out


def default_synth_root(seed: int = 0, size: str = "default") -> Path:
    return cache_dir() / f"synth-v{RECIPE_VERSION}-seed{seed}-{size}"


def ensure_synth(seed: int = 0, size: str = "default") -> Path:
    """The cached synthetic set, built on first use with all cores."""
    return generate_synth(default_synth_root(seed, size), seed, size, progress=True,
                          workers=os.cpu_count() or 1)
