import argparse
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nas_kws.data.commands import add_commands
from nas_kws.data.folders import index_folders


def _wav(path: Path, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.random.default_rng(seed).integers(-99, 99, 800, dtype=np.int16), 16000)


def make_tree(root: Path, splits=("training", "validation", "testing"),
              classes=("stop", "go", "hey"), per_class: int = 3) -> Path:
    for s, split in enumerate(splits):
        for c, name in enumerate(classes):
            for i in range(per_class):
                _wav(root / split / name / f"spk{i}_nohash_{s}.wav", seed=s * 100 + c * 10 + i)
    return root


def test_index_folders(tmp_path):
    root = make_tree(tmp_path / "d")
    _wav(root / "training" / "go" / "LOUD.WAV")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        index = index_folders(root)
    assert index.classes == ["go", "hey", "stop"]
    assert index.source == "folders" and index.noise_files == []
    assert index.counts() == {"train": {"go": 4, "hey": 3, "stop": 3},
                              "valid": {"go": 3, "hey": 3, "stop": 3},
                              "test": {"go": 3, "hey": 3, "stop": 3}}
    for split in index.splits.values():
        for clip in split:
            assert (Path(index.root) / clip.path).is_file()
            assert Path(clip.path).parent.name == index.classes[clip.label]
    assert {c.speaker for c in index.splits["train"]} == {"spk0", "spk1", "spk2", ""}


def test_missing_testing_falls_back_to_validation(tmp_path):
    root = make_tree(tmp_path / "d", splits=("training", "validation"))
    with pytest.warns(UserWarning, match="no testing/ folder"):
        index = index_folders(root)
    assert index.splits["test"] == index.splits["valid"]


@pytest.mark.parametrize("missing", ["training", "validation"])
def test_missing_split_folder_is_an_error(tmp_path, missing):
    root = make_tree(tmp_path / "d", splits=tuple({"training", "validation"} - {missing}))
    with pytest.raises(FileNotFoundError, match=f"no {missing}/ folder.*DIR/training"):
        index_folders(root)


def test_class_problems(tmp_path):
    root = make_tree(tmp_path / "d")
    (root / "validation" / "empty").mkdir()
    _wav(root / "training" / "empty" / "a.wav")
    _wav(root / "training" / "rare" / "b.wav")
    with pytest.warns(UserWarning) as record:
        index = index_folders(root)
    messages = [str(w.message) for w in record]
    assert any("empty class folder" in m and "validation/empty" in m for m in messages)
    assert any("one split only" in m and "rare" in m for m in messages)
    assert "rare" in index.classes

    _wav(root / "validation" / "orphan" / "c.wav")
    with pytest.raises(ValueError, match=r"\['orphan'\] have no WAV in training"):
        index_folders(root)


def test_non_wav_files_counted_in_one_warning(tmp_path):
    root = make_tree(tmp_path / "d")
    for i in range(7):
        (root / "training" / "go" / f"note{i}.txt").write_text("x")
    (root / "training" / "go" / ".DS_Store").write_text("x")   # hidden: ignored silently
    with pytest.warns(UserWarning) as record:
        index_folders(root)
    assert len(record) == 1
    message = str(record[0].message)
    assert "ignored 7 file(s)" in message and "note0.txt" in message and "(2 more)" in message


def test_cli_data_folders(tmp_path, monkeypatch, capsys):
    root = make_tree(tmp_path / "d")
    monkeypatch.setenv("NAS_KWS_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["data", "folders", "--root", str(root), "--sample_rate", "8000",
                              "--duration", "0.5", "--workers", "0"])
    args.func(args)
    out = capsys.readouterr().out
    assert re.search(r"^stop\s+3\s+3\s+3$", out, re.M)
    assert "8000 Hz x 4000 samples" in out
