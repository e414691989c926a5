import csv
import json
import statistics

import pytest
import yaml
from quant_helpers import single_thread, tiny_genotype  # noqa: F401

from nas_kws.config import ExperimentConfig, load_config, to_dict
from nas_kws.report import compare

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spec(name: str) -> dict:
    return {"name": name, "kwargs": {}}


def fake_run(path, model_spec, acc, params, macs, ptq=None, twins=None, latency=None):
    """A finished run directory holding only the files the report reads."""
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(
        {"model": model_spec, "test_best_acc": acc, "params": params, "macs": macs}))
    if ptq:
        rows = [{"scheme": "fp32", "bits": 32, "test_acc": acc}] + [
            {"scheme": "per-channel symmetric max-abs", "bits": b, "test_acc": a}
            for b, a in ptq.items()]
        (path / "quant").mkdir()
        (path / "quant" / "ptq.json").write_text(json.dumps({"split": "test", "rows": rows}))
    for tag, (method, bits, twin_acc) in (twins or {}).items():
        twin = path / "quant" / f"{method}_{tag}"
        twin.mkdir(parents=True)
        quant = {"weight_bits": bits, "act_bits": 8, "per_channel": True,
                 "first_last_bits": None, "layers": {}}
        (twin / "metrics.json").write_text(json.dumps(
            {"model": {"base": model_spec, "quant": quant}, "test_best_acc": twin_acc}))
    for kind, ms in (latency or {}).items():
        (path / "export").mkdir(exist_ok=True)
        latency = path / "export" / f"model_{kind}.onnx.latency.json"
        latency.write_text(json.dumps({"median_ms": ms}))
    return path


def read_csv(path):
    with open(path) as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_report_numbers_come_from_the_runs(tmp_path):
    genotype = tiny_genotype(12)
    runs = [
        fake_run(tmp_path / "b1_seed0", spec("bcresnet1"), 0.91, 9232, 3_100_000,
                 ptq={8: 0.905, 4: 0.85},
                 twins={"w8a8": ("qat", 8, 0.908), "w4a8": ("qat", 4, 0.9)},
                 latency={"fp32": 0.5, "int8": 0.7}),
        fake_run(tmp_path / "b1_seed1", spec("bcresnet1"), 0.93, 9232, 3_100_000),
        fake_run(tmp_path / "b2", spec("bcresnet2"), 0.95, 27284, 9_000_000),
        fake_run(tmp_path / "searched", {"genotype": genotype}, 0.94, 20000, 5_000_000,
                 twins={"w8a8": ("calibrate", 8, 0.935)}),
    ]
    rows = compare(runs, tmp_path / "report", baselines=["bcresnet1", "bcresnet8", "dscnn_s"])
    assert len(rows) == 5
    table = read_csv(tmp_path / "report" / "report.csv")
    b1 = table["bcresnet1"]
    assert float(b1["fp32_acc"]) == pytest.approx(0.92)
    assert float(b1["fp32_acc_std"]) == pytest.approx(statistics.stdev([0.91, 0.93]))
    assert (b1["runs"], b1["params"], b1["MACs"]) == ("2", "9232", "3100000")
    assert float(b1["PTQ8"]) == 0.905 and float(b1["PTQ4"]) == 0.85
    assert float(b1["QAT w8a8"]) == 0.908 and float(b1["QAT w4a8"]) == 0.9
    assert float(b1["onnx_fp32_ms"]) == 0.5 and float(b1["onnx_int8_ms"]) == 0.7
    assert float(b1["size_8bit_KiB"]) == pytest.approx(9232 / 1024)
    searched = table["tiny_hybrid"]
    assert searched["family"] == "searched" and float(searched["calibrate w8a8"]) == 0.935
    assert table["bcresnet2"]["PTQ8"] == ""          # nothing measured, nothing shown
    for missing in ("bcresnet8", "dscnn_s"):
        assert table[missing]["fp32_acc"] == "" and "missing" in table[missing]["note"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| bcresnet1 | bcresnet | 2 | 2 | 9,232 | 3,100,000 |" in md
    assert "92.00 | 1.41 | 90.00 | 90.80 | - | 0.500 | 0.700 |" in md   # QAT w4a8, w8a8, calibrate
    assert "## Post-training rounding" in md
    assert "| bcresnet1 | per-channel symmetric max-abs | 91.00 | 90.50 | 85.00 |" in md
    for name in ("accuracy_vs_macs.png", "accuracy_vs_size.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == PNG_MAGIC


def test_report_reads_a_multi_seed_summary(tmp_path):
    run = tmp_path / "b1"
    fake_run(run / "seed0", spec("bcresnet1"), 0.9, 9232, 3_100_000)
    (run / "metrics.json").write_text(json.dumps(
        {"seeds": [0, 1], "runs": ["seed0", "seed1"], "params": 9232, "macs": 3_100_000,
         "test_best_acc_mean": 0.9, "test_best_acc_std": 0.02}))
    compare([run], tmp_path / "report")
    row = read_csv(tmp_path / "report" / "report.csv")["bcresnet1"]
    assert (row["seeds"], row["fp32_acc"], row["fp32_acc_std"]) == ("2", "0.9", "0.02")


def test_report_rejects_unfinished_runs(tmp_path):
    (tmp_path / "run").mkdir()
    with pytest.raises(FileNotFoundError, match="no metrics.json"):
        compare([tmp_path / "run"], tmp_path / "report")


def test_missing_baseline_is_trained_with_its_recipe_on_the_same_data(tone_root, tmp_path):
    ref = fake_run(tmp_path / "ref", spec("bcresnet1"), 0.9, 9232, 3_100_000)
    cfg = load_config(ExperimentConfig, None, {"data.dataset": "folders",
                                               "data.root": str(tone_root), "train.seed": 3})
    (ref / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg)))
    compare([ref], tmp_path / "report", baselines=["dscnn_s"], train_missing=True,
            baseline_epochs=1)
    trained = tmp_path / "report" / "baselines" / "dscnn_s"
    used = yaml.safe_load((trained / "config.yaml").read_text())
    assert used["data"]["root"] == str(tone_root) and used["train"]["seed"] == 3
    assert used["train"]["optimizer"] == "adam"     # experiments/dscnn_s.yaml, not the default
    row = read_csv(tmp_path / "report" / "report.csv")["dscnn_s"]
    metrics = json.loads((trained / "metrics.json").read_text())
    assert float(row["fp32_acc"]) == metrics["test_best_acc"]
    assert "1 epochs" in row["note"]
