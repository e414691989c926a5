"""Training, fine-tuning and the search in several processes (issue 11), with real torchrun and
gloo on the tone set: rank 0 alone writes, replicas stay identical, two processes equal one on
the same global batch where the semantics promise it, and a killed job resumes exactly."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_kill_resume import run_killed_after_first_checkpoint

from nas_kws.cli import main
from nas_kws.config import AugmentConfig, to_dict
from nas_kws.data.augment import Augmenter, SpecAugment
from nas_kws.data.loader import BatchLoader
from nas_kws.runs import RunDir

HERE = Path(__file__).resolve().parent
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
            "2"]
# 4 epochs of 1 step of 20 clips (10 per process); the replicas are compared after every epoch
TRAIN_FLAGS = ["--model", "bcresnet1", "--dataset", "folders", "--quiet", "--epochs", "4",
               "--batch_size", "20", "--set", "train.warmup_epochs=0",
               "train.max_steps_per_epoch=1", "augment.noise_prob=0"]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def events_files(run: RunDir) -> list[Path]:
    return sorted(run.tb_dir.glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def two_process_run(tone_root, tmp_path_factory) -> RunDir:
    """A finished training in 2 processes, started by `nas-kws train --nproc 2`."""
    run = RunDir(tmp_path_factory.mktemp("ddp") / "run")
    assert main(["train", *TRAIN_FLAGS, "--data_root", str(tone_root), "--run_dir",
                 str(run.path), "--nproc", "2"]) == 0
    return run


# --- without processes: what makes two processes see one process's batch ---------------------

def test_shards_of_a_batch_are_the_one_process_batch_and_augment_alike():
    audio = np.arange(30 * 8, dtype=np.int16).reshape(30, 8)
    labels = np.arange(30) % 3
    whole = BatchLoader(audio, labels, 10, shuffle=True, seed=4)
    shards = [BatchLoader(audio, labels, 10, shuffle=True, seed=4, shard=(r, 2)) for r in (0, 1)]
    for (waves, y), (w0, y0), (w1, y1) in zip(whole, *shards):
        assert torch.equal(torch.cat([w0, w1]), waves) and torch.equal(torch.cat([y0, y1]), y)

    cfg = AugmentConfig(shift_ms=5, noise_prob=0.7, noise_max=0.2, gain_db=6)
    augment = Augmenter(cfg, torch.randn(3, 1600), 16000, silence_index=2)
    masks = SpecAugment(freq_masks=2, freq_width=4, time_masks=2, time_width=6)
    waves, y = torch.randn(10, 1600), torch.arange(10) % 3
    g = torch.Generator().manual_seed(1)
    one = masks(augment(waves, y, g)[:, None, None, :].expand(10, 1, 5, 1600), g)
    for start in (0, 5):
        g = torch.Generator().manual_seed(1)
        rows = slice(start, start + 5)
        mine = augment(waves[rows], y[rows], g, (start, 10))
        mine = masks(mine[:, None, None, :].expand(5, 1, 5, 1600), g, (start, 10))
        assert torch.equal(mine, one[rows])


def test_a_global_batch_that_does_not_split_evenly_is_refused():
    audio, labels = np.zeros((30, 8), dtype=np.int16), np.zeros(30)
    with pytest.raises(ValueError, match="train.batch_size 15: the global batch .* must split "
                                         "evenly over the 2 processes"):
        BatchLoader(audio, labels, 15, shard=(0, 2), split="train")


def test_commands_without_processes_refuse_torchrun_and_bad_counts(monkeypatch, capsys):
    assert main(["train", "--model", "bcresnet1", "--nproc", "0"]) == 2
    assert "--nproc: expected >= 1, got 0" in capsys.readouterr().err
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["profile", "bcresnet1"]) == 2
    assert "this command runs in one process; torchrun runs train, search and quantize qat" \
        in capsys.readouterr().err


# --- with torchrun ---------------------------------------------------------------------------

def test_the_collectives_on_a_real_gloo_group():
    subprocess.run([*TORCHRUN, str(HERE / "ddp_collectives.py")], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_two_process_training_is_written_by_rank_0_alone(two_process_run):
    run = two_process_run
    metrics = run.read_metrics()
    assert metrics["processes"] == 2 and [r["epoch"] for r in metrics["history"]] == [0, 1, 2, 3]
    assert len(events_files(run)) == 1          # one TensorBoard writer: rank 0's
    last = run.load_checkpoint("last")
    assert len(last["rng_ranks"]) == 2 and last["epoch"] == 3
    assert not any(p.name.endswith(".tmp") for p in run.path.rglob("*"))


def test_a_killed_two_process_training_resumes_to_the_same_weights(tone_root, tmp_path,
                                                                   two_process_run):
    killed = RunDir(tmp_path / "killed")
    run_killed_after_first_checkpoint(["-m", "nas_kws", "train", *TRAIN_FLAGS, "--data_root",
                                       str(tone_root), "--run_dir", str(killed.path)],
                                      killed, tuple(TORCHRUN))
    assert main(["train", "--resume", str(killed.path), "--nproc", "2", "--quiet"]) == 0
    assert same_tensors(two_process_run.load_checkpoint("last")["model"],
                        killed.load_checkpoint("last")["model"])
    assert len(killed.read_metrics()["history"]) == 4


def test_two_processes_fine_tune_like_one_on_the_same_global_batch(tone_root, tmp_path):
    """QAT twins have no batch statistics (batch norm is folded) and this net no dropout, so two
    processes of 10 clips take the same steps as one process of 20 (up to float rounding)."""
    config = tmp_path / "no_dropout.yaml"
    config.write_text("model: bcresnet1\nmodel_kwargs: {dropout: 0.0}\n")
    parent = tmp_path / "parent"
    assert main(["train", *TRAIN_FLAGS, "--config", str(config), "--data_root", str(tone_root),
                 "--run_dir", str(parent), "--epochs", "1"]) == 0
    qat = ["quantize", "qat", str(parent), "--epochs", "2", "--calib_clips", "40", "--lr", "0.05",
           "--quiet", "--set", "train.optimizer=sgd", "train.batch_size=20",
           "train.max_steps_per_epoch=3", "augment.shift_ms=50", "augment.gain_db=3",
           "augment.freq_masks=2", "augment.freq_width=3", "augment.time_masks=1",
           "augment.time_width=5", "--out"]
    assert main([*qat, str(tmp_path / "one")]) == 0
    assert main([*qat, str(tmp_path / "two"), "--nproc", "2"]) == 0
    one, two = (RunDir(tmp_path / n).load_checkpoint("last") for n in ("one", "two"))
    start = RunDir(tmp_path / "one").load_checkpoint("best")  # epoch -1: the calibrated twin
    moved = max((one["model"][k] - start["model"][k]).abs().max() for k in one["model"])
    assert moved > 1e-3
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
    for a, b in zip(one["history"], two["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)


def test_a_two_process_search_derives_a_genotype(tone_root, tmp_path):
    from test_nas import _tiny_search_config

    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(to_dict(_tiny_search_config(tmp_path, tone_root))))
    run = RunDir(tmp_path / "search")
    assert main(["search", "--config", str(config), "--path", str(run.path), "--quiet",
                 "--nproc", "2"]) == 0
    metrics = run.read_metrics()
    assert [r["phase"] for r in metrics["history"]] == ["warmup", "search"]
    assert metrics["history"][-1]["arch_loss"] > 0          # architecture steps ran
    assert yaml.safe_load(run.genotype_path.read_text())["blocks"]
    assert len(run.load_checkpoint("last")["rng_ranks"]) == 2 and len(events_files(run)) == 1
