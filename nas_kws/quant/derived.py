"""Nets derived from a trained net, saved as specs that rebuild them, like any model spec:

    {"base": <spec of the net it came from>, "svd_ranks": {layer: rank}}   SVD-compressed
    {"base": <spec of the net it came from>, "quant": QuantSpec dict}      Brevitas twin

Specs nest (a quantized compressed net has an SVD spec as its base), so every derived run
directory is an ordinary run directory whose checkpoint `model_spec` rebuilds the net
(`nas_kws.rebuild.model_from_spec`).
"""
from __future__ import annotations

import os
from typing import Any

from torch import nn

from nas_kws.config import ExperimentConfig, to_dict
from nas_kws.profiling import profile_model
from nas_kws.runs import RunDir


def is_quantized(spec: dict[str, Any]) -> bool:
    return "quant" in spec


def base_name(spec: dict[str, Any]) -> str:
    """The registered name (or genotype name) at the root of a spec."""
    while "base" in spec:
        spec = spec["base"]
    if "genotype" in spec:
        return str(spec["genotype"].get("name", "genotype"))
    return str(spec.get("name", "?"))


def save_derived_run(out: str | os.PathLike, model: nn.Module, cfg: ExperimentConfig,
                     classes: list[str], metrics: dict[str, Any]) -> None:
    """A derived net that was not fine-tuned, as a finished run directory (checkpoints `best`
    and `last` both hold it), so every command reads it like a trained run."""
    run = RunDir(out)
    run.write_setup(to_dict(cfg), model.feature_config, classes)
    state = {"model": model.state_dict(), "model_spec": model.spec, "classes": classes,
             "features": model.feature_config.to_dict(), "epoch": -1, "best_valid_acc": None,
             "config": to_dict(cfg)}
    run.save_checkpoint("best", state)
    run.save_checkpoint("last", state)
    prof = profile_model(model)
    run.write_metrics({"model": model.spec, "classes": classes, "params": prof.params,
                       "macs": prof.macs, **metrics})
