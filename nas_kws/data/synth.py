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

This module is the recipe (words, sizes, speakers, the folder and its cache); the audio of a
clip, babble, the noise files and the worker job are in nas_kws/data/synth_audio.py.
"""
from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import json
import multiprocessing
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf
from tqdm import tqdm

from nas_kws.data import espeak, synth_audio
from nas_kws.data.index import KEYWORDS, NOISE_DIR
from nas_kws.data.synth_audio import (
    ACCENTS,
    RNG_SPEAKERS,
    VARIATION,
    ClipName,
    Speaker,
    make_babble,
    noise_files,
    render_speaker,
    write_wav,
)
from nas_kws.fileio import cache_dir, write_json, write_text

RECIPE_VERSION = 4          # bump when the output of a seed changes; it names the cache folder
OTHER_WORDS = ("bed", "bird", "cat", "dog", "eight", "five", "four", "happy", "house", "marvin",
               "nine", "one", "seven", "sheila", "six", "three", "tree", "two", "wow", "zero",
               "backward", "follow", "forward", "learn", "visual")
WORDS = KEYWORDS + OTHER_WORDS
CONFIG_NAME = "synth_config.json"
COMPLETE_MARKER = ".complete"


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


def make_speakers(seed: int, count: int, held: int = 0) -> list[Speaker]:
    """`count` speakers, `held` each to valid and test (0: 10 %, at least one); each split draws
    its timbre variants from its own share of the shipped variants."""
    rng = np.random.default_rng([seed, RNG_SPEAKERS])
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


def clip_names(speaker: Speaker, size: SynthSize) -> list[ClipName]:
    """(word index, word, take, relative path) of every clip of `speaker`."""
    names = []
    for w, word in enumerate(WORDS):
        takes = size.keyword_takes if word in KEYWORDS else size.other_takes
        names += [(w, word, n, f"{word}/{speaker.id}_nohash_{n}.wav") for n in range(takes)]
    return names


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
        context.set_forkserver_preload([synth_audio.__name__])   # all that the workers run
        splits: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
        with context.Pool(workers, maxtasksperchild=1) as pool, \
                tqdm(total=spec.speakers * spec.clips_per_speaker, desc=f"synth {size}",
                     unit="clip", disable=not progress) as bar:
            # two independent babbles: one mixed into clips, one for `_background_noise_`
            bank = pool.apply(make_babble, (seed, 0, VARIATION.babble_bank_seconds))
            background = pool.apply_async(make_babble, (seed, 1, spec.noise_seconds))
            jobs = [(str(out), seed, s, clip_names(s, spec), bank) for s in speakers]
            for split, paths in pool.imap_unordered(render_speaker, jobs):
                splits[split] += paths
                bar.update(len(paths))
            noises = {**noise_files(seed, spec.noise_seconds), "babble.wav": background.get()}
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
