import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio

from nas_kws.data import store as store_mod
from nas_kws.data.folders import index_folders
from nas_kws.data.index import ClipRef, DatasetIndex, noise_region
from nas_kws.data.store import build_store, open_store

L = 1600   # 0.1 s clips keep the test fast


def _pcm(n: int, seed: int, channels: int = 1) -> np.ndarray:
    shape = (n, channels) if channels > 1 else (n,)
    return np.random.default_rng(seed).integers(-20000, 20000, shape, dtype=np.int16)


def _write(path: Path, x: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, rate, subtype=subtype)
    return x


def make_tree(root: Path, per_class: int = 4) -> dict[str, np.ndarray]:
    """16 kHz mono int16 clips of exactly L samples; returns {relative path: samples}."""
    clips = {}
    for s, split in enumerate(("training", "validation", "testing")):
        for c, name in enumerate(("a", "b")):
            for i in range(per_class):
                rel = f"{split}/{name}/s{i}_nohash_{s}.wav"
                clips[rel] = _write(root / rel, _pcm(L, seed=s * 100 + c * 10 + i))
    return clips


def test_round_trip_is_exact(tmp_path):
    clips = make_tree(tmp_path / "d")
    index = index_folders(tmp_path / "d")
    store = build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False, workers=0)
    assert store.classes == ["a", "b"] and store.sample_rate == 16000 and store.num_samples == L
    assert set(store.splits) == {"train", "valid", "test"}
    assert store.noise.shape == (0, L) and store.noise.dtype == np.int16
    for name, refs in index.splits.items():
        arrays = store.split(name)
        assert isinstance(arrays.audio, np.memmap)
        assert arrays.audio.dtype == np.int16 and arrays.audio.shape == (len(refs), L)
        assert arrays.labels.dtype == np.int64
        np.testing.assert_array_equal(arrays.labels, [r.label for r in refs])
        assert arrays.speakers == [r.speaker for r in refs]
        for row, ref in enumerate(refs):
            np.testing.assert_array_equal(arrays.audio[row], clips[ref.path])
    with pytest.raises(ValueError,
                       match=r"'official_test'.*available: \['test', 'train', 'valid'\]"):
        store.split("official_test")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [store.root.name]   # no temp left
    assert open_store(store.root).splits["train"].audio.shape == store.splits["train"].audio.shape


def test_mixed_rates_lengths_channels(tmp_path):
    root = tmp_path / "d"
    make_tree(root, per_class=1)
    short = _write(root / "training/a/short.wav", _pcm(L // 2, 1))
    long = _write(root / "training/a/long.wav", _pcm(3 * L, 2))
    stereo = _write(root / "training/b/stereo.wav", _pcm(L, 3, channels=2))
    slow = _write(root / "training/b/slow.wav", _pcm(L // 2, 4), rate=8000)
    floats = _write(root / "training/b/float.wav", _pcm(L, 5).astype(np.float32) / 32768,
                    subtype="FLOAT")
    index = index_folders(root)
    store = build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False, workers=0)
    row = {Path(c.path).name: store.splits["train"].audio[i]
           for i, c in enumerate(index.splits["train"])}
    np.testing.assert_array_equal(row["short.wav"][:L // 2], short)
    assert not row["short.wav"][L // 2:].any()                       # zero-padded at the end
    np.testing.assert_array_equal(row["long.wav"], long[:L])        # the first L samples kept
    expected = np.round(stereo.astype(np.float32).mean(axis=1))
    assert np.abs(row["stereo.wav"] - expected).max() <= 1           # down-mixed
    resampled = torchaudio.functional.resample(torch.from_numpy(slow / np.float32(32768)),
                                               8000, 16000)
    assert np.abs(row["slow.wav"] - np.round(resampled.numpy() * 32768)).max() <= 1
    np.testing.assert_array_equal(row["float.wav"], floats * 32768)


def test_bad_files_are_skipped_with_one_counted_warning(tmp_path):
    root = tmp_path / "d"
    clips = make_tree(root, per_class=2)
    good = root / "training/a/s0_nohash_0.wav"
    data = good.read_bytes()
    (root / "training/a/junk.wav").write_bytes(b"this is not audio at all")
    (root / "training/a/zero_bytes.wav").write_bytes(b"")
    (root / "training/b/header_only.wav").write_bytes(data[:44])
    (root / "training/b/truncated.wav").write_bytes(data[:len(data) // 2])
    index = index_folders(root)
    with pytest.warns(UserWarning) as record:
        store = build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False,
                            workers=0)
    assert len(record) == 1
    message = str(record[0].message)
    assert message.startswith("skipped 4 ")
    for name in ("junk.wav", "zero_bytes.wav", "header_only.wav", "truncated.wav"):
        assert name in message
    train = store.split("train")
    good_refs = [c for c in index.splits["train"] if c.path in clips]
    assert len(train) == len(good_refs) == 4
    np.testing.assert_array_equal(train.labels, [c.label for c in good_refs])
    for row, ref in enumerate(good_refs):
        np.testing.assert_array_equal(train.audio[row], clips[ref.path])
    with pytest.warns(UserWarning) as again:  # the cached store warns again, from its meta.json
        build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False, workers=0)
    assert [str(w.message) for w in again] == [message]


def test_silence_crops_and_noise(tmp_path):
    noise = _write(tmp_path / "noise/hum.wav", _pcm(10 * L, 7))
    _write(tmp_path / "words/a.wav", _pcm(L, 8))
    clips = [ClipRef("noise/hum.wav", 1, start=1000, gain=0.5), ClipRef("words/a.wav", 0)]
    index = DatasetIndex("test", str(tmp_path), ["word", "_silence_"],
                         {"train": clips, "valid": clips[:1], "test": []},
                         noise_files=["noise/hum.wav"])
    store = build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False, workers=0)
    expected = np.round(noise[1000:1000 + L] * 0.5)
    assert np.abs(store.split("train").audio[0] - expected).max() <= 1
    assert store.split("test").audio.shape == (0, L)
    lo, hi = noise_region(len(noise), "train", L)
    assert store.noise.shape == ((hi - lo) // L, L)
    np.testing.assert_array_equal(store.noise[1], noise[lo + L:lo + 2 * L])


def test_cache_reuse_and_invalidation(tmp_path, monkeypatch):
    root = tmp_path / "d"
    make_tree(root, per_class=2)
    index = index_folders(root)
    first = build_store(index, 16000, L, cache_root=tmp_path / "cache", progress=False, workers=0)

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(store_mod, "_decode_rows", no_decoding)
    again = build_store(index_folders(root), 16000, L, cache_root=tmp_path / "cache",
                        progress=False)
    assert again.root == first.root
    monkeypatch.undo()

    other_length = build_store(index, 16000, L // 2, cache_root=tmp_path / "cache", progress=False,
                               workers=0)
    assert other_length.root != first.root and other_length.num_samples == L // 2

    edited = root / index.splits["train"][0].path
    _write(edited, _pcm(L, 99))
    os.utime(edited, ns=(1, 1))
    changed = build_store(index_folders(root), 16000, L, cache_root=tmp_path / "cache",
                          progress=False, workers=0)
    assert changed.root != first.root
    np.testing.assert_array_equal(changed.split("train").audio[0], _pcm(L, 99))


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    make_tree(tmp_path / "d", per_class=1)

    def boom(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(store_mod, "_decode", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        build_store(index_folders(tmp_path / "d"), 16000, L, cache_root=tmp_path / "cache",
                    progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_process_pool_matches_inline(tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "POOL_MIN_CLIPS", 300)
    pools = []

    def spy(*args, **kwargs):
        pools.append(ProcessPoolExecutor(*args, **kwargs))
        return pools[-1]

    monkeypatch.setattr(store_mod, "ProcessPoolExecutor", spy)
    root = tmp_path / "d"
    clips = make_tree(root, per_class=70)   # 420 clips: two chunks of work
    index = index_folders(root)
    pooled = build_store(index, 16000, L, cache_root=tmp_path / "pool", progress=False, workers=2)
    assert len(pools) == 1
    for name, refs in index.splits.items():
        audio = pooled.split(name).audio
        assert audio.shape == (len(refs), L)
        for row in (0, len(refs) // 2, len(refs) - 1):
            np.testing.assert_array_equal(audio[row], clips[refs[row].path])
