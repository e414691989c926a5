"""Google Speech Commands (v1, v2): download the archives and index them into splits.

Splits come from the archive's validation_list.txt / testing_list.txt (everything else is
train). The 12-class task samples `_unknown_` clips from the non-keyword words and cuts
`_silence_` clips from `_background_noise_`, both seeded and capped per split as BC-ResNet does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from nas_kws.data.download import download, extract
from nas_kws.data.index import (
    KEYWORDS,
    NOISE_DIR,
    SILENCE,
    SPLITS,
    UNKNOWN,
    ClipRef,
    DatasetIndex,
    noise_region,
    speaker_of,
)

TASKS = ("12class", "35class")
# BC-ResNet's per-split numbers of `_unknown_` and `_silence_` clips. On the real archives they
# are the mean keyword count of each split (v2 train: 30,769 keyword clips / 10 = 3077).
BCRESNET_COUNTS = {1: {"train": 1854, "valid": 258, "test": 257},
                   2: {"train": 3077, "valid": 371, "test": 408}}
GET_DATA = ("get it with `nas-kws data gsc --version {v} --root DIR --download`, "
            "or make a synthetic set with `nas-kws data synth --out DIR`")


@dataclass(frozen=True)
class Archive:
    url: str
    size: int | None
    sha256: str | None

    @property
    def folder(self) -> str:
        return self.url.rsplit("/", 1)[1].removesuffix(".tar.gz")


_BASE = "http://download.tensorflow.org/data/"
# Sizes and SHA-256 from TensorFlow Datasets' and torchaudio's checksum tables; no published
# checksum was found for the v1 test archive, so only the size the server announces is checked.
ARCHIVES = {
    (1, "train"): Archive(_BASE + "speech_commands_v0.01.tar.gz", 1_489_096_277,
                          "743935421bb51cccdb6bdd152e04c5c70274e935c82119ad7faeec31780d811d"),
    (1, "test"): Archive(_BASE + "speech_commands_test_set_v0.01.tar.gz", None, None),
    (2, "train"): Archive(_BASE + "speech_commands_v0.02.tar.gz", 2_428_923_189,
                          "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),
    (2, "test"): Archive(_BASE + "speech_commands_test_set_v0.02.tar.gz", 112_563_277,
                         "cc2a00c1147c2254e9be3fa0f779d8c17421dc349b86366567a8edfa9acd51df"),
}


def _check_version(version: int) -> None:
    if version not in BCRESNET_COUNTS:
        raise ValueError(f"GSC version: expected 1 or 2, got {version!r}")


def download_gsc(root: str | os.PathLike, version: int = 2, include_test_set: bool = True,
                 progress: bool = True) -> Path:
    """Fetch and extract the archive(s) into ROOT/speech_commands_v0.0N (and
    ROOT/speech_commands_test_set_v0.0N); folders already present are kept as they are."""
    _check_version(version)
    root = Path(root)
    for kind in ("train", "test") if include_test_set else ("train",):
        archive = ARCHIVES[(version, kind)]
        folder = root / archive.folder
        if folder.exists():
            continue
        tarball = download(archive.url, root / f"{archive.folder}.tar.gz", archive.sha256,
                           archive.size, progress)
        extract(tarball, folder)
        tarball.unlink()
    return root / ARCHIVES[(version, "train")].folder


def _data_dir(root: Path, version: int) -> Path:
    """The folder holding the word folders: ROOT itself or ROOT/speech_commands_v0.0N."""
    if not root.exists():
        raise FileNotFoundError(f"GSC data not found: {root} does not exist; "
                                + GET_DATA.format(v=version))
    for candidate in (root, root / ARCHIVES[(version, "train")].folder):
        if ((candidate / "validation_list.txt").is_file()
                and (candidate / "testing_list.txt").is_file()):
            return candidate
    raise FileNotFoundError(f"{root}: not a Speech Commands folder (no validation_list.txt and "
                            f"testing_list.txt here or in {ARCHIVES[(version, 'train')].folder}/); "
                            + GET_DATA.format(v=version))


def _read_list(path: Path) -> set[str]:
    return {line.strip().removeprefix("./") for line in path.read_text().splitlines()
            if line.strip()}


def _split_words(data_dir: Path) -> tuple[list[str], dict[str, list[tuple[str, str]]]]:
    """Word folders, and per split the (relative path, word) of every clip."""
    valid = _read_list(data_dir / "validation_list.txt")
    test = _read_list(data_dir / "testing_list.txt")
    words = sorted(d.name for d in data_dir.iterdir() if d.is_dir() and d.name[0] not in "_.")
    items: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    for word in words:
        for wav in sorted((data_dir / word).glob("*.wav")):
            rel = f"{word}/{wav.name}"
            split = "valid" if rel in valid else "test" if rel in test else "train"
            items[split].append((rel, word))
    return words, items


def _counts(name: str, given: dict[str, int] | None, default: dict[str, int]) -> dict[str, int]:
    given = given or {}
    unknown = set(given) - set(SPLITS)
    if unknown:
        raise ValueError(f"{name}: unknown split(s) {sorted(unknown)}; expected keys from {SPLITS}")
    if any(n < 0 for n in given.values()):
        raise ValueError(f"{name}: counts must be >= 0, got {given}")
    return {**default, **given}


def _silence_clips(noise: list[tuple[str, int, int]], split: str, count: int,
                   rng: np.random.Generator, label: int) -> list[ClipRef]:
    """`count` 1-s crops (file, start, gain ~ U(0, 1)) of the noise files, from `split`'s region."""
    usable = [(rel, frames, rate) for rel, frames, rate in noise if frames >= rate]
    if count and not usable:
        raise ValueError(f"no {NOISE_DIR}/*.wav of at least 1 s: cannot make {count} {SILENCE} "
                         f"clips for split {split!r} (pass silence_counts with 0 to skip them)")
    clips = []
    for _ in range(count):
        rel, frames, rate = usable[rng.integers(len(usable))]
        lo, hi = noise_region(frames, split, min_frames=rate)
        start = int(rng.integers(lo, hi - rate + 1))
        clips.append(ClipRef(rel, label, start=start, gain=round(float(rng.uniform(0.0, 1.0)), 6)))
    return clips


def _official_test(folder: Path, classes: list[str], base: Path) -> list[ClipRef]:
    """The official test archive: one folder per 12-class label, `_silence_` included."""
    missing = [c for c in classes if not (folder / c).is_dir()]
    if missing:
        raise ValueError(f"{folder}: not a Speech Commands test archive (missing folders "
                         f"{missing})")
    return [ClipRef(os.path.relpath(wav, base), label, speaker_of(wav.name).rsplit("_", 1)[-1])
            for label, name in enumerate(classes) for wav in sorted((folder / name).glob("*.wav"))]


def _noise_files(data_dir: Path, base: Path) -> list[tuple[str, int, int]]:
    """(path relative to base, frames, sample rate) of each background-noise file."""
    out = []
    for path in sorted((data_dir / NOISE_DIR).glob("*.wav")):
        info = sf.info(str(path))
        out.append((os.path.relpath(path, base), info.frames, info.samplerate))
    return out


def index_gsc(root: str | os.PathLike, version: int = 2, task: str = "12class", seed: int = 0,
              silence_counts: dict[str, int] | None = None,
              unknown_counts: dict[str, int] | None = None,
              official_test_root: str | os.PathLike | None = None) -> DatasetIndex:
    """Index a Speech Commands folder for `task` ("12class" or "35class")."""
    _check_version(version)
    if task not in TASKS:
        raise ValueError(f"GSC task: expected one of {TASKS}, got {task!r}")
    data_dir = _data_dir(Path(root), version).absolute()
    words, items = _split_words(data_dir)
    source = f"gsc-v{version}/{task}"

    if task == "35class":
        if not (silence_counts is None and unknown_counts is None and official_test_root is None):
            raise ValueError("silence_counts, unknown_counts and official_test_root belong to the "
                             "12class task only (the official test archive has 12 classes)")
        label_of = {w: i for i, w in enumerate(words)}
        splits = {s: [ClipRef(rel, label_of[w], speaker_of(rel)) for rel, w in items[s]]
                  for s in SPLITS}
        return DatasetIndex(source, str(data_dir), list(words), splits,
                            noise_files=[rel for rel, _, _ in _noise_files(data_dir, data_dir)])

    absent = [k for k in KEYWORDS if k not in words]
    if absent:
        raise ValueError(f"{data_dir}: keyword folder(s) {absent} missing for the 12class task")
    official = Path(official_test_root).absolute() if official_test_root is not None else \
        data_dir.parent / ARCHIVES[(version, "test")].folder
    if official_test_root is not None and not official.is_dir():
        raise FileNotFoundError(f"official test archive not found: {official} is not a folder")
    # One root for every path: the common parent when the official test folder sits beside.
    base = Path(os.path.commonpath([data_dir, official])) if official.is_dir() else data_dir
    prefix = os.path.relpath(data_dir, base)
    classes = [*KEYWORDS, UNKNOWN, SILENCE]
    keywords = {s: [(rel, KEYWORDS.index(w)) for rel, w in items[s] if w in KEYWORDS]
                for s in SPLITS}
    others = {s: [rel for rel, w in items[s] if w not in KEYWORDS] for s in SPLITS}
    defaults = {s: min(BCRESNET_COUNTS[version][s], round(len(keywords[s]) / len(KEYWORDS)))
                for s in SPLITS}
    n_unknown = _counts("unknown_counts", unknown_counts, defaults)
    n_silence = _counts("silence_counts", silence_counts, defaults)
    noise = _noise_files(data_dir, base)

    def ref(rel: str, label: int) -> ClipRef:
        return ClipRef(os.path.normpath(os.path.join(prefix, rel)), label, speaker_of(rel))

    splits = {}
    for k, split in enumerate(SPLITS):
        other = others[split]
        picked = np.random.default_rng([seed, k, 0]).choice(
            len(other), min(len(other), n_unknown[split]), replace=False)
        splits[split] = ([ref(rel, label) for rel, label in keywords[split]]
                         + [ref(other[i], classes.index(UNKNOWN)) for i in sorted(picked)]
                         + _silence_clips(noise, split, n_silence[split],
                                          np.random.default_rng([seed, k, 1]),
                                          classes.index(SILENCE)))
    if official.is_dir():
        splits["official_test"] = _official_test(official, classes, base)
    return DatasetIndex(source, str(base), classes, splits,
                        noise_files=[rel for rel, _, _ in noise])
