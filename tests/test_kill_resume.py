"""kill -9 during any long job, and reruns into finished folders: a resumed job ends exactly where
an uninterrupted one does, and nothing finished is written over without `--overwrite`."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from test_faults import TRAIN_SPLIT_CLIPS, fails_in_one_line, tone_train_args, tree

from nas_kws.cli import main
from nas_kws.data import synth
from nas_kws.device import set_threads
from nas_kws.runs import RunDir


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (torchrun starts its workers in sessions of their own, so a
    process group does not reach them)."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = status.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    found, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        found += below
        todo += below
    return found


def run_killed(argv: list[str], ready, what: str,
               launcher: tuple[str, ...] = (sys.executable, "-m", "nas_kws.cli")) -> None:
    """Run `launcher` + `argv` (the `nas-kws` command by default) in a child and SIGKILL it and
    every process under it (workers, torchrun ranks) once `ready()` is true."""
    child = subprocess.Popen([*launcher, *argv], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not ready() and child.poll() is None:
            assert time.time() < deadline, f"no {what} within 2 minutes"
            time.sleep(0.02)
    finally:
        for pid in [child.pid, *descendants(child.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        child.wait()
    assert child.returncode == -signal.SIGKILL, f"the child ended before its {what}"


def run_killed_after_first_checkpoint(argv: list[str], run: RunDir,
                                      launcher: tuple[str, ...] = (sys.executable, "-m",
                                                                   "nas_kws.cli")) -> None:
    run_killed(argv, lambda: run.has_checkpoint("last"), "checkpoint", launcher)
    assert not run.finished  # killed mid-run


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def float_run(tone_root, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("kill") / "run"
    assert main(tone_train_args(tone_root, run, "--epochs", "2")) == 0
    return run


def test_train_killed_with_sigkill_resumes_to_identical_weights(tone_root, tmp_path):
    set_threads()  # the command line's thread count, as in the killed child
    flags = ["--epochs", "4", "--batch_size", str(TRAIN_SPLIT_CLIPS)]
    assert main(tone_train_args(tone_root, tmp_path / "straight", *flags)) == 0
    killed = RunDir(tmp_path / "killed")
    run_killed_after_first_checkpoint(tone_train_args(tone_root, killed.path, *flags), killed)
    assert main(["train", "--resume", str(killed.path), "--quiet"]) == 0
    assert same_tensors(RunDir(tmp_path / "straight").load_checkpoint("last")["model"],
                        killed.load_checkpoint("last")["model"])


def test_search_killed_with_sigkill_resumes_to_identical_supernet(tone_root, tmp_path):
    from test_nas import TINY_SPACE

    set_threads()
    space = tmp_path / "tiny.yaml"
    space.write_text(yaml.safe_dump(TINY_SPACE))
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"dataset": "folders", "root": str(tone_root)}, "augment": {"noise_prob": 0.0},
        "train": {"batch_size": 20, "eval_batch_size": 100, "max_steps_per_epoch": 4},
        "search": {"search_space": str(space), "warmup_epochs": 1, "n_epochs": 3,
                   "grad_update_arch_param_every": 2, "flops_ref_value": 3e5,
                   "grad_reg_loss_type": "mul#log"}}))
    args = ["search", "--config", str(config), "--quiet", "--path"]
    assert main([*args, str(tmp_path / "straight")]) == 0
    killed = RunDir(tmp_path / "killed")
    run_killed_after_first_checkpoint([*args, str(killed.path)], killed)
    assert main(["search", "--resume", "--path", str(killed.path), "--quiet"]) == 0
    assert same_tensors(RunDir(tmp_path / "straight").load_checkpoint("last")["supernet"],
                        killed.load_checkpoint("last")["supernet"])
    assert (tmp_path / "straight" / "genotype.yaml").read_text() == \
        killed.genotype_path.read_text()


def test_qat_killed_with_sigkill_resumes_to_identical_weights(float_run, tmp_path):
    set_threads()
    # the fused fake quantization (what runs of 60 steps and more take) in the killed process too
    qat = ["quantize", "qat", str(float_run), "--weight_bits", "4", "--epochs", "3",
           "--calib_clips", "40", "--fake_quant", "fused", "--quiet", "--out"]
    assert main([*qat, str(tmp_path / "straight")]) == 0
    killed = RunDir(tmp_path / "killed")
    run_killed_after_first_checkpoint([*qat, str(killed.path)], killed)
    assert main(["quantize", "qat", str(float_run), "--weight_bits", "4", "--calib_clips", "40",
                 "--fake_quant", "fused", "--quiet", "--out", str(killed.path), "--resume"]) == 0
    # Exact up to float rounding: a Brevitas twin rebuilt from a state dict differs from the one
    # in memory in the last bits of its quantizer scales (a float net with the same Adam
    # schedule resumes bit-identically), so the weights agree to 1e-4, not bit for bit.
    a, b = (RunDir(tmp_path / name).load_checkpoint("last") for name in ("straight", "killed"))
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.allclose(a["model"][k].float(), b["model"][k].float(), atol=1e-4)
               for k in a["model"])
    assert [h["epoch"] for h in b["history"]] == [0, 1, 2]
    assert [h["train_loss"] for h in b["history"]] == pytest.approx(
        [h["train_loss"] for h in a["history"]], abs=1e-4)


def test_synthesis_killed_with_sigkill_restarts_to_identical_files(tmp_path):
    straight = synth.generate_synth(tmp_path / "straight", seed=0, size="tiny", progress=False)
    killed = tmp_path / "killed"
    run_killed(["data", "synth", "--size", "tiny", "--out", str(killed)],
               lambda: len(list(killed.glob("*/*.wav"))) >= 20, "clips")
    assert not (killed / synth.COMPLETE_MARKER).exists()
    synth.generate_synth(killed, seed=0, size="tiny", progress=False)
    assert tree(killed) == tree(straight)


def test_a_finished_derived_run_is_kept_unless_overwrite(float_run, tmp_path, capsys):
    out = tmp_path / "calibrated"
    calibrate = ["quantize", "qat", str(float_run), "--method", "calibrate", "--calib_clips",
                 "40", "--epochs", "0", "--out", str(out)]   # calibration ignores --epochs
    assert main(calibrate) == 0
    fails_in_one_line(capsys, calibrate, f"{out} already holds a finished run; use --resume to "
                      "continue it, --overwrite to replace it, or another --out", watch=tmp_path)
    fails_in_one_line(capsys, [*calibrate, "--resume"], "--resume continues QAT fine-tuning",
                      watch=tmp_path)
    svd = ["compress", "svd", str(float_run), "--target_macs_ratio", "0.7", "--epochs", "0",
           "--calib_clips", "40", "--out", str(tmp_path / "svd")]
    assert main(svd) == 0
    fails_in_one_line(capsys, svd, "already holds a finished run", watch=tmp_path)
    fails_in_one_line(capsys, [*svd, "--resume"], "holds no interrupted fine-tuning",
                      watch=tmp_path)
    (out / "stale.txt").write_text("x")
    assert main([*calibrate, "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and RunDir(out).finished
