import pytest

from nas_kws.config import ExperimentConfig, load_config, parse_set_flags


def test_yaml_and_overrides(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("model: bcresnet8\ntrain:\n  lr: 0.1\n  epochs: 3\n")
    cfg = load_config(ExperimentConfig, path, {"train.lr": "0.05", "data.root": "/d",
                                               "train.epochs": None})
    assert cfg.model == "bcresnet8"
    assert cfg.train.lr == 0.05 and cfg.train.epochs == 3 and cfg.data.root == "/d"


def test_unknown_key_names_file_key_and_valid_keys(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"bad.yaml.train: unknown key\(s\) \['learning_rate'\]; "
                                         r"valid keys: \[.*'lr'"):
        load_config(ExperimentConfig, path)


def test_wrong_type_is_named():
    with pytest.raises(ValueError, match="config.train.epochs: expected int"):
        load_config(ExperimentConfig, None, {"train.epochs": "many"})


def test_set_values_inside_free_form_sections_are_yaml_scalars():
    cfg = load_config(ExperimentConfig, None, {"model_kwargs.dropout": "0",
                                               "model_kwargs.act": "relu",
                                               "features.n_mels": "32"})
    assert cfg.model_kwargs == {"dropout": 0, "act": "relu"} and cfg.features == {"n_mels": 32}


def test_set_flags_need_key_value():
    assert parse_set_flags(["train.lr=0.2"]) == {"train.lr": "0.2"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_set_flags(["train.lr"])


def test_experiment_files_load():
    """Training recipes load as ExperimentConfig, search configs (a `search:` section) as
    SearchConfig, sweeps (a `study:` section) as SweepConfig; every key is known."""
    from pathlib import Path

    import yaml

    from nas_kws.nas.search_config import load_search_config
    from nas_kws.sweep.config import load_sweep

    paths = sorted(Path(__file__).parent.parent.glob("experiments/*.yaml"))
    sweeps = [p for p in paths if "study" in (yaml.safe_load(p.read_text()) or {})]
    searches = [p for p in paths
                if p not in sweeps and "search" in (yaml.safe_load(p.read_text()) or {})]
    assert [p.name for p in searches] == ["demo_search.yaml", "search_halving.yaml",
                                         "search_supernet.yaml"]
    assert [p.name for p in sweeps] == ["sweep_budget.yaml", "sweep_budget_small.yaml",
                                        "sweep_lr.yaml", "sweep_qat_bits.yaml"]
    for path in paths:
        if path in sweeps:
            load_sweep(path)
        elif path in searches:
            load_search_config(path)
        else:
            load_config(ExperimentConfig, path)
