"""Nets derived from a trained net, saved as specs that rebuild them, like any model spec:

    {"base": <spec of the net it came from>, "svd_ranks": {layer: rank}}   SVD-compressed
    {"base": <spec of the net it came from>, "quant": QuantSpec dict}      Brevitas twin

Specs nest (a quantized compressed net has an SVD spec as its base), so every derived run
directory is an ordinary run directory whose checkpoint `model_spec` rebuilds the net.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.runs import RunDir


def build_from_spec(spec: dict[str, Any], num_classes: int) -> nn.Module:
    """The (untrained) net a spec describes, derived or not."""
    if "base" not in spec:
        from nas_kws.models import create_model
        from nas_kws.models.genotype import build_from_genotype

        if "genotype" in spec:
            return build_from_genotype(spec["genotype"], num_classes=num_classes)
        return create_model(spec["name"], num_classes=num_classes, **spec.get("kwargs", {}))
    base = build_from_spec(spec["base"], num_classes)
    if "svd_ranks" in spec:
        from nas_kws.quant.svd import apply_ranks

        model = apply_ranks(base, spec["svd_ranks"])
    elif "quant" in spec:
        from nas_kws.quant.qat import QuantSpec, quant_twin

        model = quant_twin(base, QuantSpec.from_dict(spec["quant"], where="model_spec.quant"))
    else:
        raise ValueError(f"model spec: a derived spec needs 'svd_ranks' or 'quant' beside 'base', "
                         f"got keys {sorted(spec)}")
    model.spec = spec
    return model


def is_quantized(spec: dict[str, Any]) -> bool:
    return "quant" in spec


def base_name(spec: dict[str, Any]) -> str:
    """The registered name (or genotype name) at the root of a spec."""
    while "base" in spec:
        spec = spec["base"]
    if "genotype" in spec:
        return str(spec["genotype"].get("name", "genotype"))
    return str(spec.get("name", "?"))


def load_run_model(run_dir: str | Path, which: str = "best") -> tuple[nn.Module, FeatureConfig, list[str]]:
    """(model in eval mode on CPU, its features, its class names) from any run directory,
    plain or derived."""
    state = RunDir(run_dir).load_checkpoint(which)
    classes = list(state["classes"])
    model = build_from_spec(state["model_spec"], len(classes))
    model.load_state_dict(state["model"])
    features = FeatureConfig.from_dict(state["features"])
    model.feature_config = features
    return model.eval(), features, classes
