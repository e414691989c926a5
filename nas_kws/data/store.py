"""The waveform store: each split decoded ONCE into a packed int16 array on disk, then
memory-mapped, so training epochs never open a WAV file.

A store folder, `<cache>/stores/<source>-<key>/`, where the key hashes the index fingerprint
(clip list, file sizes and mtimes), the sample rate and the clip length:
    meta.json               classes, rates, clip counts, the files that were skipped
    <split>.audio.npy       int16 (N, num_samples)
    <split>.labels.npy      int64 (N,)
    <split>.speakers.json   N speaker ids ("" when unknown)
    noise.npy               int16 (M, num_samples): back-to-back crops of the training region
                            of each background-noise file, for augmentation
Clips are down-mixed to mono, resampled, cropped from their `start` (the first num_samples
samples are kept) and zero-padded at the end, as BC-ResNet pads GSC clips.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import re
import shutil
import warnings
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm import tqdm

from nas_kws.data.index import DatasetIndex, noise_region
from nas_kws.fileio import cache_dir, partial_dir, write_json, write_text

STORE_VERSION = 1   # bump when the layout or the decoding rules change: old stores are not reused
CHUNK = 256         # clips per worker task
POOL_MIN_CLIPS = 5000   # below this, starting worker processes costs more than it saves
SHOWN = 5           # skipped files named in the warning


@dataclass
class SplitArrays:
    audio: np.ndarray            # int16 (N, num_samples), memory-mapped
    labels: np.ndarray           # int64 (N,)
    speakers: list[str] | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class WaveformStore:
    root: Path
    classes: list[str]
    sample_rate: int
    num_samples: int
    noise: np.ndarray            # int16 (M, num_samples), M may be 0
    splits: dict[str, SplitArrays]

    def content_hash(self) -> str:
        """SHA-256 of what a model is trained and tested on (every split's samples and labels,
        the noise crops): the same on any machine holding the same data, whatever its files'
        paths and dates (the store's own key uses mtimes, so it is machine-specific)."""
        h = hashlib.sha256()
        for name in sorted(self.splits):
            arrays = self.splits[name]
            h.update(f"{name}\0{arrays.audio.shape}\0".encode())
            for array in (arrays.audio, arrays.labels):
                h.update(memoryview(np.ascontiguousarray(array)).cast("B"))
        h.update(memoryview(np.ascontiguousarray(self.noise)).cast("B"))
        return h.hexdigest()

    def split(self, name: str) -> SplitArrays:
        if name not in self.splits:
            raise ValueError(f"split {name!r} is not in the store at {self.root}; "
                             f"available: {sorted(self.splits)}")
        return self.splits[name]


def _wav_truncated(path: Path) -> bool:
    """True when a RIFF/WAVE data chunk claims more bytes than the file holds: libsndfile
    would silently return the shorter audio."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        header = f.read(12)
        if header[:4] != b"RIFF" or header[8:12] != b"WAVE":
            return False
        while len(chunk := f.read(8)) == 8:
            length = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                return length not in (0, 0xFFFFFFFF) and f.tell() + length > size
            f.seek(length + (length & 1), os.SEEK_CUR)
    return False


def _resample(x: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    # Imported here so decoding workers only load torch when a file needs resampling.
    import torch
    import torchaudio.functional

    return torchaudio.functional.resample(torch.from_numpy(x), rate, sample_rate).numpy()


def read_clip(path: Path, start: int, gain: float, sample_rate: int,
              num_samples: int) -> np.ndarray:
    """One clip as exactly `num_samples` int16 samples at `sample_rate`; raises ValueError or
    soundfile's error for audio that cannot be used."""
    if _wav_truncated(path):
        raise ValueError("truncated: the data chunk runs past the end of the file")
    with sf.SoundFile(str(path)) as f:
        if f.frames == 0:
            raise ValueError("empty: no audio frames")
        if start >= f.frames:
            raise ValueError(f"start {start} is past the last frame ({f.frames})")
        # int16 straight from the file only for 16-bit PCM: libsndfile does not scale float
        # WAVs when reading them as integers.
        exact = (f.subtype == "PCM_16" and f.samplerate == sample_rate and f.channels == 1
                 and gain == 1.0)
        f.seek(start)
        data = f.read(math.ceil(num_samples * f.samplerate / sample_rate),
                      dtype="int16" if exact else "float32", always_2d=True)
        rate = f.samplerate
    if exact:
        x = data[:, 0]
    else:
        bad = int(np.count_nonzero(~np.isfinite(data)))
        if bad:  # would be stored as 0 or full scale
            raise ValueError(f"{bad} NaN or infinite sample(s)")
        x = data.mean(axis=1) * np.float32(gain)
        if rate != sample_rate:
            x = _resample(x, rate, sample_rate)
        x = np.clip(np.round(x * 32768.0), -32768, 32767).astype(np.int16)
    out = np.zeros(num_samples, dtype=np.int16)
    out[:min(len(x), num_samples)] = x[:num_samples]
    return out


def _reason(err: Exception) -> str:
    return getattr(err, "error_string", None) or str(err)   # libsndfile's text without the path


def _decode_rows(array_path: str, first_row: int, root: str, clips: list[tuple[str, int, float]],
                 sample_rate: int, num_samples: int) -> list[tuple[int, str]]:
    """Decode `clips` into rows first_row.. of the .npy at `array_path`; return the failures
    as (row, "file (reason)")."""
    audio = np.load(array_path, mmap_mode="r+")
    failed = []
    for row, (rel, start, gain) in enumerate(clips, start=first_row):
        try:
            audio[row] = read_clip(Path(root) / rel, start, gain, sample_rate, num_samples)
        except Exception as err:  # any unusable file is skipped and reported, never fatal
            failed.append((row, f"{rel} ({_reason(err)})"))
    return failed


def _decode(path: Path, root: str, clips: list[tuple[str, int, float]], sample_rate: int,
            num_samples: int, pool: Executor | None, desc: str,
            progress: bool) -> list[tuple[int, str]]:
    """Decode `clips` into an int16 .npy at `path` and drop the rows that failed; return the
    failures, sorted, as (clip number, message)."""
    audio = np.lib.format.open_memmap(path, mode="w+", dtype=np.int16,
                                      shape=(len(clips), num_samples))
    del audio   # header written; the workers fill the rows
    jobs = [(str(path), i, root, clips[i:i + CHUNK], sample_rate, num_samples)
            for i in range(0, len(clips), CHUNK)]
    failed: list[tuple[int, str]] = []
    with tqdm(total=len(clips), desc=desc, unit="clip", disable=not progress, leave=False) as bar:
        if pool is None:
            for job in jobs:
                failed += _decode_rows(*job)
                bar.update(len(job[3]))
        else:
            futures = {pool.submit(_decode_rows, *job): len(job[3]) for job in jobs}
            for future in as_completed(futures):
                failed += future.result()
                bar.update(futures[future])
    failed.sort()
    if failed:
        _drop_rows(path, [row for row, _ in failed])
    return failed


def _drop_rows(path: Path, rows: list[int]) -> None:
    """Rewrite the .npy at `path` without `rows`, a block at a time."""
    audio = np.load(path, mmap_mode="r")
    keep = np.ones(len(audio), dtype=bool)
    keep[rows] = False
    tmp = path.with_suffix(".compact.npy")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16,
                                    shape=(int(keep.sum()), audio.shape[1]))
    done = 0
    for i in range(0, len(audio), 8192):
        block = audio[i:i + 8192][keep[i:i + 8192]]
        out[done:done + len(block)] = block
        done += len(block)
    del out, audio
    os.replace(tmp, path)


def _noise_crops(index: DatasetIndex, sample_rate: int, num_samples: int,
                 skipped: list[str]) -> list[tuple[str, int, float]]:
    """Back-to-back clip-long crops of the training region of each noise file."""
    crops = []
    for rel in index.noise_files:
        try:
            info = sf.info(str(Path(index.root) / rel))
        except Exception as err:  # reported with the other skipped files
            skipped.append(f"{rel} ({_reason(err)})")
            continue
        step = math.ceil(num_samples * info.samplerate / sample_rate)
        lo, hi = noise_region(info.frames, "train", min_frames=step)
        crops += [(rel, start, 1.0) for start in range(lo, hi - step + 1, step)]
    return crops


def _store_name(source: str, fingerprint: str, sample_rate: int, num_samples: int) -> str:
    key = hashlib.sha256(f"{STORE_VERSION}\0{fingerprint}\0{sample_rate}\0{num_samples}"
                         .encode()).hexdigest()[:16]
    return f"{re.sub(r'[^A-Za-z0-9.]+', '-', source).strip('-')}-{key}"


def build_store(index: DatasetIndex, sample_rate: int = 16000, num_samples: int = 16000,
                cache_root: Path | None = None, progress: bool = True,
                workers: int = 2) -> WaveformStore:
    """Open the store for `index`, decoding every split first if it is not cached yet. The files
    skipped when it was built are warned about on every use, and a class left without a
    training clip is an error."""
    if sample_rate <= 0 or num_samples <= 0:
        raise ValueError(f"store: sample_rate and num_samples must be > 0, got {sample_rate}, "
                         f"{num_samples}")
    cache_root = Path(cache_root) if cache_root is not None else cache_dir() / "stores"
    fingerprint = index.fingerprint()
    path = cache_root / _store_name(index.source, fingerprint, sample_rate, num_samples)
    if not path.is_dir():
        _build(path, index, fingerprint, sample_rate, num_samples, progress, workers)
    store = open_store(path)
    skipped = json.loads((path / "meta.json").read_text()).get("skipped", [])
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable, empty, truncated or undecodable audio "
                      f"file(s) of {index.root} (listed in {path / 'meta.json'}): "
                      + "; ".join(skipped[:SHOWN]) + ("; ..." if len(skipped) > SHOWN else ""))
    if "train" in store.splits:
        labels = store.split("train").labels
        untrained = [c for i, c in enumerate(store.classes) if not (labels == i).any()]
        if untrained:
            raise ValueError(f"{index.root}: class(es) {untrained} have no decodable training "
                             "clip (every one was skipped); every class needs training clips")
    return store


def _build(path: Path, index: DatasetIndex, fingerprint: str, sample_rate: int,
           num_samples: int, progress: bool, workers: int) -> None:
    """Decode the store into a partial folder, then rename it to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(path)
    try:
        _write_store(tmp, index, fingerprint, sample_rate, num_samples, progress, workers)
        try:
            os.rename(tmp, path)
        except OSError:
            if not path.is_dir():
                raise
            shutil.rmtree(tmp)   # another process finished the same store first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_store(tmp: Path, index: DatasetIndex, fingerprint: str, sample_rate: int,
                 num_samples: int, progress: bool, workers: int) -> list[str]:
    """Decode every split and the noise into `tmp`; return the skipped-file messages."""
    skipped: list[str] = []
    noise = _noise_crops(index, sample_rate, num_samples, skipped)
    total = sum(map(len, index.splits.values())) + len(noise)
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) \
        if workers > 1 and total >= POOL_MIN_CLIPS else None
    counts = {}
    try:
        for name, clips in index.splits.items():
            failed = _decode(tmp / f"{name}.audio.npy", index.root,
                             [(c.path, c.start, c.gain) for c in clips], sample_rate, num_samples,
                             pool, f"decode {name}", progress)
            bad = {row for row, _ in failed}
            kept = [c for row, c in enumerate(clips) if row not in bad]
            np.save(tmp / f"{name}.labels.npy", np.array([c.label for c in kept], dtype=np.int64))
            write_text(tmp / f"{name}.speakers.json", json.dumps([c.speaker for c in kept]))
            counts[name] = len(kept)
            skipped += [message for _, message in failed]
        failed = _decode(tmp / "noise.npy", index.root, noise, sample_rate, num_samples, pool,
                         "decode noise", progress)
        skipped += dict.fromkeys(message for _, message in failed)   # once per noise file
    finally:
        if pool is not None:
            pool.shutdown()
    write_json(tmp / "meta.json", {
        "store_version": STORE_VERSION, "source": index.source, "root": index.root,
        "fingerprint": fingerprint, "classes": index.classes, "sample_rate": sample_rate,
        "num_samples": num_samples, "splits": counts, "noise": len(noise) - len(failed),
        "skipped": skipped})
    return skipped


def open_store(path: str | os.PathLike) -> WaveformStore:
    """Memory-map a store folder written by build_store."""
    path = Path(path)
    if not (path / "meta.json").is_file():
        raise FileNotFoundError(f"{path}: not a waveform store (no meta.json); build it with "
                                "build_store")
    meta = json.loads((path / "meta.json").read_text())
    if meta.get("store_version") != STORE_VERSION:
        raise ValueError(f"{path}: store version {meta.get('store_version')}, expected "
                         f"{STORE_VERSION}; "
                         "delete it and build again")

    splits = {name: SplitArrays(np.load(path / f"{name}.audio.npy", mmap_mode="r"),
                                np.load(path / f"{name}.labels.npy"),
                                json.loads((path / f"{name}.speakers.json").read_text()))
              for name in meta["splits"]}
    return WaveformStore(path, meta["classes"], meta["sample_rate"], meta["num_samples"],
                         np.load(path / "noise.npy", mmap_mode="r"), splits)
