"""A run back from its directory: the net its checkpoint's `model_spec` describes and the data
it was trained on.

The one module that knows every kind of spec, so it sits above runs.py, models/ and quant/:
    {"name": ..., "kwargs": {...}}                  a registered model
    {"genotype": {...}}                              a genotype (a searched net)
    {"base": spec, "svd_ranks": {layer: rank}}       SVD-compressed (quant/svd.py)
    {"base": spec, "quant": QuantSpec dict}          a Brevitas twin (quant/qat.py)
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from nas_kws.data.loader import open_dataset
from nas_kws.features import FeatureConfig
from nas_kws.models import create_model
from nas_kws.models.genotype import build_from_genotype
from nas_kws.quant.svd import apply_ranks
from nas_kws.runs import RunDir


def model_from_spec(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """The untrained net a spec describes; derived specs rebuild their base first."""
    if "base" in spec:
        base = model_from_spec(spec["base"], num_classes)
        if "svd_ranks" in spec:
            model = apply_ranks(base, spec["svd_ranks"])
        elif "quant" in spec:
            from nas_kws.quant.qat import QuantSpec, quant_twin  # Brevitas: slow to import

            model = quant_twin(base, QuantSpec.from_dict(spec["quant"], where="model_spec.quant"))
        else:
            raise ValueError(f"model spec: a derived spec needs 'svd_ranks' or 'quant' beside "
                             f"'base', got keys {sorted(spec)}")
        model.spec = spec
        return model
    if "genotype" in spec:
        return build_from_genotype(spec["genotype"], num_classes=num_classes)
    return create_model(spec["name"], num_classes=num_classes, **spec.get("kwargs", {}))


def load_model(run_dir: str | os.PathLike,
               which: str = "best") -> tuple[nn.Module, FeatureConfig, list[str]]:
    """(model in eval mode on CPU, its features, its class names) of any run directory."""
    state = RunDir(run_dir).load_checkpoint(which)
    classes = list(state["classes"])
    model = model_from_spec(state["model_spec"], len(classes))
    model.load_state_dict(state["model"])
    features = FeatureConfig.from_dict(state["features"])
    model.feature_config = features
    return model.eval(), features, classes


def open_run_data(run_dir: str | os.PathLike, classes: list[str], root: str | None = None,
                  progress: bool = False):
    """The waveform store a run was trained on (or the same dataset at `root`); its classes must
    be the run's, or the model's outputs would mean other words."""
    data = RunDir(run_dir).experiment().data
    if root:
        data.root = root
    store = open_dataset(data, progress=progress)
    if list(store.classes) != list(classes):
        raise ValueError(f"{data.root or run_dir}: the data's classes {list(store.classes)} differ "
                         f"from the run's {list(classes)}")
    return store
