"""Bad input and faults (issue 12): each gets one line on stderr naming what is wrong, exit code
2, and leaves every existing file as it was."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import yaml

from nas_kws.cli import main
from nas_kws.config import DataConfig, ExperimentConfig, load_config
from nas_kws.data.loader import open_dataset, open_index
from nas_kws.data.store import build_store
from nas_kws.device import seed_everything, set_threads
from nas_kws.fileio import partial_dir
from nas_kws.models import create_model
from nas_kws.runs import RunDir
from nas_kws.train import fit, train_experiment

SPACES = Path(__file__).resolve().parent.parent / "search_spaces"
TRAIN_SPLIT_CLIPS = 4 * 30  # tone_data: 4 classes x 30 training clips


def tree(root: Path) -> dict[str, str]:
    """Every file under `root` with a hash of its bytes: what "nothing changed" compares (a run's
    .lock holds the pid of its last writer)."""
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != ".lock"}


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


# --- defect 3: undecodable audio cannot silently empty a class ----------------------------------

def test_a_class_whose_training_clips_are_all_undecodable_is_an_error(tone_root, tmp_path,
                                                                      capsys):
    root = Path(shutil.copytree(tone_root, tmp_path / "data"))
    wavs = sorted((root / "training" / "low").glob("*.wav"))
    for wav in wavs:
        wav.write_bytes(b"RIFF garbage")
    for attempt in ("built", "cached"):  # the cached store warns again and fails again
        with pytest.warns(UserWarning, match=f"skipped {len(wavs)} unreadable"):
            fails_in_one_line(capsys, tone_train_args(root, tmp_path / "run", "--epochs", "1"),
                              f"{root}: class(es) ['low'] have no decodable training clip",
                              watch=tmp_path / "data")
        assert not (tmp_path / "run").exists(), attempt


def test_the_data_table_counts_what_was_stored(tone_root, tmp_path, capsys):
    root = Path(shutil.copytree(tone_root, tmp_path / "data"))
    next((root / "training" / "low").glob("*.wav")).write_bytes(b"not audio")
    with pytest.warns(UserWarning, match="skipped 1 "):
        assert main(["data", "folders", "--root", str(root), "--workers", "0"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()}
    assert rows["class"] == ["train", "valid", "test"]
    assert rows["low"] == ["29", "10", "10"] and rows["total"] == ["119", "40", "40"]


def test_a_float_wav_holding_nan_or_inf_is_skipped_and_counted(tone_root, tmp_path):
    root = Path(shutil.copytree(tone_root, tmp_path / "data"))
    clip = np.zeros(16000, dtype=np.float32)
    clip[100:103] = [np.nan, np.inf, -np.inf]
    sf.write(root / "training" / "low" / "float.wav", clip, 16000, subtype="FLOAT")
    index = open_index(DataConfig(dataset="folders", root=str(root)))
    with pytest.warns(UserWarning, match=r"skipped 1 .*training/low/float.wav \(3 NaN or "
                                         r"infinite sample\(s\)\)"):
        store = build_store(index, cache_root=tmp_path / "stores", progress=False, workers=1)
    assert len(store.split("train").labels) == TRAIN_SPLIT_CLIPS


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


# --- defect 4: corrupt checkpoints ---------------------------------------------------------------

CORRUPTIONS = {
    "truncated": lambda data: data[:len(data) // 2],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x80\x04garbage, not a checkpoint" * 10,
}


def corrupt(path: Path, how: str) -> None:
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))


@pytest.fixture
def run_copy(trained_run, tmp_path) -> Path:
    return Path(shutil.copytree(trained_run, tmp_path / "run"))


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
@pytest.mark.parametrize("which, argv", [
    ("best", ["eval", "RUN", "--split", "valid"]),
    ("last", ["eval", "RUN", "--split", "valid", "--which", "last"]),
    ("best", ["quantize", "ptq", "RUN", "--bits", "8"]),
])
def test_a_corrupt_checkpoint_is_one_line_naming_the_file(run_copy, capsys, how, which, argv):
    path = RunDir(run_copy).checkpoint_path(which)
    corrupt(path, how)
    fails_in_one_line(capsys, [str(run_copy) if a == "RUN" else a for a in argv],
                      f"{path}: corrupt checkpoint", watch=run_copy)


def one_step_config(tone_root: Path, epochs: int) -> ExperimentConfig:
    """Tone data in one batch a epoch: a few seconds an epoch."""
    return load_config(ExperimentConfig, None, {
        "model": "bcresnet1", "data.dataset": "folders", "data.root": str(tone_root),
        "train.epochs": epochs, "train.batch_size": TRAIN_SPLIT_CLIPS, "train.warmup_epochs": 0,
        "augment.noise_prob": 0.0})


def stopped_run(cfg: ExperimentConfig, run_dir: Path, after_epoch: int) -> RunDir:
    store = open_dataset(cfg.data, progress=False)
    seed_everything(cfg.train.seed)
    model = create_model(cfg.model, num_classes=len(store.classes))
    fit(model, cfg, run_dir, store=store, progress=False, stop_after_epoch=after_epoch)
    return RunDir(run_dir)


def test_resume_falls_back_to_the_previous_checkpoint_when_last_is_corrupt(tone_root, tmp_path,
                                                                            capsys):
    set_threads()  # as the command line below does: the thread count changes float sums
    cfg = one_step_config(tone_root, epochs=3)
    train_experiment(cfg, tmp_path / "straight", progress=False)
    straight = RunDir(tmp_path / "straight")
    assert straight.load_checkpoint("last.prev")["epoch"] == 1  # every save keeps the one before
    run = stopped_run(cfg, tmp_path / "stopped", after_epoch=1)
    corrupt(run.checkpoint_path("last"), "truncated")
    with pytest.warns(UserWarning, match=r"last.pt: corrupt checkpoint.*; resuming from the "
                                         r"checkpoint before it, .*last.prev.pt \(epoch 0\)"):
        assert main(["train", "--resume", str(run.path), "--quiet"]) == 0
    a, b = straight.load_checkpoint("last")["model"], run.load_checkpoint("last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)  # as if nothing had happened
    assert run.read_metrics()["test_last_acc"] == straight.read_metrics()["test_last_acc"]


def test_resume_without_a_previous_checkpoint_names_the_corrupt_file(tone_root, tmp_path, capsys):
    run = stopped_run(one_step_config(tone_root, epochs=3), tmp_path / "run", after_epoch=0)
    assert not run.has_checkpoint("last.prev")
    corrupt(run.checkpoint_path("last"), "garbage")
    fails_in_one_line(capsys, ["train", "--resume", str(run.path), "--quiet"],
                      f"{run.checkpoint_path('last')}: corrupt checkpoint", watch=run.path)


# --- defect 5: bad config text and non-finite losses ----------------------------------------

BAD_YAML = {"unclosed": "train:\n  lr: [0.1\n", "indent": "train:\n  lr: 0.1\n   epochs: 2\n",
            "tab": "train:\n\tlr: 0.1\n"}


@pytest.mark.parametrize("command", ["train", "search"])
@pytest.mark.parametrize("text", sorted(BAD_YAML))
def test_a_config_with_a_yaml_syntax_error_is_one_line_naming_the_file(tmp_path, capsys, command,
                                                                      text):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD_YAML[text])
    where = ["--model", "bcresnet1", "--run_dir"] if command == "train" else ["--path"]
    fails_in_one_line(capsys, [command, "--config", str(bad), *where, str(tmp_path / "new")],
                      f"{bad}: not valid YAML (line ", watch=tmp_path)
    assert not (tmp_path / "new").exists()


def test_a_set_value_with_a_yaml_syntax_error_is_one_line(tmp_path, capsys):
    fails_in_one_line(capsys, ["train", "--model", "bcresnet1", "--run_dir", str(tmp_path / "new"),
                               "--set", "train.lr=[0.1"],
                      "train.lr: '[0.1' is not a valid YAML value (line 1", watch=tmp_path)


@pytest.mark.parametrize("key, value", [("n_mels", 0), ("hop_length", 0), ("win_length", -1),
                                        ("n_fft", "many")])
def test_a_search_space_with_a_bad_feature_size_is_one_line(tmp_path, capsys, key, value):
    space = yaml.safe_load((SPACES / "bcresnet.yaml").read_text())
    space["features"][key] = value
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    fails_in_one_line(capsys, ["search", "--search_space", str(path), "--path",
                               str(tmp_path / "new")],
                      f"{path}: features.{key}: expected an integer >= 1, got {value!r}",
                      watch=tmp_path)
    assert not (tmp_path / "new").exists()


def test_a_non_finite_loss_in_the_first_epoch_points_at_no_checkpoint(tone_root, tmp_path,
                                                                      capsys):
    run = tmp_path / "run"
    line = fails_in_one_line(capsys, tone_train_args(tone_root, run, "--epochs", "2",
                                                     "--batch_size", "20", "--lr", "1e30"),
                             "epoch 0 step ", "; stopped before the update; last good checkpoint:"
                             " none yet, the run stopped in its first epoch", watch=tone_root)
    assert "last.pt" not in line and not RunDir(run).has_checkpoint("last")


def test_a_full_disk_is_one_line_and_keeps_the_last_good_checkpoint(tone_root, tmp_path, capsys,
                                                                    monkeypatch):
    run = stopped_run(one_step_config(tone_root, epochs=3), tmp_path / "run", after_epoch=0)

    def disk_full(self: Path, data) -> int:
        self.open("wb").write(bytes(data)[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", disk_full)
    fails_in_one_line(capsys, ["train", "--resume", str(run.path), "--quiet"],
                      f"{run.path / 'checkpoints'}/",
                      ".pt: disk full (no space left on the device); the file was not changed",
                      watch=run.path / "checkpoints")
    monkeypatch.undo()
    assert run.load_checkpoint("last")["epoch"] == 0


# --- defect 8: files written atomically honour the umask ----------------------------------------

@pytest.fixture(params=[0o022, 0o002, 0o077])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_atomic_files_and_partial_folders_honour_the_umask(tmp_path, umask):
    run = RunDir(tmp_path / "run")
    run.write_metrics({"a": 1})
    run.save_checkpoint("last", {"model": {}})
    run.save_checkpoint("last", {"model": {}})  # the kept one, too
    for path in (run.metrics_path, run.checkpoint_path("last"), run.checkpoint_path("last.prev")):
        assert mode(path) == 0o666 & ~umask, path
    assert mode(partial_dir(tmp_path / "store")) == 0o777 & ~umask


def test_a_waveform_store_is_readable_as_the_umask_allows(tone_root, tmp_path, umask):
    index = open_index(DataConfig(dataset="folders", root=str(tone_root)))
    store = build_store(index, cache_root=tmp_path / "stores", progress=False, workers=1)
    assert mode(store.root) == 0o777 & ~umask
    assert {mode(p) for p in store.root.iterdir()} == {0o666 & ~umask}


# --- defect 7: --resume refuses flags that would not apply -------------------------------------

@pytest.mark.parametrize("flags, named", [
    (["--lr", "5"], "--lr"),
    (["--epochs", "8", "--lr", "5"], "--lr"),
    (["--model", "dscnn_s", "--batch_size", "4"], "--model, --batch_size"),
    (["--set", "train.weight_decay=0"], "--set"),
    (["--config", "x.yaml"], "--config"),
    (["--overwrite"], "--overwrite"),
])
def test_resume_refuses_flags_other_than_epochs_by_name(run_copy, capsys, flags, named):
    fails_in_one_line(capsys, ["train", "--resume", str(run_copy), *flags],
                      f"refusing {named} (only --epochs may change)", watch=run_copy)


def test_resume_refuses_new_epochs_for_a_finished_run(run_copy, capsys):
    fails_in_one_line(capsys, ["train", "--resume", str(run_copy), "--epochs", "8"],
                      f"--epochs 8: {run_copy} has finished", watch=run_copy)


def test_resume_applies_new_epochs_to_an_interrupted_run(tone_root, tmp_path, capsys):
    run = stopped_run(one_step_config(tone_root, epochs=3), tmp_path / "run", after_epoch=0)
    fails_in_one_line(capsys, ["train", "--resume", str(run.path), "--epochs", "0"],
                      "--epochs: expected >= 1, got 0", watch=run.path)
    assert main(["train", "--resume", str(run.path), "--epochs", "2", "--quiet"]) == 0
    assert run.experiment().train.epochs == 2  # written back for later resumes
    assert [row["epoch"] for row in run.read_metrics()["history"]] == [0, 1]


# --- defect 2: run directories are locked, and a fresh run does not write over an old one -----

HOLDER = '''import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
'''


@contextlib.contextmanager
def locked_by_another_process(run: Path) -> Iterator[int]:
    """A child process holding `run`'s lock (its pid), killed with SIGKILL at the end."""
    run.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(run / ".lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_second_writer_is_refused_and_a_killed_holder_frees_the_run(tone_root, run_copy,
                                                                     capsys):
    with locked_by_another_process(run_copy) as pid:
        busy = f"{run_copy}: another process (pid {pid}) is writing this run"
        fails_in_one_line(capsys, ["train", "--resume", str(run_copy)], busy, watch=run_copy)
        fails_in_one_line(capsys, tone_train_args(tone_root, run_copy, "--overwrite"), busy,
                          watch=run_copy)
    with RunDir(run_copy).locked():  # kill -9 of the holder: the OS dropped its lock
        pass


def test_a_second_search_into_one_path_is_refused(tmp_path, capsys):
    with locked_by_another_process(tmp_path / "search") as pid:
        fails_in_one_line(capsys, ["search", "--path", str(tmp_path / "search")],
                          f"another process (pid {pid}) is writing this run", watch=tmp_path)


def test_a_file_as_run_directory_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    fails_in_one_line(capsys, ["search", "--path", str(tmp_path / "file")],
                      f"{tmp_path / 'file'}: not a folder", watch=tmp_path)


@pytest.mark.parametrize("after_epoch", [None, 0])
def test_a_fresh_run_refuses_a_folder_holding_a_run(tone_root, tmp_path, capsys, after_epoch):
    cfg = one_step_config(tone_root, epochs=2)
    if after_epoch is None:
        train_experiment(cfg, tmp_path / "run", progress=False)
    else:
        stopped_run(cfg, tmp_path / "run", after_epoch)
    state = "finished" if after_epoch is None else "started"
    fails_in_one_line(capsys, tone_train_args(tone_root, tmp_path / "run", "--epochs", "1"),
                      f"{tmp_path / 'run'} already holds a {state} run; use --resume to continue "
                      "it, --overwrite to replace it", watch=tmp_path)


def test_overwrite_replaces_the_old_run(tone_root, run_copy):
    stale = run_copy / "quant" / "qat_w8a8" / "metrics.json"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert main(tone_train_args(tone_root, run_copy, "--epochs", "1", "--batch_size",
                                str(TRAIN_SPLIT_CLIPS), "--overwrite")) == 0
    assert not stale.exists() and not RunDir(run_copy).has_checkpoint("last.prev")
    assert len(RunDir(run_copy).read_metrics()["history"]) == 1


def test_a_multi_seed_run_is_marked_started_and_resumes(tone_root, tmp_path, capsys):
    run = tmp_path / "run"
    args = tone_train_args(tone_root, run, "--epochs", "1", "--seeds", "2", "--batch_size",
                           str(TRAIN_SPLIT_CLIPS))
    assert main(args) == 0
    assert RunDir(run).experiment().train.seeds == 2
    fails_in_one_line(capsys, args, "already holds a finished run", watch=tmp_path)
    assert main(["train", "--resume", str(run), "--quiet"]) == 0
