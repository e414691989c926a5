"""Bad input and faults (issue 12): each gets one line on stderr naming what is wrong, exit code
2, and leaves every existing file as it was."""
from __future__ import annotations

import hashlib
import math
import shutil
from pathlib import Path

import pytest

from nas_kws.cli import main
from nas_kws.runs import RunDir

TRAIN_SPLIT_CLIPS = 4 * 30  # tone_data: 4 classes x 30 training clips


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: what "nothing changed" compares."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def fails_in_one_line(capsys, argv: list[str], *needles: str, watch: Path) -> str:
    """Run the CLI: exit code 2, exactly one stderr line holding every needle, `watch` unchanged."""
    before = tree(watch)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert tree(watch) == before
    return lines[0]


def tone_train_args(tone_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--model", "bcresnet1", "--dataset", "folders", "--data_root",
            str(tone_root), "--run_dir", str(run_dir), "--quiet", "--set",
            "train.warmup_epochs=0", "augment.noise_prob=0", *extra]


@pytest.fixture(scope="module")
def trained_run(tone_root, tmp_path_factory) -> Path:
    """A finished 2-epoch run whose batch is larger than its training split (defect 1)."""
    run = tmp_path_factory.mktemp("faults") / "run"
    assert main(tone_train_args(tone_root, run, "--epochs", "2", "--batch_size",
                                str(TRAIN_SPLIT_CLIPS + 80))) == 0
    return run


# --- defect 1: a training split smaller than one batch trains on the partial batch --------------

def test_a_split_smaller_than_a_batch_trains_on_the_partial_batch(trained_run):
    metrics = RunDir(trained_run).read_metrics()
    assert [row["epoch"] for row in metrics["history"]] == [0, 1]
    assert all(math.isfinite(row["train_loss"]) for row in metrics["history"])
    assert RunDir(trained_run).has_checkpoint("best")


# --- defect 6 and --seeds 0: counts are checked before anything is written ----------------------

@pytest.mark.parametrize("flags, needle", [
    (["--epochs", "0"], "train.epochs: expected >= 1, got 0"),
    (["--epochs", "-3"], "train.epochs: expected >= 1, got -3"),
    (["--seeds", "0"], "train.seeds: expected >= 1, got 0"),
    (["--batch_size", "0"], "train.batch_size: expected >= 1, got 0"),
    (["--set", "train.warmup_epochs=-1"], "train.warmup_epochs: expected >= 0, got -1"),
])
def test_train_refuses_bad_counts_up_front(tone_root, tmp_path, capsys, flags, needle):
    fails_in_one_line(capsys, tone_train_args(tone_root, tmp_path / "new", *flags), needle,
                      watch=tmp_path)
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("argv, needle", [
    (["quantize", "qat", "RUN", "--epochs", "0"], "--epochs: expected >= 1, got 0"),
    (["quantize", "qat", "RUN", "--epochs", "-2"], "--epochs: expected >= 1, got -2"),
    (["quantize", "qat", "RUN", "--calib_clips", "0"], "--calib_clips: expected >= 1, got 0"),
    (["quantize", "qat", "RUN", "--method", "calibrate", "--calib_clips", "-5"],
     "--calib_clips: expected >= 1, got -5"),
    (["compress", "svd", "RUN", "--target_macs_ratio", "0.5", "--epochs", "-1"],
     "--epochs: expected >= 0, got -1"),
    (["compress", "svd", "RUN", "--target_macs_ratio", "0.5", "--calib_clips", "0"],
     "--calib_clips: expected >= 1, got 0"),
    (["export", "RUN", "--int8", "--calib_clips", "0"], "--calib_clips: expected >= 1, got 0"),
])
def test_derived_runs_refuse_bad_counts_up_front(trained_run, capsys, argv, needle):
    argv = [str(trained_run) if a == "RUN" else a for a in argv]
    fails_in_one_line(capsys, argv, needle, watch=trained_run)
    assert not (trained_run / "quant").exists() and not (trained_run / "compress").exists()


# --- defect 10: an empty split is named, with why --------------------------------------------

def test_an_empty_split_is_named_with_why(tone_root, tmp_path, capsys):
    root = tmp_path / "data"
    for split in ("training", "testing"):
        shutil.copytree(tone_root / split, root / split)
    for name in ("low", "mid", "high", "sweep"):  # every validation clip undecodable
        (root / "validation" / name).mkdir(parents=True)
        (root / "validation" / name / "bad.wav").write_bytes(b"not audio at all")
    with pytest.warns(UserWarning, match="skipped 4 unreadable"):
        fails_in_one_line(capsys, tone_train_args(root, tmp_path / "new", "--epochs", "1"),
                          "the valid split has no clips", "skipped as unreadable", watch=tmp_path)
    assert not (tmp_path / "new").exists()
