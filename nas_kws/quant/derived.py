"""Nets derived from a trained net, saved as specs that rebuild them, like any model spec:

    {"base": <spec of the net it came from>, "svd_ranks": {layer: rank}}   SVD-compressed
    {"base": <spec of the net it came from>, "quant": QuantSpec dict}      Brevitas twin

Specs nest (a quantized compressed net has an SVD spec as its base), so every derived run
directory is an ordinary run directory whose checkpoint `model_spec` rebuilds the net
(`nas_kws.runs.model_from_spec`).
"""
from __future__ import annotations

from typing import Any


def is_quantized(spec: dict[str, Any]) -> bool:
    return "quant" in spec


def base_name(spec: dict[str, Any]) -> str:
    """The registered name (or genotype name) at the root of a spec."""
    while "base" in spec:
        spec = spec["base"]
    if "genotype" in spec:
        return str(spec["genotype"].get("name", "genotype"))
    return str(spec.get("name", "?"))
