import pytest
import torch

from nas_kws.cli import main
from nas_kws.config import ExperimentConfig, load_config
from nas_kws.data.loader import open_dataset
from nas_kws.device import seed_everything
from nas_kws.models import create_model
from nas_kws.rebuild import load_model
from nas_kws.runs import RunDir
from nas_kws.train import NonFiniteLossError, fit, train_batches, train_experiment


def tone_config(root, epochs=3, **train):
    overrides = {"model": "bcresnet1", "data.dataset": "folders", "data.root": str(root),
                 "train.epochs": epochs, "train.batch_size": 20, "train.lr": 0.1,
                 "train.warmup_epochs": 0, "train.weight_decay": 0.0, "train.eval_batch_size": 100,
                 "augment.noise_prob": 0.0}
    overrides.update({f"train.{k}": v for k, v in train.items()})
    return load_config(ExperimentConfig, None, overrides)


def fresh_model(cfg, store):
    seed_everything(cfg.train.seed)
    return create_model(cfg.model, num_classes=len(store.classes))


def test_short_training_lands_well_above_chance_and_writes_the_run(tone_root, tmp_path):
    cfg = tone_config(tone_root, epochs=5, batch_size=10, lr=0.05, warmup_epochs=1)
    metrics = train_experiment(cfg, tmp_path / "run", progress=False)
    assert metrics["test_best_acc"] > 0.7  # 4 classes: chance is 0.25
    run = tmp_path / "run"
    for name in ("config.yaml", "features.yaml", "classes.txt", "checkpoints/last.pt",
                 "checkpoints/best.pt", "metrics.json", "confusion_test.png"):
        assert (run / name).is_file(), name
    assert any((run / "tb").iterdir())
    assert (run / "classes.txt").read_text().split() == sorted(["low", "mid", "high", "sweep"])
    assert len(metrics["history"]) == 5 and metrics["params"] > 0 and metrics["macs"] > 0
    model, features, classes = load_model(run)
    assert features.shape == (40, 101) and model.num_classes == 4


def test_resume_gives_the_same_weights_as_a_straight_run(tone_root, tmp_path):
    cfg = tone_config(tone_root, epochs=3)
    store = open_dataset(cfg.data, progress=False)
    straight = fit(fresh_model(cfg, store), cfg, tmp_path / "a", store=store, progress=False)
    stopped = fit(fresh_model(cfg, store), cfg, tmp_path / "b", store=store, progress=False,
                  stop_after_epoch=0)
    assert stopped == {"stopped_after_epoch": 0}
    resumed = fit(create_model("bcresnet1", num_classes=4), cfg, tmp_path / "b", resume=True,
                  store=store, progress=False)
    a = RunDir(tmp_path / "a").load_checkpoint("last")["model"]
    b = RunDir(tmp_path / "b").load_checkpoint("last")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert straight["test_last_acc"] == resumed["test_last_acc"]


def test_prefetch_thread_prepares_exactly_the_serial_batches(tone_root):
    from nas_kws.data.pipeline import Pipeline
    from nas_kws.features import FeatureConfig

    cfg = tone_config(tone_root)
    store = open_dataset(cfg.data, progress=False)
    pipe = Pipeline(store, cfg, FeatureConfig.logmel(), torch.device("cpu"))
    runs = [list(train_batches(pipe, pipe.train_loader, 3, pipe.generator(0),
                               torch.channels_last, prefetch)) for prefetch in (False, True)]
    assert len(runs[0]) == 3
    for (feats, labels), (again, same) in zip(*runs):
        assert torch.equal(feats, again) and torch.equal(labels, same)


def test_non_finite_loss_stops_with_epoch_and_step_and_keeps_checkpoint(tone_root, tmp_path):
    cfg = tone_config(tone_root, epochs=2)
    store = open_dataset(cfg.data, progress=False)
    fit(fresh_model(cfg, store), cfg, tmp_path / "r", store=store, progress=False,
        stop_after_epoch=0)
    model = create_model("bcresnet1", num_classes=4)
    model.register_forward_hook(lambda mod, inp, out: out * float("nan"))
    with pytest.raises(NonFiniteLossError, match="epoch 1 step 0: loss is nan"):
        fit(model, cfg, tmp_path / "r", resume=True, store=store, progress=False)
    assert RunDir(tmp_path / "r").load_checkpoint("last")["epoch"] == 0


def test_eval_command_prints_accuracy_and_writes_confusion_png(tone_root, tmp_path, capsys):
    cfg = tone_config(tone_root, epochs=1)
    train_experiment(cfg, tmp_path / "run", progress=False)
    assert main(["eval", str(tmp_path / "run"), "--split", "valid"]) == 0
    out = capsys.readouterr().out
    assert "valid accuracy (best checkpoint)" in out and "sweep" in out
    assert (tmp_path / "run" / "confusion_valid_best.png").is_file()


def test_train_command_rejects_unknown_config_key(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr_max: 1\n")
    assert main(["train", "--model", "bcresnet1", "--config", str(bad)]) == 2
    assert "unknown key(s) ['lr_max']" in capsys.readouterr().err


def test_select_start_keeps_the_starting_weights_when_fine_tuning_ruins_them(tone_root, tmp_path):
    cfg = tone_config(tone_root, epochs=5, batch_size=10, lr=0.05, warmup_epochs=1)
    store = open_dataset(cfg.data, progress=False)
    model = fresh_model(cfg, store)
    start = fit(model, cfg, tmp_path / "start", store=store, progress=False)
    assert start["best_valid_acc"] >= 0.5  # 4 classes: chance is 0.25
    model.load_state_dict(RunDir(tmp_path / "start").load_checkpoint("best")["model"])
    ruin = tone_config(tone_root, epochs=1, batch_size=10, optimizer="adam", lr=1.0,
                       select_start=True)
    tuned = fit(model, ruin, tmp_path / "tuned", store=store, progress=False)
    assert tuned["history"][0]["valid_acc"] < start["best_valid_acc"]  # Adam at lr 1 ruins it
    assert tuned["best_epoch"] == -1
    assert tuned["best_valid_acc"] == start["best_valid_acc"]
    assert tuned["test_best_acc"] == start["test_best_acc"]
