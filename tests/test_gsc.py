import argparse
import re
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nas_kws.data import gsc, synth
from nas_kws.data.commands import add_commands
from nas_kws.data.gsc import index_gsc
from nas_kws.data.index import KEYWORDS, NOISE_DIR, SILENCE, SPLITS, UNKNOWN, noise_region

OTHER_WORDS = ("bed", "cat", "dog")
PER_WORD = 20          # file i goes to valid when i % 10 == 0, to test when i % 10 == 1
NOISE_SECONDS = 12


def _wav(path: Path, seconds: float, seed: int, rate: int = 16000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    x = np.random.default_rng(seed).integers(-3000, 3000, int(seconds * rate), dtype=np.int16)
    sf.write(str(path), x, rate, subtype="PCM_16")


def make_gsc(root: Path, words=KEYWORDS + OTHER_WORDS) -> Path:
    """A tiny Speech Commands tree: PER_WORD clips per word, 2 noise files, the two lists."""
    valid, test = [], []
    for w, word in enumerate(words):
        for i in range(PER_WORD):
            rel = f"{word}/{w:02d}{i:06x}_nohash_0.wav"
            _wav(root / rel, 0.05, seed=w * 100 + i)
            (valid if i % 10 == 0 else test if i % 10 == 1 else []).append(rel)
    for k, name in enumerate(("white_noise.wav", "running_tap.wav")):
        _wav(root / NOISE_DIR / name, NOISE_SECONDS, seed=999 + k)
    (root / NOISE_DIR / "README.md").write_text("noise")
    (root / "validation_list.txt").write_text("\n".join(valid) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


def make_official_test(root: Path) -> Path:
    for c, name in enumerate([*KEYWORDS, UNKNOWN, SILENCE]):
        for i in range(3):
            stem = f"bed_{c:02d}{i:06x}_nohash_0" if name == UNKNOWN else f"{c:02d}{i:06x}_nohash_0"
            _wav(root / name / f"{stem}.wav", 0.05, seed=5000 + c * 10 + i)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_gsc(tmp_path_factory.mktemp("gsc") / "speech_commands_v0.02")


def test_12class_counts_follow_the_mean_keyword_count(tree):
    index = index_gsc(tree)
    assert index.classes == [*KEYWORDS, UNKNOWN, SILENCE]
    assert index.source == "gsc-v2/12class"
    per_split = {"train": 16, "valid": 2, "test": 2}   # keyword clips per word
    counts = index.counts()
    for split, n in per_split.items():
        assert all(counts[split][k] == n for k in KEYWORDS)
        # unknown and silence: min(BC-ResNet cap, mean keyword count) = n
        assert counts[split][UNKNOWN] == n and counts[split][SILENCE] == n
    assert "official_test" not in index.splits
    assert sorted(index.noise_files) == ["_background_noise_/running_tap.wav",
                                         "_background_noise_/white_noise.wav"]
    for clip in index.splits["train"]:
        assert (Path(index.root) / clip.path).is_file()


def test_35class_uses_every_word_folder(tree):
    index = index_gsc(tree, task="35class")
    assert index.classes == sorted(KEYWORDS + OTHER_WORDS)
    assert index.source == "gsc-v2/35class"
    for split, n in {"train": 16, "valid": 2, "test": 2}.items():
        assert set(index.counts()[split].values()) == {n}
    total = sum(len(v) for v in index.splits.values())
    assert total == PER_WORD * len(index.classes)   # every clip once, no silence, no noise
    with pytest.raises(ValueError, match="12class task only"):
        index_gsc(tree, task="35class", unknown_counts={"train": 1})


def test_splits_are_disjoint_and_follow_the_lists(tree):
    index = index_gsc(tree)
    valid = set((tree / "validation_list.txt").read_text().split())
    test = set((tree / "testing_list.txt").read_text().split())
    words = {s: {c.path for c in index.splits[s] if c.label != index.classes.index(SILENCE)}
             for s in SPLITS}
    assert words["valid"] <= valid and words["test"] <= test
    assert not (words["train"] & (valid | test))
    assert not (words["train"] & words["valid"]) and not (words["valid"] & words["test"])
    # silence crops come from the split's own region of each noise file
    frames = NOISE_SECONDS * 16000
    for split in SPLITS:
        lo, hi = noise_region(frames, split, min_frames=16000)
        for clip in index.splits[split]:
            if clip.label == index.classes.index(SILENCE):
                assert lo <= clip.start and clip.start + 16000 <= hi
                assert 0.0 <= clip.gain <= 1.0
                assert clip.path in index.noise_files


def test_seeded_and_deterministic(tree):
    a, b = index_gsc(tree, seed=3), index_gsc(tree, seed=3)
    assert a.splits == b.splits and a.fingerprint() == b.fingerprint()
    c = index_gsc(tree, seed=4)
    unknown = a.classes.index(UNKNOWN)
    pick = lambda idx: [x.path for x in idx.splits["train"] if x.label == unknown]  # noqa: E731
    assert pick(a) != pick(c)
    assert a.splits["train"][-1] != c.splits["train"][-1]   # a silence crop


def test_caps_and_explicit_counts(tree, monkeypatch):
    monkeypatch.setitem(gsc.BCRESNET_COUNTS, 2, {"train": 7, "valid": 1, "test": 2})
    counts = index_gsc(tree).counts()
    assert [counts[s][UNKNOWN] for s in SPLITS] == [7, 1, 2]
    assert [counts[s][SILENCE] for s in SPLITS] == [7, 1, 2]
    counts = index_gsc(tree, unknown_counts={"train": 1000, "valid": 0},
                       silence_counts={"test": 5}).counts()
    assert counts["train"][UNKNOWN] == 16 * len(OTHER_WORDS)   # all that exist
    assert counts["valid"][UNKNOWN] == 0 and counts["test"][SILENCE] == 5
    with pytest.raises(ValueError, match="unknown split"):
        index_gsc(tree, silence_counts={"training": 3})


def test_speaker_ids(tree):
    index = index_gsc(tree)
    clip = next(c for c in index.splits["train"] if c.path.startswith("yes/"))
    assert clip.speaker == Path(clip.path).name.split("_nohash_")[0]
    silence = index.classes.index(SILENCE)
    assert all(c.speaker == "" for c in index.splits["train"] if c.label == silence)


def test_official_test_split(tmp_path):
    data = make_gsc(tmp_path / "speech_commands_v0.02", words=KEYWORDS + ("bed",))
    make_official_test(tmp_path / "speech_commands_test_set_v0.02")
    for root in (tmp_path, data):   # the parent folder or the archive folder itself
        index = index_gsc(root)
        assert Path(index.root) == tmp_path
        assert set(index.counts()["official_test"].values()) == {3}
        for split in index.splits.values():
            assert all((Path(index.root) / c.path).is_file() for c in split)
    unknown = next(c for c in index.splits["official_test"]
                   if c.label == index.classes.index(UNKNOWN))
    assert not unknown.speaker.startswith("bed")
    elsewhere = make_official_test(tmp_path / "elsewhere" / "test")
    assert len(index_gsc(data, official_test_root=elsewhere).splits["official_test"]) == 36
    with pytest.raises(FileNotFoundError, match="official test archive not found"):
        index_gsc(data, official_test_root=tmp_path / "nope")


def test_errors_are_one_line(tmp_path, tree):
    with pytest.raises(FileNotFoundError) as err:
        index_gsc(tmp_path / "missing")
    assert "nas-kws data synth --out DIR" in str(err.value) and "--download" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a Speech Commands folder"):
        index_gsc(tmp_path / "empty")
    with pytest.raises(ValueError, match="task"):
        index_gsc(tree, task="10class")
    with pytest.raises(ValueError, match="version"):
        index_gsc(tree, version=3)
    partial = make_gsc(tmp_path / "partial", words=("yes", "no", "bed"))
    with pytest.raises(ValueError, match="keyword folder"):
        index_gsc(partial)
    assert index_gsc(partial, task="35class").classes == ["bed", "no", "yes"]


def test_download_gsc_from_file_urls(tmp_path, tree, monkeypatch):
    archives = {}
    for kind, folder in (("train", tree), ("test", make_official_test(tmp_path / "official"))):
        tarball = tmp_path / f"{kind}.tar.gz"
        with tarfile.open(tarball, "w:gz") as tar:
            tar.add(folder, arcname=".")
        name = gsc.ARCHIVES[(2, kind)].folder
        url = tarball.as_uri().replace(f"{kind}.tar.gz", f"{name}.tar.gz")
        archives[(2, kind)] = gsc.Archive(url,
                                          tarball.stat().st_size, None)
        tarball.rename(tmp_path / f"{name}.tar.gz")
    monkeypatch.setattr(gsc, "ARCHIVES", archives)
    root = tmp_path / "data"
    data_dir = gsc.download_gsc(root, 2, progress=False)
    assert data_dir == root / "speech_commands_v0.02"
    assert sorted(p.name for p in root.iterdir()) == ["speech_commands_test_set_v0.02",
                                                      "speech_commands_v0.02"]
    index = index_gsc(root)
    assert index.counts()["train"] == index_gsc(tree).counts()["train"]
    assert len(index.splits["official_test"]) == 36
    assert gsc.download_gsc(root, 2, progress=False) == data_dir   # present: nothing to do


def test_published_checksums_recorded():
    assert gsc.ARCHIVES[(2, "train")].size == 2_428_923_189
    assert all(len(a.sha256) == 64 for k, a in gsc.ARCHIVES.items() if k != (1, "test"))
    assert Counter(a.url.startswith("http://download.tensorflow.org/data/speech_commands_")
                   for a in gsc.ARCHIVES.values()) == Counter({True: 4})


def _run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_data_gsc_prints_counts(tree, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NAS_KWS_CACHE", str(tmp_path / "cache"))
    _run_cli(["data", "gsc", "--version", "2", "--root", str(tree), "--workers", "0"])
    out = capsys.readouterr().out
    assert "gsc-v2/12class" in out
    assert re.search(r"^yes\s+16\s+2\s+2$", out, re.M)
    assert re.search(r"^_silence_\s+16\s+2\s+2$", out, re.M)
    assert re.search(rf"^total\s+{12 * 16}\s+24\s+24$", out, re.M)
    assert str(tmp_path / "cache" / "stores") in out


def test_cli_data_synth_indexes_what_it_generates(tree, tmp_path, monkeypatch, capsys):
    calls = []

    def generate_synth(out, seed, size, progress, workers):
        calls.append((seed, size))
        shutil.copytree(tree, out)
        return out

    monkeypatch.setattr(synth, "generate_synth", generate_synth)
    monkeypatch.setenv("NAS_KWS_CACHE", str(tmp_path / "cache"))
    _run_cli(["data", "synth", "--out", str(tmp_path / "synth"), "--size", "tiny", "--seed", "1",
              "--workers", "0"])
    assert calls == [(1, "tiny")]
    assert re.search(r"^_unknown_\s+16\s+2\s+2$", capsys.readouterr().out, re.M)
