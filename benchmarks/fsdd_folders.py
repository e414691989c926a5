"""Arrange the Free Spoken Digit Dataset (FSDD: 3,000 clips, digits 0-9, 6 speakers, 8 kHz) as
nas-kws's custom folders, a small real-speech set to check that nets and the supernet learn.

FSDD names its clips `<digit>_<speaker>_<take>.wav`, takes 0-49 per speaker and digit. The split
keeps the dataset's own convention (takes 0-4 are its test set) and holds out takes 5-9 for
validation: 2,400 / 300 / 300 clips, every speaker in every split.

    python benchmarks/fsdd_folders.py --mirror DIR --out data/fsdd
    nas-kws data folders --root data/fsdd --sample_rate 8000

DIR is a clone of github.com/Jakobovski/free-spoken-digit-dataset (bare or not; its `recordings/`
are read with `git archive`, nothing is checked out) or a checkout with a `recordings/` folder.
The output is written to a temporary folder and renamed, so an existing `--out` is never touched.
"""
from __future__ import annotations

import argparse
import io
import re
import shutil
import subprocess
import sys
import tarfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

CLIP = re.compile(r"(\d)_([A-Za-z]+)_(\d+)\.wav")
TEST_TAKES = 5     # FSDD's convention: takes 0-4 of each speaker and digit are the test set
VALID_TAKES = 5    # ours: the next 5 takes are the validation set


def split_of(take: int) -> str:
    if take < TEST_TAKES:
        return "testing"
    return "validation" if take < TEST_TAKES + VALID_TAKES else "training"


def recordings(mirror: Path) -> Iterator[tuple[str, bytes]]:
    """(file name, WAV bytes) of every clip under the mirror's `recordings/`."""
    folder = mirror / "recordings"
    if folder.is_dir():
        for path in sorted(folder.glob("*.wav")):
            yield path.name, path.read_bytes()
        return
    done = subprocess.run(["git", "-C", str(mirror), "archive", "HEAD", "recordings"],
                          capture_output=True)
    if done.returncode:
        raise SystemExit(f"{mirror}: neither a recordings/ folder nor a git repository with one "
                         f"({done.stderr.decode().strip()})")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".wav"):
                yield Path(member.name).name, tar.extractfile(member).read()


def arrange(mirror: Path, out: Path) -> Counter:
    """Write `out/<split>/<digit>/<speaker>_nohash_<take>.wav` (GSC's naming, so the index
    records the speaker); returns clips per split."""
    if out.exists():
        raise SystemExit(f"{out}: already exists; remove it or pick another --out")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    counts: Counter = Counter()
    skipped = []
    for name, data in recordings(mirror):
        match = CLIP.fullmatch(name)
        if not match:
            skipped.append(name)
            continue
        digit, speaker, take = match[1], match[2], int(match[3])
        split = split_of(take)
        target = tmp / split / digit / f"{speaker}_nohash_{take}.wav"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        counts[split] += 1
    if not counts:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SystemExit(f"{mirror}: no <digit>_<speaker>_<take>.wav clips under recordings/")
    if skipped:
        print(f"skipped {len(skipped)} file(s) not named <digit>_<speaker>_<take>.wav: "
              f"{', '.join(skipped[:5])}", file=sys.stderr)
    tmp.rename(out)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mirror", type=Path, required=True,
                        help="FSDD git clone (bare or not) or checkout with recordings/")
    parser.add_argument("--out", type=Path, required=True, help="new folder for the layout")
    args = parser.parse_args()
    counts = arrange(args.mirror, args.out)
    print(f"{args.out}: " + ", ".join(f"{s} {counts[s]}"
                                      for s in ("training", "validation", "testing")))


if __name__ == "__main__":
    main()
