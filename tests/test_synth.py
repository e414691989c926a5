"""The synthetic eSpeak dataset: GSC v2 layout, speaker-disjoint splits, determinism, sanity of
audio."""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from nas_kws.data import espeak, noise, synth, synth_audio
from nas_kws.data.index import NOISE_DIR

SIZE = synth.SYNTH_SIZES["tiny"]
NAME = re.compile(r"^[0-9a-f]{8}_nohash_\d+\.wav$")


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def clips(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.glob("*/*.wav")
                  if p.parent.name in synth.WORDS)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    roots = {"two_workers": synth.generate_synth(base / "a", seed=0, size="tiny", progress=False,
                                                 workers=2),
             "one_worker": synth.generate_synth(base / "b", seed=0, size="tiny", progress=False,
                                                workers=1)}
    interrupted = base / "c"   # looks like a generation killed half-way: no .complete marker
    (interrupted / "yes").mkdir(parents=True)
    (interrupted / synth.CONFIG_NAME).write_text("{}")
    (interrupted / "yes" / "leftover.wav").write_bytes(b"partial")
    roots["other_seed"] = synth.generate_synth(interrupted, seed=1, size="tiny", progress=False,
                                               workers=2)
    return roots


def test_gsc_layout_and_wav_format(built):
    root = built["two_workers"]
    assert (sorted(p.name for p in root.iterdir() if p.is_dir())
            == sorted([*synth.WORDS, NOISE_DIR]))
    names = clips(root)
    assert len(names) == SIZE.speakers * SIZE.clips_per_speaker == 210
    for rel in names:
        assert NAME.match(Path(rel).name), rel
        info = sf.info(root / rel)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            16000, 1, 16000, "PCM_16"), rel
    noises = sorted((root / NOISE_DIR).glob("*.wav"))
    assert [p.name for p in noises] == ["babble.wav", "brown_noise.wav", "mains_hum.wav",
                                        "pink_noise.wav", "white_noise.wav"]
    for path in noises:
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames) == (16000, 1,
                                                                 SIZE.noise_seconds * 16000)
    config = json.loads((root / synth.CONFIG_NAME).read_text())
    assert (config["seed"], config["size"], len(config["speakers"])) == (0, "tiny", SIZE.speakers)
    assert (root / "README.txt").exists() and (root / synth.COMPLETE_MARKER).exists()


def test_lists_reference_existing_clips_and_speakers_are_disjoint(built):
    root = built["two_workers"]
    valid = (root / "validation_list.txt").read_text().splitlines()
    test = (root / "testing_list.txt").read_text().splitlines()
    assert valid == sorted(valid) and test == sorted(test)
    assert valid and test and not set(valid) & set(test)
    for rel in valid + test:
        assert (root / rel).is_file() and rel.split("/")[0] in synth.WORDS, rel
    train = sorted(set(clips(root)) - set(valid) - set(test))
    speakers = {name: {Path(rel).name.split("_nohash_")[0] for rel in rels}
                for name, rels in (("train", train), ("valid", valid), ("test", test))}
    assert [len(s) for s in speakers.values()] == [4, 1, 1]
    assert not (speakers["train"] & speakers["valid"] or speakers["train"] & speakers["test"]
                or speakers["valid"] & speakers["test"])
    # every speaker says every word, and timbre variants are held out too
    for rels in (train, valid, test):
        assert {rel.split("/")[0] for rel in rels} == set(synth.WORDS)
    config = json.loads((root / synth.CONFIG_NAME).read_text())
    variants = {split: {s["voice"].split("+")[1] for s in config["speakers"] if s["split"] == split}
                for split in ("train", "valid", "test")}
    assert not (variants["train"] & variants["valid"] or variants["train"] & variants["test"])


def test_same_seed_is_byte_identical_for_any_worker_count(built):
    assert digest(built["two_workers"]) == digest(built["one_worker"])


def test_other_seed_differs_and_interrupted_folder_is_rebuilt(built):
    a, b = built["two_workers"], built["other_seed"]
    assert not (b / "yes" / "leftover.wav").exists() and (b / synth.COMPLETE_MARKER).exists()
    assert len(clips(b)) == 210
    clip_digests = [{h for rel, h in digest(root).items() if rel in clips(root)} for root in (a, b)]
    assert clip_digests[0].isdisjoint(clip_digests[1])


def test_complete_folder_is_reused_and_foreign_folders_are_refused(built, tmp_path):
    root = built["two_workers"]
    before = (root / "yes").stat().st_mtime_ns, (root / synth.COMPLETE_MARKER).stat().st_mtime_ns
    assert synth.generate_synth(root, seed=0, size="tiny", progress=False) == root
    stamps = (root / "yes").stat().st_mtime_ns, (root / synth.COMPLETE_MARKER).stat().st_mtime_ns
    assert stamps == before
    with pytest.raises(ValueError, match="seed"):
        synth.generate_synth(root, seed=5, size="tiny", progress=False)
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(ValueError, match="refusing"):
        synth.generate_synth(tmp_path, seed=0, size="tiny", progress=False)
    assert (tmp_path / "mine.txt").exists()
    with pytest.raises(ValueError, match="huge"):
        synth.generate_synth(tmp_path / "x", size="huge")


def test_clips_are_audible_and_all_different(built):
    root = built["two_workers"]
    levels = []
    for rel in clips(root):
        x, _ = sf.read(root / rel, dtype="float32")
        levels.append(20 * np.log10(np.sqrt(np.mean(x ** 2))))
    levels = np.array(levels)
    assert levels.min() > -50.0                      # never silent (speech is set to -35..-15 dBFS)
    assert levels.std() > 2.0                        # levels vary from clip to clip
    wav_hashes = {h for rel, h in digest(root).items() if rel.endswith(".wav")}
    assert len(wav_hashes) == len(clips(root)) + 5


def test_every_accent_speaks_and_unknown_voices_are_rejected():
    tts = espeak.get_espeak()
    for accent in synth_audio.ACCENTS:
        speech = tts.synthesize("yes", accent)
        assert speech.dtype == np.int16 and len(speech) > 0.2 * espeak.SAMPLE_RATE, accent
    assert len(tts.synthesize("yes", "en-us+f3", rate=300, pitch=80)) > 0
    with pytest.raises(ValueError, match="xx-nope"):
        tts.synthesize("yes", "xx-nope")
    with pytest.raises(ValueError, match="no-such-variant"):
        tts.synthesize("yes", "en+no-such-variant")
    with pytest.raises(ValueError, match="pitch=101"):
        tts.synthesize("yes", "en", pitch=101)


def test_resample_keeps_tones_below_the_new_nyquist_and_removes_those_above():
    t = np.arange(espeak.SAMPLE_RATE) / espeak.SAMPLE_RATE
    for freq, kept in ((1000.0, True), (9000.0, False)):
        wave = np.sin(2 * np.pi * freq * t).astype(np.float32)
        y = synth_audio.resample(wave, espeak.SAMPLE_RATE, 16000)
        assert len(y) == 16000
        rms = np.sqrt(np.mean(y ** 2))
        if kept:
            assert abs(rms - np.sqrt(0.5)) < 0.01
            assert np.argmax(np.abs(np.fft.rfft(y))) == 1000
        else:
            assert rms < 1e-3


def test_noise_generators():
    rng = np.random.default_rng(0)
    n = 16000
    spectra = {}
    for kind in ("white", "pink", "brown", "hum"):
        x = noise.make_noise(kind, n, rng)
        assert x.shape == (n,) and abs(np.sqrt(np.mean(x ** 2)) - 1) < 1e-3
        spectra[kind] = np.abs(np.fft.rfft(x)) ** 2
    low_high = {k: s[50:500].mean() / s[4000:8000].mean() for k, s in spectra.items()}
    assert low_high["white"] < 2 < low_high["pink"] < low_high["brown"]
    fundamental = int(np.argmax(spectra["hum"][30:80])) + 30       # 1 Hz bins
    assert min(abs(fundamental - 50), abs(fundamental - 60)) <= 1
    streams = [rng.standard_normal(3000), np.sin(np.arange(5000) / 3)]
    mix = noise.babble(streams, n, rng)
    assert mix.shape == (n,) and abs(np.sqrt(np.mean(mix ** 2)) - 1) < 1e-3
    with pytest.raises(ValueError, match="purple"):
        noise.make_noise("purple", n, rng)


def test_default_root_lives_in_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("NAS_KWS_CACHE", str(tmp_path))
    assert (synth.default_synth_root(3, "small")
            == tmp_path / f"synth-v{synth.RECIPE_VERSION}-seed3-small")
