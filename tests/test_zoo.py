"""The reference-run zoo: `nas-kws zoo build` on a tiny stand-in (1 epoch on the tiny synthetic
set, in a temporary zoo), verify catching corrupt and stale runs, compare using the runs, and
the shipped runs themselves (they load; BC-ResNet-1's reproduce on the default set)."""
import json
import shutil
import statistics

import pytest
import torch
import yaml

from nas_kws.cli import main
from nas_kws.data.synth import RECIPE_VERSION
from nas_kws.rebuild import load_model
from nas_kws.report import compare
from nas_kws.runs import RunDir
from nas_kws.zoo import SLIM_KEYS, is_current, read_index

STAND_IN = {"recipe": "demo.yaml", "overrides": ["data.synth_size=tiny", "train.epochs=1"],
            "seeds": [1, 2], "models": ["bcresnet1", "dscnn_s", "bcresnet8"]}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(zoo, work): BC-ResNet-1 and DS-CNN-S built, BC-ResNet-8 listed but not built."""
    zoo, work = tmp_path_factory.mktemp("zoo"), tmp_path_factory.mktemp("work")
    (zoo / "index.yaml").write_text(yaml.safe_dump(STAND_IN))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_KWS_ZOO", str(zoo))
        mp.setenv("NAS_KWS_THREADS", "1")
        assert main(["zoo", "build", "bcresnet1", "dscnn_s", "--work", str(work)]) == 0
    return zoo, work


@pytest.fixture
def zoo_copy(stand_in, tmp_path, monkeypatch):
    """A copy of the stand-in zoo and its work folder that a test may change."""
    zoo, work = (shutil.copytree(p, tmp_path / p.name) for p in stand_in)
    monkeypatch.setenv("NAS_KWS_ZOO", str(zoo))
    monkeypatch.setenv("NAS_KWS_THREADS", "1")
    return zoo, work


def test_build_packs_slim_runs_with_their_command_and_seeds(stand_in, zoo_copy, capsys):
    zoo, work = zoo_copy
    run = zoo / "bcresnet1" / "seed2"
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert files == ["checkpoints/best.pt", "classes.txt", "config.yaml", "features.yaml",
                     "metrics.json"]
    assert tuple(torch.load(run / "checkpoints" / "best.pt", weights_only=False)) == SLIM_KEYS
    reference = json.loads((run / "metrics.json").read_text())["reference"]
    assert reference["command"] == (
        f"nas-kws train --model bcresnet1 --config experiments/demo.yaml --seed 2 --run_dir "
        f"{stand_in[1] / 'bcresnet1' / 'seed2'} --quiet --set data.synth_size=tiny train.epochs=1")
    assert reference["data_fingerprint"].startswith(f"synth-v{RECIPE_VERSION}-seed0-tiny-12class-")
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 2
    assert not (zoo / "bcresnet8").exists()

    assert main(["zoo", "build", "bcresnet1", "--work", str(work)]) == 0   # nothing to do
    printed = capsys.readouterr().out
    assert "nas-kws train" not in printed and printed.count(": built (trained on") == 2


def test_build_resumes_a_stopped_training_and_pack_only_never_trains(zoo_copy, capsys):
    zoo, work = zoo_copy
    shutil.rmtree(zoo / "bcresnet1" / "seed2")
    (work / "bcresnet1" / "seed2" / "metrics.json").unlink()   # as if stopped after its epoch
    assert main(["zoo", "build", "bcresnet1", "--work", str(work), "--pack_only"]) == 0
    assert "seed2 has not finished (no metrics.json): skipped" in capsys.readouterr().out
    assert not (zoo / "bcresnet1" / "seed2").exists()
    assert main(["zoo", "build", "bcresnet1", "--work", str(work)]) == 0
    assert "nas-kws train --resume" in capsys.readouterr().out
    assert RunDir(zoo / "bcresnet1" / "seed2").finished


def test_list_shows_accuracy_and_the_build_command_of_unbuilt_models(zoo_copy, capsys):
    zoo, _ = zoo_copy
    accs = [json.loads((zoo / "dscnn_s" / f"seed{s}" / "metrics.json").read_text())
            ["test_best_acc"] for s in (1, 2)]
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dscnn = next(line for line in lines if line.startswith("dscnn_s "))
    assert "1,2" in dscnn and dscnn.endswith("built")
    assert f"{100 * statistics.mean(accs):.2f} +- {100 * statistics.stdev(accs):.2f}" in dscnn
    assert next(line for line in lines if line.startswith("bcresnet8 ")).endswith("not built")
    assert any("nas-kws zoo build bcresnet8" in line and "--seed SEED" in line for line in lines)


@pytest.mark.parametrize("damage, expected", [
    ("checkpoint", "corrupt checkpoint"),
    ("fingerprint", "stale, trained on the set synth-v3"),
    ("accuracy", "test accuracy"),
])
def test_verify_names_a_corrupt_stale_or_changed_run_in_one_line(zoo_copy, capsys, damage,
                                                                 expected):
    zoo, _ = zoo_copy
    assert main(["zoo", "verify"]) == 0
    assert capsys.readouterr().out.count("ok    ") == 4
    run = RunDir(zoo / "dscnn_s" / "seed1")
    metrics = run.read_metrics()
    if damage == "fingerprint":
        metrics["reference"]["data_fingerprint"] = "synth-v3-seed0-tiny-12class-0123456789abcdef"
    elif damage == "accuracy":
        metrics["test_best_acc"] += 0.1
    run.write_metrics(metrics)
    if damage == "checkpoint":
        run.checkpoint_path("best").write_bytes(b"not a checkpoint")
    assert main(["zoo", "verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "reference run dscnn_s/seed1" in err and expected in err


def test_compare_takes_missing_baselines_from_the_zoo_on_its_data_only(zoo_copy, tmp_path):
    zoo, work = zoo_copy
    given = work / "dscnn_s" / "seed1"
    rows = {r.label: r for r in compare([given], tmp_path / "report",
                                        baselines=["bcresnet1", "bcresnet8", "dscnn_s"])}
    accs = [RunDir(zoo / "bcresnet1" / f"seed{s}").read_metrics()["test_best_acc"] for s in (1, 2)]
    reference = rows["bcresnet1"]
    assert reference.note == "reference runs (zoo), mean +- std over seeds 1, 2"
    assert (reference.seeds, reference.acc) == (2, pytest.approx(statistics.mean(accs)))
    assert rows["bcresnet8"].note == ("missing: no run given (not trained); no current reference "
                                      "run (build it: nas-kws zoo build bcresnet8)")
    assert rows["dscnn_s"].runs == [str(given)]              # a given run wins over the zoo
    assert str(zoo / "bcresnet1" / "seed1") in (tmp_path / "report" / "report.md").read_text()

    other = RunDir(shutil.copytree(given, tmp_path / "other_data"))
    config = other.read_config()
    config["data"]["synth_size"] = "small"
    other.config_path.write_text(yaml.safe_dump(config))
    rows = {r.label: r for r in compare([other.path], tmp_path / "report2",
                                        baselines=["bcresnet1"])}
    assert rows["bcresnet1"].note == "missing: no run given (not trained)"


def test_every_shipped_run_loads_and_is_for_the_current_synthetic_recipe(monkeypatch):
    monkeypatch.delenv("NAS_KWS_ZOO", raising=False)
    index = read_index()
    shipped = [(m, s) for m in index.models for s in index.seeds if index.run(m, s).finished]
    assert shipped, "the zoo ships no reference run"
    for model, seed in shipped:
        run = index.run(model, seed)
        net, _, classes = load_model(run.path)
        assert net.spec["name"] == model and len(classes) == 12
        assert is_current(run, index.data), f"{run.path}: rebuild it (nas-kws zoo build {model})"


def test_shipped_bcresnet1_runs_reproduce_on_the_default_set(user_cache, monkeypatch, capsys):
    monkeypatch.delenv("NAS_KWS_ZOO", raising=False)
    monkeypatch.setenv("NAS_KWS_THREADS", "1")
    assert main(["zoo", "verify", "bcresnet1", "--quiet"]) == 0
    assert "reference run(s) verified on" in capsys.readouterr().out
