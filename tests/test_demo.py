"""The README's main job, end to end on a small synthetic set with one epoch per stage."""
import csv

from nas_kws.cli import main
from nas_kws.runs import RunDir

DEMO = ["demo", "--synth_size", "small", "--epochs", "1", "--search_epochs", "1,1",
        "--qat_epochs", "1", "--latency_runs", "5"]


def test_demo_runs_search_to_report_and_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main([*DEMO, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "derived net (hybrid space" in printed and "against the budget 6,000,000" in printed
    table = printed[printed.index("fp32 acc %"):printed.index("report: ")].splitlines()[1:]
    cells = {line.split()[0]: line.split()[1:] for line in table if line}
    assert sorted(cells) == ["bcresnet1", "hybrid"]        # no zoo rows on this set
    assert cells["hybrid"][0] == "searched" and cells["bcresnet1"][2] == "9,232"
    for run in ("searched", "bcresnet1"):
        assert (out / run / "quant" / "ptq.json").is_file()
        twin_export = out / run / "quant" / "qat_w8a8" / "export"
        assert (twin_export / "model_int8.onnx.latency.json").is_file()
        assert (out / run / "export" / "model_fp32.onnx.latency.json").is_file()
    assert (out / "search" / "genotype.yaml").is_file()
    with open(out / "report" / "report.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    assert rows["bcresnet1"]["params"] == "9232"
    assert rows["bcresnet8"]["note"].startswith("missing")
    searched = next(r for r in rows.values() if r["family"] == "searched")
    assert searched["QAT w8a8"] and searched["onnx_int8_ms"]

    stamp = (out / "searched" / "metrics.json").stat().st_mtime_ns
    assert main([*DEMO, "--out", str(out)]) == 0          # everything finished: only re-reported
    printed = capsys.readouterr().out
    assert "nas-kws train" not in printed and "nas-kws search" not in printed
    assert (out / "searched" / "metrics.json").stat().st_mtime_ns == stamp

    (out / "bcresnet1" / "metrics.json").unlink()          # as if stopped after its last epoch
    assert main([*DEMO, "--out", str(out)]) == 0
    assert "nas-kws train --resume" in capsys.readouterr().out
    assert (out / "bcresnet1" / "metrics.json").is_file()


def test_a_run_without_checkpoint_is_cleared_not_resumed(tmp_path):
    early = tmp_path / "early"
    early.mkdir()
    (early / "config.yaml").write_text("model: bcresnet1\n")
    assert not RunDir(early).keep_if_resumable() and not early.exists()
    (tmp_path / "late" / "checkpoints").mkdir(parents=True)
    (tmp_path / "late" / "checkpoints" / "last.pt").write_bytes(b"x")
    assert RunDir(tmp_path / "late").keep_if_resumable()
