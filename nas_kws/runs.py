"""The run directory: resolved config, features, classes, atomic checkpoints, metrics, TensorBoard.

Layout: config.yaml, features.yaml, classes.txt, checkpoints/{last,best}.pt, metrics.json, tb/.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.fileio import atomic_write, write_json, write_text, write_yaml


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.path / "metrics.json"

    @property
    def tb_dir(self) -> Path:
        return self.path / "tb"

    def checkpoint_path(self, name: str) -> Path:
        return self.path / "checkpoints" / f"{name}.pt"

    def has_checkpoint(self, name: str = "last") -> bool:
        return self.checkpoint_path(name).is_file()

    def write_setup(self, config: dict[str, Any], features: FeatureConfig, classes: list[str]) -> None:
        write_yaml(self.config_path, config)
        write_yaml(self.path / "features.yaml", features.to_dict())
        write_text(self.path / "classes.txt", "\n".join(classes) + "\n")

    def read_config(self) -> dict[str, Any]:
        if not self.config_path.is_file():
            raise FileNotFoundError(f"{self.config_path}: not a run directory (no config.yaml)")
        return yaml.safe_load(self.config_path.read_text())

    def save_checkpoint(self, name: str, state: dict[str, Any]) -> Path:
        return atomic_write(self.checkpoint_path(name), lambda tmp: torch.save(state, tmp))

    def load_checkpoint(self, name: str = "last") -> dict[str, Any]:
        path = self.checkpoint_path(name)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no checkpoint '{name}' in run {self.path}")
        return torch.load(path, map_location="cpu", weights_only=False)

    def read_metrics(self) -> dict[str, Any]:
        return json.loads(self.metrics_path.read_text()) if self.metrics_path.is_file() else {}

    def write_metrics(self, metrics: dict[str, Any]) -> None:
        write_json(self.metrics_path, metrics)


def model_from_spec(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """The (untrained) net a checkpoint's `model_spec` describes: a registered name, a genotype,
    or a net derived from one of those ({"base": spec, "svd_ranks": ...} or {"base", "quant"})."""
    if "base" in spec:
        base = model_from_spec(spec["base"], num_classes)
        if "svd_ranks" in spec:
            from nas_kws.quant.svd import apply_ranks

            model = apply_ranks(base, spec["svd_ranks"])
        elif "quant" in spec:
            from nas_kws.quant.qat import QuantSpec, quant_twin

            model = quant_twin(base, QuantSpec.from_dict(spec["quant"], where="model_spec.quant"))
        else:
            raise ValueError(f"model spec: a derived spec needs 'svd_ranks' or 'quant' beside "
                             f"'base', got keys {sorted(spec)}")
        model.spec = spec
        return model
    from nas_kws.models import create_model
    from nas_kws.models.genotype import build_from_genotype

    if "genotype" in spec:
        return build_from_genotype(spec["genotype"], num_classes=num_classes)
    return create_model(spec["name"], num_classes=num_classes, **spec.get("kwargs", {}))


def load_model(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, FeatureConfig, list[str]]:
    """(model in eval mode on CPU, its features, its class names) from any run directory,
    plain or derived (SVD-compressed, quantized)."""
    state = RunDir(run_dir).load_checkpoint(which)
    classes = list(state["classes"])
    model = model_from_spec(state["model_spec"], len(classes))
    model.load_state_dict(state["model"])
    features = FeatureConfig.from_dict(state["features"])
    model.feature_config = features
    return model.eval(), features, classes
