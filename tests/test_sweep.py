"""`nas-kws sweep` (issue 11): real worker processes on a journal file and on a real PostgreSQL
server started here, a worker killed with SIGKILL mid-trial, the report, and bad input. Each
trial trains BC-ResNet-1 for one short epoch on the tone set."""
from __future__ import annotations

import csv
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from nas_kws.cli import main
from nas_kws.sweep.config import load_sweep
from nas_kws.sweep.pipeline import TrialPipeline
from nas_kws.sweep.storage import journal_path
from nas_kws.sweep.study import make_pruner
from nas_kws.sweep.worker import is_finished

STUDY = "tones"


def write_sweep(folder: Path, tone_root: Path, study: dict | None = None, **sections) -> Path:
    """A sweep of BC-ResNet-1 trainings on the tone set, sampling the learning rate."""
    data = {"study": {"n_trials": 3, "heartbeat_interval": 1, "grace_period": 2,
                      **(study or {})},
            "train": {"model": "bcresnet1",
                      "set": {"data.dataset": "folders", "data.root": str(tone_root),
                              "train.epochs": 1, "train.batch_size": 20,
                              "train.warmup_epochs": 0, "train.max_steps_per_epoch": 2,
                              "augment.noise_prob": 0},
                      "sample": {"train.lr": {"low": 0.01, "high": 0.2, "log": True}}},
            **sections}
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_argv(path: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "nas_kws.cli", "sweep", str(path), "--out", str(out), *extra]


def journal_study(out: Path) -> optuna.Study:
    storage = JournalStorage(JournalFileBackend(str(journal_path(out))))
    return optuna.load_study(study_name=STUDY, storage=storage)


def workers_of(study: optuna.Study) -> set[str]:
    return {t.user_attrs["worker"] for t in study.trials if "worker" in t.user_attrs}


@pytest.fixture(scope="module")
def killed_sweep(tone_root, tmp_path_factory) -> tuple[Path, FrozenTrial, str]:
    """`--workers 2` on one journal file, 3 trials; once a trial's training step has started,
    its worker is killed with SIGKILL. Returns (sweep YAML, the trial killed, the output)."""
    folder = tmp_path_factory.mktemp("sweep")
    path = write_sweep(folder, tone_root)
    out = folder / "out"
    parent = subprocess.Popen(sweep_argv(path, out, "--workers", "2", "--study", STUDY),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        victim = None
        deadline = time.time() + 120
        while victim is None and time.time() < deadline:
            time.sleep(0.3)
            if not journal_path(out).is_file():
                continue
            try:
                running = journal_study(out).get_trials(states=(TrialState.RUNNING,))
            except KeyError:
                continue    # the study is being created
            victim = next((t for t in running
                           if (out / t.user_attrs.get("trial_dir", "-") / "train.log").is_file()),
                          None)
        assert victim is not None, "no trial started its training in time"
        os.kill(int(victim.user_attrs["worker"].rpartition(":")[2]), signal.SIGKILL)
        output, _ = parent.communicate(timeout=300)
    finally:
        if parent.poll() is None:
            parent.kill()
    assert parent.returncode == 0, output
    return path, victim, output


def test_two_local_workers_finish_the_trials_once_each(killed_sweep):
    path, _, output = killed_sweep
    study = journal_study(path.parent / "out")
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and sum(is_finished(t) for t in study.trials) == 3
    assert "3 of 3 trials finished" in output
    assert len({t.user_attrs["trial_dir"] for t in complete}) == 3   # no trial ran twice
    assert len(workers_of(study)) == 2                               # both processes ran trials
    for t in complete:
        assert (path.parent / "out" / t.user_attrs["net_run"] / "metrics.json").is_file()
        assert 0 <= t.values[0] <= 1 and t.user_attrs["size_bits"] == 32 * t.user_attrs["params"]


def test_a_worker_killed_mid_trial_has_its_trial_retried_by_the_other(killed_sweep):
    path, victim, output = killed_sweep
    assert "ended with code -9" in output
    trials = journal_study(path.parent / "out").trials
    assert trials[victim.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert [t.state for t in retries] == [TrialState.COMPLETE]
    assert retries[0].params == victim.params
    assert retries[0].user_attrs["trial_dir"] == victim.user_attrs["trial_dir"]


def test_report_writes_trials_pareto_importances_and_plots(killed_sweep, capsys):
    path = killed_sweep[0]
    out = path.parent / "out"
    assert main(["sweep", str(path), "--out", str(out), "--study", STUDY, "--report"]) == 0
    report = out / "report"
    with open(report / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["state"] for r in rows) == ["complete"] * 3 + ["fail"]
    assert {"train:train.lr", "valid_acc", "MACs", "size_KiB", "test_acc", "run",
            "retry_of"} <= set(rows[0])
    with open(report / "pareto.csv") as f:
        assert len(list(csv.DictReader(f))) >= 1
    for name in ("pareto.png", "importances.csv", "report.md", "compare/report.md",
                 "compare/accuracy_vs_macs.png"):
        assert (report / name).is_file(), name
    text = (report / "report.md").read_text()
    assert "nas-kws export" in text and "## Parameter importances" in text
    # `compare` takes the sweep folder for its Pareto nets
    assert main(["compare", str(out), "--out", str(out / "cmp")]) == 0
    with open(out / "cmp" / "report.csv") as f:
        assert [r["model"] for r in csv.DictReader(f)] == ["bcresnet1"]


# --- a real PostgreSQL server ------------------------------------------------------------------

def postgres_bin() -> Path | None:
    """The folder holding initdb and pg_ctl (on PATH, or Debian's versioned folder)."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"),
                      key=lambda p: int(Path(p).parts[-3]))
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server in a temp folder on a free localhost port, stopped afterwards. The
    server refuses to run as root, so under root it runs as the `postgres` user."""
    bindir = postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    folder = Path(tempfile.mkdtemp(prefix="nas-kws-pg-"))
    as_user = []
    if os.geteuid() == 0:
        user = next((u for u in ("postgres", "nobody") if _has_user(u)))
        shutil.chown(folder, user)
        as_user = ["runuser", "-u", user, "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "nas",
                    "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"),
                    "-o", f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "-w", "start"],
                   check=True, capture_output=True)
    try:
        yield f"postgresql://nas@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def test_two_processes_join_one_study_on_postgresql(postgres_url, tone_root, tmp_path, capsys):
    path = write_sweep(tmp_path, tone_root, {"n_trials": 2})
    argv = sweep_argv(path, tmp_path / "out", "--storage", postgres_url, "--study", "pg")
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    study = optuna.load_study(study_name="pg", storage=postgres_url)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2
    assert {w.rpartition(":")[2] for w in workers_of(study)} == {str(p.pid) for p in procs}
    # joining with another definition is refused in one line
    other = write_sweep(tmp_path, tone_root, {"n_trials": 2, "sampler": "random"})
    assert main(["sweep", str(other), "--storage", postgres_url, "--study", "pg"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "another sweep definition" in err[0] and "study.sampler" in err[0]


# --- pruning and bad input ---------------------------------------------------------------------

@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_the_pruner_sees_each_epoch_and_stops_a_trial_below_the_median(tone_root, tmp_path,
                                                                      pruner):
    cfg = load_sweep(write_sweep(tmp_path, tone_root, {"pruner": pruner, "startup_trials": 1,
                                                       "prune_warmup_epochs": 0}))
    study = optuna.create_study(direction="maximize", pruner=make_pruner(cfg))
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(
            params={}, distributions={}, value=0.9, intermediate_values={0: 0.8, 1: 0.9}))
    trial = study.ask()
    watch = TrialPipeline._watch(trial)
    assert not watch([], True)
    stop = watch([{"epoch": 0, "valid_acc": 0.3}], True)
    assert study.trials[-1].intermediate_values == {0: 0.3}
    if pruner == "median":
        assert stop is True                   # below the median at epoch 0
    else:
        assert stop in (True, False)          # Hyperband's call depends on the trial's bracket
    assert not watch([{"epoch": 0, "valid_acc": 0.3}, {"epoch": 1, "valid_acc": 0.2}], False)
    assert study.trials[-1].intermediate_values == {0: 0.3, 1: 0.2}   # a finished step is kept


@pytest.mark.parametrize("change, needle", [
    ({"study": {"n_trial": 3}}, "unknown key(s) ['n_trial']"),
    ({"study": {"objectives": ["test_acc"]}}, "test accuracy is never an objective"),
    ({"study": {"objectives": ["valid_acc", "macs"], "pruner": "median"}}, "pruning needs one"),
    ({"study": {"sampler": "cmaes"}}, "study.sampler: expected one of"),
    ({"train": {"sample": {"train.lr": {"low": 0.2, "high": 0.1}}}}, "empty range"),
    ({"train": {"sample": {"train.lr": {"choices": []}}}}, "expected a non-empty list"),
    ({"train": {"sample": {"train.l_r": {"low": 0.1, "high": 0.2}}}}, "unknown key(s) ['l_r']"),
    ({"train": {"sample": {"train.lr": {"low": 0.1, "hi": 0.2}}}}, "unknown key(s) ['hi']"),
    ({"trian": {}}, "unknown key(s) ['trian']"),
    ({"study": {"sampler": "grid", "n_trials": 5},
      "train": {"sample": {"train.lr": {"choices": [0.1, 0.2]}}}}, "the grid has 2 points"),
    ({"quantize": {"sample": {"weight_bits": {"choices": [4, 9]}}}}, "bit width 2..8"),
])
def test_bad_sweep_yaml_is_one_line(tone_root, tmp_path, capsys, change, needle):
    data = yaml.safe_load(write_sweep(tmp_path, tone_root).read_text())
    for section, values in change.items():
        data[section] = {**data.get(section, {}), **values}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert main(["sweep", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and "nas-kws sweep: error:" in err[0], err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_database_is_one_line(tone_root, tmp_path, capsys):
    path = write_sweep(tmp_path, tone_root)
    url = f"postgresql://nas:secret@127.0.0.1:{free_port()}/none"
    assert main(["sweep", str(path), "--storage", url]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot open the database" in err[0] and "secret" not in err[0]
