"""benchmarks/fsdd_folders.py: FSDD's clips arranged as custom folders, from a recordings folder
or a git repository, split by take (0-4 test, 5-9 validation, the rest training)."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nas_kws.data.folders import index_folders

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from fsdd_folders import arrange  # noqa: E402

TAKES = 12   # per speaker and digit: 5 test, 5 validation, 2 training


def fake_fsdd(root: Path) -> Path:
    """Two digits by two speakers, `TAKES` short 8 kHz clips each, plus one stray file."""
    rng = np.random.default_rng(0)
    for digit in (3, 7):
        for speaker in ("ann", "bob"):
            for take in range(TAKES):
                sf.write(str(root / "recordings" / f"{digit}_{speaker}_{take}.wav"),
                         rng.integers(-99, 99, 400, dtype=np.int16), 8000)
    (root / "recordings" / "notes.wav").write_bytes(b"")
    return root


@pytest.mark.parametrize("from_git", [False, True])
def test_fsdd_folders_split_by_take(tmp_path, from_git):
    (tmp_path / "src" / "recordings").mkdir(parents=True)
    source = fake_fsdd(tmp_path / "src")
    if from_git:   # a bare clone, read with git archive as the lab's mirror is
        git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(source)]
        subprocess.run(["git", "init", "-q", str(source)], check=True)
        subprocess.run([*git, "add", "recordings"], check=True)
        subprocess.run([*git, "commit", "-qm", "clips"], check=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(source), str(tmp_path / "bare")],
                       check=True)
        source = tmp_path / "bare"
    counts = arrange(source, tmp_path / "fsdd")
    assert counts == {"testing": 20, "validation": 20, "training": 8}
    assert sorted(p.name for p in (tmp_path / "fsdd" / "training" / "3").iterdir()) == [
        "ann_nohash_10.wav", "ann_nohash_11.wav", "bob_nohash_10.wav", "bob_nohash_11.wav"]
    index = index_folders(tmp_path / "fsdd")
    assert index.classes == ["3", "7"]
    assert {c.speaker for c in index.splits["test"]} == {"ann", "bob"}
    with pytest.raises(SystemExit, match="already exists"):
        arrange(source, tmp_path / "fsdd")
