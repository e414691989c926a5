"""The run directory: the name of every file a job writes, and reading / writing them.

    config.yaml, features.yaml, classes.txt     the setup (`write_setup`)
    checkpoints/{last,best}.pt                  atomic checkpoints
    checkpoints/{last,best}.prev.pt             the ones they replaced: `--resume`'s fallback
    metrics.json, tb/                           results (written last: a finished run) and logs
    confusion_<split>[_<which>].png             confusion matrices
    genotype.yaml, arch_history.csv             a search: the derived net and its per-epoch log
    retrain/                                    a search's net, trained (run_exp.py --train)
    seed<N>/                                    one seed of a multi-seed training
    quant/ptq.json                              accuracy per rounding scheme and bit width
    quant/<method>_<tag>/                       a quantized net
    compress/svd_<ratio>/, with svd.json        an SVD-compressed net
    export/model_{fp32,int8}.onnx, export.json  ONNX exports and their parity checks
    *.latency.json                              next to each benchmarked ONNX file

Every sub-run (retrain/, seed<N>/, quant/..., compress/...) is a run directory itself.
A job writing a run holds an exclusive lock on its .lock file (`RunDir.locked`); in a job of
several processes (nas_kws.distributed) rank 0 writes the run and holds the lock.
"""
from __future__ import annotations

import contextlib
import fcntl
import io
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from nas_kws import distributed
from nas_kws.config import ExperimentConfig, from_dict
from nas_kws.errors import NasKwsError
from nas_kws.features import FeatureConfig
from nas_kws.fileio import atomic_write, read_json, read_yaml, write_json, write_text, write_yaml

LOCK_NAME = ".lock"
_HELD: dict[Path, int] = {}  # lock file -> its descriptor, for every run this process writes


class RunLockedError(NasKwsError):
    """Another process is writing the run directory."""


class CorruptCheckpointError(NasKwsError):
    """A checkpoint file that exists but cannot be read (truncated, empty, garbage)."""


def _read_checkpoint(path: Path) -> dict[str, Any]:
    """The state in `path`; any failure to unpickle a file that exists means its bytes are bad
    (torch raises RuntimeError, EOFError, OSError or UnpicklingError depending on where)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - see the docstring
        raise CorruptCheckpointError(f"{path}: corrupt checkpoint, cannot be read "
                                     f"({type(err).__name__}: {err})") from None
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path}: corrupt checkpoint, holds a "
                                     f"{type(state).__name__}, not a state mapping")
    return state


def latency_path(model: str | os.PathLike) -> Path:
    """Where `nas-kws bench latency` writes a model file's latency: next to it, named after the
    whole file name, so model_int8.onnx and model_int8.tflite each have their own."""
    model = Path(model)
    return model.with_name(f"{model.name}.latency.json")


def _file(*parts: str) -> property:
    """A read-only attribute: the path `parts` inside the folder `self.path`."""
    def path(self: ExportDir | RunDir) -> Path:
        return self.path.joinpath(*parts)
    return property(path, doc=f"{'/'.join(parts)} in the folder")


class ExportDir:
    """A folder of ONNX exports (a run's export/, or `nas-kws export --out`)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def onnx_path(self, kind: str) -> Path:
        """model_<kind>.onnx, kind fp32 or int8."""
        return self.path / f"model_{kind}.onnx"

    def model_path(self, kind: str) -> Path:
        """The exported file of `kind`: fp32 / int8 ONNX, or tflite (model_int8.tflite)."""
        return self.path / "model_int8.tflite" if kind == "tflite" else self.onnx_path(kind)

    summary_path = _file("export.json")


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    # --- the files -------------------------------------------------------------------------

    config_path = _file("config.yaml")
    features_path = _file("features.yaml")
    classes_path = _file("classes.txt")
    metrics_path = _file("metrics.json")
    tb_dir = _file("tb")
    genotype_path = _file("genotype.yaml")
    history_path = _file("arch_history.csv")
    ptq_path = _file("quant", "ptq.json")
    svd_summary_path = _file("svd.json")

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def confusion_path(self, split: str, which: str | None = None) -> Path:
        return self.path / f"confusion_{split}{f'_{which}' if which else ''}.png"

    @property
    def export(self) -> ExportDir:
        return ExportDir(self.path / "export")

    # --- the sub-runs ------------------------------------------------------------------------

    @property
    def retrain(self) -> RunDir:
        return RunDir(self.path / "retrain")

    def seed_run(self, seed: int) -> RunDir:
        return RunDir(self.path / f"seed{seed}")

    def quant_run(self, method: str, tag: str) -> RunDir:
        return RunDir(self.path / "quant" / f"{method}_{tag}")

    def quant_runs(self) -> list[RunDir]:
        """Every quant/<method>_<tag>/, in name order."""
        folder = self.path / "quant"
        if not folder.is_dir():
            return []
        return [RunDir(p) for p in sorted(folder.iterdir()) if p.is_dir()]

    def svd_run(self, target_macs_ratio: float) -> RunDir:
        return RunDir(self.path / "compress" / f"svd_{target_macs_ratio:g}")

    # --- reading and writing -----------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """metrics.json is written last, so a run that has one ran to its end."""
        return self.metrics_path.is_file()

    @property
    def started(self) -> bool:
        """A job has written this run's setup (or more): a fresh job must not write over it."""
        return self.config_path.is_file() or self.can_resume or self.finished

    def make_fresh(self, overwrite: bool, folder_flag: str = "--run_dir") -> None:
        """Before a fresh job writes here (lock held): refuse a started or finished run unless
        `overwrite`, which first removes what that run wrote."""
        if not self.started or not distributed.is_main():
            return
        if not overwrite:
            state = "finished" if self.finished else "started"
            raise FileExistsError(f"{self.path} already holds a {state} run; use --resume to "
                                  f"continue it, --overwrite to replace it, or another "
                                  f"{folder_flag}")
        self.clear()

    def clear(self) -> None:
        """Remove everything a run wrote (`--overwrite`), keeping the folder and its lock."""
        for child in self.path.iterdir():
            if child.is_dir():
                shutil.rmtree(child)
            elif child.name != LOCK_NAME:
                child.unlink()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive lock on the run while writing it, so a second writer gets an error
        rather than mixing its checkpoints into this run's. The OS drops it when the process
        dies (resume after kill -9 works); nested holds in one process are free. A folder made
        just for the lock is removed again when the job fails before writing anything. Only rank
        0 of a job of several processes writes, so only it takes the lock."""
        lock = (self.path / LOCK_NAME).resolve()  # one key per file, however it is spelt
        if lock in _HELD or not distributed.is_main():
            yield
            return
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.path}: not a folder, so not a run directory")
        made = not self.path.exists()
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"{self.path}: another process (pid {holder}) is writing this "
                                 "run; wait for it to end or use another run directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        _HELD[lock] = fd
        try:
            yield
        except BaseException:
            if made and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
                shutil.rmtree(self.path)
            raise
        finally:
            del _HELD[lock]
            os.close(fd)

    def has_checkpoint(self, name: str = "last") -> bool:
        return self.checkpoint_path(name).is_file()

    @property
    def can_resume(self) -> bool:
        """A `last` checkpoint, or the one before it, is there to continue from."""
        return self.has_checkpoint("last") or self.has_checkpoint("last.prev")

    def keep_if_resumable(self) -> bool:
        """True when the run has a checkpoint to continue from. A run folder without one stopped
        before its first epoch ended and holds nothing worth keeping, so it is removed."""
        if self.can_resume:
            return True
        if self.path.exists():
            shutil.rmtree(self.path)
        return False

    def write_setup(self, config: dict[str, Any], features: FeatureConfig,
                    classes: list[str]) -> None:
        write_yaml(self.config_path, config)
        write_yaml(self.features_path, features.to_dict())
        write_text(self.classes_path, "\n".join(classes) + "\n")

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.config_path}: not a run directory (no config.yaml)")
        return read_yaml(self.config_path)

    def experiment(self) -> ExperimentConfig:
        """The validated config of a training run (a search run holds a search config)."""
        return from_dict(ExperimentConfig, self.read_config(), str(self.config_path))

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        """Atomic; the checkpoint it replaces stays as `<name>.prev.pt`. Serialized in memory
        first, so a full disk is an OSError (ENOSPC), not torch's RuntimeError."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        return atomic_write(self.checkpoint_path(name),
                            lambda tmp: tmp.write_bytes(buffer.getbuffer()),
                            keep=self.checkpoint_path(f"{name}.prev"))

    def load_checkpoint(self, name: str = "last") -> dict[str, Any]:
        """A missing or unreadable checkpoint is an error naming the file."""
        path = self.checkpoint_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no checkpoint '{name}' in run {self.path}")
        return _read_checkpoint(path)

    def resume_checkpoint(self) -> dict[str, Any]:
        """The state to continue from: `last`, or the one saved before it (a warning says so)
        when `last` is corrupt or missing (a job killed between the two renames of a save)."""
        last, prev = self.checkpoint_path("last"), self.checkpoint_path("last.prev")
        try:
            return self.load_checkpoint("last")
        except (CorruptCheckpointError, FileNotFoundError) as err:
            if not prev.is_file():
                if isinstance(err, FileNotFoundError):
                    raise FileNotFoundError(f"{last}: nothing to resume") from None
                raise
            reason = err
        state = _read_checkpoint(prev)
        warnings.warn(f"{reason}; resuming from the checkpoint before it, {prev} "
                      f"(epoch {state.get('epoch')})", stacklevel=2)
        return state

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json; {} for a run that has not finished."""
        return read_json(self.metrics_path) if self.finished else {}

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)
