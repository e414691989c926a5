"""The reference-run zoo: `nas-kws zoo build` on a tiny stand-in (1 epoch on the tiny synthetic
set and 1 QAT epoch per twin, in a temporary zoo), verify catching corrupt and stale runs, QAT
twins and latency files, compare using the runs, and the shipped runs themselves (they load;
BC-ResNet-1's reproduce on the default set)."""
import json
import shutil
import statistics

import pytest
import torch
import yaml

from nas_kws.cli import main
from nas_kws.data.synth import RECIPE_VERSION
from nas_kws.errors import NasKwsError
from nas_kws.rebuild import load_model
from nas_kws.report import compare
from nas_kws.runs import RunDir
from nas_kws.zoo import SLIM_KEYS, check_derived, is_current, read_index, trained_on

STAND_IN = {"recipe": "demo.yaml", "overrides": ["data.synth_size=tiny", "train.epochs=1"],
            "seeds": [1, 2], "models": ["bcresnet1", "dscnn_s", "bcresnet8"],
            "qat_weight_bits": [4], "qat_epochs": 1}


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory):
    """(zoo, work): BC-ResNet-1 built with its QAT twins and seed 1's latency; DS-CNN-S trained
    by hand with the recorded command and packed with --pack_only (no QAT, no latency);
    BC-ResNet-8 listed but not built."""
    zoo, work = tmp_path_factory.mktemp("zoo"), tmp_path_factory.mktemp("work")
    (zoo / "index.yaml").write_text(yaml.safe_dump(STAND_IN))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NAS_KWS_ZOO", str(zoo))
        mp.setenv("NAS_KWS_THREADS", "1")
        assert main(["zoo", "build", "bcresnet1", "--work", str(work)]) == 0
        for seed in (1, 2):
            index = read_index()
            assert main(index.train_argv("dscnn_s", seed, work / "dscnn_s" / f"seed{seed}")) == 0
        assert main(["zoo", "build", "dscnn_s", "--work", str(work), "--pack_only"]) == 0
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
                     "metrics.json", "quant/qat_w4a8/metrics.json"]
    assert sorted(p.name for p in (zoo / "bcresnet1" / "seed1" / "export").iterdir()) == [
        "model_fp32.onnx.latency.json", "model_int8.onnx.latency.json"]   # the first seed's only
    assert tuple(torch.load(run / "checkpoints" / "best.pt", weights_only=False)) == SLIM_KEYS
    reference = json.loads((run / "metrics.json").read_text())["reference"]
    assert reference["command"] == (
        "nas-kws train --model bcresnet1 --config experiments/demo.yaml --seed 2 --run_dir "
        "runs/zoo/bcresnet1/seed2 --quiet --set data.synth_size=tiny train.epochs=1")
    assert reference["data_fingerprint"].startswith(f"synth-v{RECIPE_VERSION}-seed0-tiny-12class-")
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["seed"] == 2
    twin = json.loads((run / "quant" / "qat_w4a8" / "metrics.json").read_text())
    assert twin["model"]["quant"]["weight_bits"] == 4
    assert twin["reference"]["command"] == (
        f"nas-kws quantize qat {stand_in[0].name}/bcresnet1/seed2 --weight_bits 4 --act_bits 8 "
        "--epochs 1 --out runs/zoo/bcresnet1/seed2/quant/qat_w4a8 --quiet")
    assert twin["reference"]["data_fingerprint"] == reference["data_fingerprint"]
    assert not (zoo / "bcresnet8").exists()

    assert main(["zoo", "build", "bcresnet1", "--work", str(work)]) == 0   # nothing to do
    printed = capsys.readouterr().out
    assert "$ nas-kws" not in printed and printed.count(": built (trained on") == 2
    assert printed.count("QAT w4a8: packed (test acc") == 2 and "seed1 latency: packed" in printed
    dscnn = zoo / "dscnn_s" / "seed1"     # packed with --pack_only from a plain training
    assert not (dscnn / "quant").exists() and not (dscnn / "export").exists()


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

    shutil.rmtree(zoo / "bcresnet1" / "seed1")    # QAT twin and latency files from WORK too
    assert main(["zoo", "build", "bcresnet1", "--work", str(work), "--pack_only"]) == 0
    printed = capsys.readouterr().out
    assert "$ nas-kws" not in printed and "seed1 QAT w4a8: packed" in printed
    assert sorted(p.name for p in (zoo / "bcresnet1" / "seed1").iterdir()) == [
        "checkpoints", "classes.txt", "config.yaml", "export", "features.yaml", "metrics.json",
        "quant"]


def test_list_shows_accuracy_and_the_build_command_of_unbuilt_models(zoo_copy, capsys):
    zoo, _ = zoo_copy
    accs = [json.loads((zoo / "dscnn_s" / f"seed{s}" / "metrics.json").read_text())
            ["test_best_acc"] for s in (1, 2)]
    assert main(["zoo", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    dscnn = next(line for line in lines if line.startswith("dscnn_s "))
    assert "1,2" in dscnn and dscnn.endswith(
        "built, QAT twins of 0 of 2 seeds, no latency (nas-kws zoo build dscnn_s)")
    assert f"{100 * statistics.mean(accs):.2f} +- {100 * statistics.stdev(accs):.2f}" in dscnn
    assert "QAT w4a8 %" in lines[1] and "int8 ms" in lines[1]
    qat = [RunDir(zoo / "bcresnet1" / f"seed{s}" / "quant" / "qat_w4a8").read_metrics()
           ["test_best_acc"] for s in (1, 2)]
    bcresnet1 = next(line for line in lines if line.startswith("bcresnet1 "))
    assert f"{100 * statistics.mean(qat):.2f} +- {100 * statistics.stdev(qat):.2f}" in bcresnet1
    assert bcresnet1.endswith("built")
    assert next(line for line in lines if line.startswith("bcresnet8 ")).endswith("not built")
    assert any("nas-kws zoo build bcresnet8" in line and "--seed SEED" in line for line in lines)


@pytest.mark.parametrize("damage, expected", [
    ("checkpoint", "corrupt checkpoint"),
    ("fingerprint", "stale, trained on the set synth-v3"),
    ("accuracy", "test accuracy"),
    ("qat_base", "qat_w4a8/metrics.json: stale QAT result"),
    ("qat_metrics", "qat_w4a8/metrics.json"),
    ("latency", "model_int8.onnx.latency.json: corrupt latency file"),
])
def test_verify_names_a_corrupt_stale_or_changed_run_in_one_line(zoo_copy, tmp_path, capsys,
                                                                 damage, expected):
    zoo, work = zoo_copy
    assert main(["zoo", "verify"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("ok    ") == 4 and "qat_w4a8 0." in printed and "int8 0." in printed
    run = RunDir(zoo / "bcresnet1" / "seed1")
    metrics, twin = run.read_metrics(), run.quant_run("qat", "w4a8")
    if damage == "fingerprint":
        metrics["reference"]["data_fingerprint"] = "synth-v3-seed0-tiny-12class-0123456789abcdef"
    elif damage == "accuracy":
        metrics["test_best_acc"] += 0.1
    run.write_metrics(metrics)
    if damage == "checkpoint":
        run.checkpoint_path("best").write_bytes(b"not a checkpoint")
    elif damage == "qat_base":      # the float run rebuilt, its old twin left behind
        shutil.copyfile(zoo / "bcresnet1" / "seed2" / "checkpoints" / "best.pt",
                        run.checkpoint_path("best"))
        run.write_metrics({**metrics, "test_best_acc": RunDir(zoo / "bcresnet1" / "seed2")
                           .read_metrics()["test_best_acc"]})
    elif damage == "qat_metrics":
        twin.metrics_path.write_text('{"test_best_acc": 0.5')
    elif damage == "latency":
        (run.path / "export" / "model_int8.onnx.latency.json").write_text('{"median_ms": -1.0}')
    assert main(["zoo", "verify"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "reference run bcresnet1/seed1" in err and expected in err
    if damage.startswith(("qat", "latency")):   # the report refuses the run as well
        with pytest.raises(NasKwsError, match=f"reference run bcresnet1/seed1: .*{expected}"):
            compare([work / "dscnn_s" / "seed1"], tmp_path / "report", baselines=["bcresnet1"])


def test_compare_takes_missing_baselines_from_the_zoo_on_its_data_only(zoo_copy, tmp_path):
    zoo, work = zoo_copy
    given = work / "dscnn_s" / "seed1"
    rows = {r.label: r for r in compare([given], tmp_path / "report",
                                        baselines=["bcresnet1", "bcresnet8", "dscnn_s"])}
    accs = [RunDir(zoo / "bcresnet1" / f"seed{s}").read_metrics()["test_best_acc"] for s in (1, 2)]
    reference = rows["bcresnet1"]
    assert reference.note == ("reference runs (zoo), mean +- std over seeds 1, 2; latency from "
                              "the zoo's build machine (seed 1)")
    assert (reference.seeds, reference.acc) == (2, pytest.approx(statistics.mean(accs)))
    qat = [RunDir(zoo / "bcresnet1" / f"seed{s}" / "quant" / "qat_w4a8").read_metrics()
           ["test_best_acc"] for s in (1, 2)]
    assert reference.quant["QAT w4a8"] == pytest.approx(statistics.mean(qat))
    assert reference.quant_std["QAT w4a8"] == pytest.approx(statistics.stdev(qat))
    assert reference.latency_ms["int8"] == json.loads(
        (zoo / "bcresnet1" / "seed1" / "export" / "model_int8.onnx.latency.json").read_text())[
        "median_ms"]
    assert "tflite" not in reference.latency_ms     # model_int8.tflite has its own latency file
    report = (tmp_path / "report" / "report.md").read_text()
    assert f"| {100 * statistics.mean(qat):.2f} +- {100 * statistics.stdev(qat):.2f} |" in report
    csv = (tmp_path / "report" / "report.csv").read_text().splitlines()[0]
    assert "QAT w4a8,QAT w4a8_std,onnx_fp32_ms" in csv
    assert rows["bcresnet8"].note == ("missing: no run given (not trained); no current reference "
                                      "run (build it: nas-kws zoo build bcresnet8)")
    assert rows["dscnn_s"].runs == [str(given)]              # a given run wins over the zoo
    assert str(zoo / "bcresnet1" / "seed1") in (tmp_path / "report" / "report.md").read_text()

    rows = {r.label: r for r in compare([work / "bcresnet1" / "seed2"], tmp_path / "no_qat",
                                        baselines=["dscnn_s"])}   # zoo runs without QAT twins
    assert rows["dscnn_s"].quant == {} and rows["dscnn_s"].note.endswith(
        "; no QAT packed (nas-kws zoo build dscnn_s); no latency packed")
    header, _, *body = (tmp_path / "no_qat" / "report.md").read_text().split("\n\n")[2].split(
        "\n")
    dscnn = next(line for line in body if line.startswith("| dscnn_s "))
    assert dscnn.split(" | ")[header.split(" | ").index("QAT w4a8")] == "-"

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
        check_derived(run, trained_on(run))     # QAT twins and latency files: current, whole


def test_shipped_bcresnet1_runs_reproduce_on_the_default_set(user_cache, monkeypatch, capsys):
    monkeypatch.delenv("NAS_KWS_ZOO", raising=False)
    monkeypatch.setenv("NAS_KWS_THREADS", "1")
    assert main(["zoo", "verify", "bcresnet1", "--quiet"]) == 0
    assert "reference run(s) verified on" in capsys.readouterr().out
