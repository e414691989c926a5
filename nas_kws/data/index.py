"""The one index format every audio source produces: which file, which label, which split."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nas_kws.fileio import write_json

SPLITS = ("train", "valid", "test")
SILENCE = "_silence_"
UNKNOWN = "_unknown_"
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")  # GSC 12class
NOISE_DIR = "_background_noise_"   # GSC's folder of long noise recordings (synth writes one too)
# Each background-noise file is cut in time into disjoint regions, one per split, so the
# `_silence_` clips (and training noise) of one split never reuse another split's audio.
NOISE_REGIONS = {"train": (0.0, 0.8), "valid": (0.8, 0.9), "test": (0.9, 1.0)}


def speaker_of(filename: str) -> str:
    """GSC-style speaker id: the file name before `_nohash_` ("" when there is none)."""
    stem = Path(filename).name
    return stem.split("_nohash_")[0] if "_nohash_" in stem else ""


def noise_region(num_frames: int, split: str, min_frames: int) -> tuple[int, int]:
    """Frames [lo, hi) of a noise file that belong to `split`; the whole file when the
    split's region is shorter than `min_frames`."""
    a, b = NOISE_REGIONS[split]
    lo, hi = int(a * num_frames), int(b * num_frames)
    return (lo, hi) if hi - lo >= min_frames else (0, num_frames)


@dataclass(frozen=True)
class ClipRef:
    """One clip: a file (relative to the index root), or a crop of one (silence from noise)."""
    path: str
    label: int
    speaker: str = ""
    start: int = 0       # first sample to read, at the file's own rate
    gain: float = 1.0    # silence clips are scaled crops of background noise


@dataclass
class DatasetIndex:
    source: str                         # "gsc-v2/12class", "folders", "synth-v2/12class", ...
    root: str
    classes: list[str]
    splits: dict[str, list[ClipRef]]    # "train", "valid", "test", and e.g. "official_test"
    noise_files: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        """Clips per class per split."""
        out: dict[str, dict[str, int]] = {}
        for split, clips in self.splits.items():
            per = dict.fromkeys(self.classes, 0)
            for clip in clips:
                per[self.classes[clip.label]] += 1
            out[split] = per
        return out

    def fingerprint(self) -> str:
        """Content key: clip list plus each file's size and mtime, so edits invalidate caches."""
        h = hashlib.sha256()
        h.update(json.dumps([self.source, self.classes], sort_keys=True).encode())
        clips = {c.path for clips in self.splits.values() for c in clips}
        files = sorted(clips | set(self.noise_files))
        for rel in files:
            try:
                st = os.stat(Path(self.root) / rel)
                state = f"{st.st_size}\0{st.st_mtime_ns}"
            except FileNotFoundError:   # the store reports it as skipped; don't fail here
                state = "missing"
            h.update(f"{rel}\0{state}\n".encode())
        for split in sorted(self.splits):
            for c in self.splits[split]:
                h.update(f"{split}\0{c.path}\0{c.label}\0{c.start}\0{c.gain}\n".encode())
        return h.hexdigest()[:20]

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, {"source": self.source, "root": self.root, "classes": self.classes,
                          "noise_files": self.noise_files,
                          "splits": {k: [asdict(c) for c in v] for k, v in self.splits.items()}})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DatasetIndex":
        data = json.loads(Path(path).read_text())
        return cls(source=data["source"], root=data["root"], classes=data["classes"],
                   noise_files=data["noise_files"],
                   splits={k: [ClipRef(**c) for c in v] for k, v in data["splits"].items()})
