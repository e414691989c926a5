"""Your own recordings: DIR/training|validation|testing/<class>/*.wav, one folder per class."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

from nas_kws.data.index import ClipRef, DatasetIndex, speaker_of

SPLIT_DIRS = {"train": "training", "valid": "validation", "test": "testing"}
LAYOUT = "expected DIR/training|validation|testing/<class>/*.wav"
SHOWN = 5   # file names quoted in a warning


def _listing(split_dir: Path, ignored: list[str]) -> dict[str, list[str]]:
    """{class: sorted WAV names}; anything else (loose files, sub-folders, other formats)
    goes to `ignored`. Hidden entries are skipped without a word."""
    classes: dict[str, list[str]] = {}
    for entry in sorted(split_dir.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(str(entry))
            continue
        wavs = classes.setdefault(entry.name, [])
        for item in sorted(entry.iterdir()):
            if item.name.startswith("."):
                continue
            if item.is_file() and item.suffix.lower() == ".wav":
                wavs.append(item.name)
            else:
                ignored.append(str(item))
    return classes


def _named(items: list[str]) -> str:
    more = f", ... ({len(items) - SHOWN} more)" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def index_folders(root: str | os.PathLike) -> DatasetIndex:
    """Index a folder tree of labelled WAVs; class names are the folder names, sorted."""
    root = Path(root).absolute()
    for split in ("train", "valid"):
        if not (root / SPLIT_DIRS[split]).is_dir():
            raise FileNotFoundError(f"{root}: no {SPLIT_DIRS[split]}/ folder; {LAYOUT}")
    present = [s for s in SPLIT_DIRS if (root / SPLIT_DIRS[s]).is_dir()]
    ignored: list[str] = []
    listing = {s: _listing(root / SPLIT_DIRS[s], ignored) for s in present}
    classes = sorted(set().union(*listing.values()))
    if not classes:
        raise ValueError(f"{root}: no class folders under training/; {LAYOUT}")

    untrained = [c for c in classes if not listing["train"].get(c)]
    if untrained:
        raise ValueError(f"{root}: class(es) {untrained} have no WAV in training/; "
                         "every class needs training clips")
    empty = [f"{SPLIT_DIRS[s]}/{c}" for s in present for c, names in listing[s].items()
             if not names]
    if empty:
        warnings.warn(f"{root}: {len(empty)} empty class folder(s): {_named(empty)}")
    lonely = [c for c in classes if sum(bool(listing[s].get(c)) for s in present) == 1]
    if lonely:
        warnings.warn(f"{root}: class(es) with clips in one split only: {_named(lonely)}")
    if ignored:
        warnings.warn(f"{root}: ignored {len(ignored)} file(s) or folder(s) that are not "
                      f"<class>/*.wav: {_named([os.path.relpath(p, root) for p in ignored])}")

    splits = {s: [ClipRef(f"{SPLIT_DIRS[s]}/{c}/{name}", label, speaker_of(name))
                  for label, c in enumerate(classes) for name in listing[s].get(c, [])]
              for s in present}
    if "test" not in splits:
        warnings.warn(f"{root}: no testing/ folder; the test split reuses validation/")
        splits["test"] = list(splits["valid"])
    return DatasetIndex("folders", str(root), classes, splits)
