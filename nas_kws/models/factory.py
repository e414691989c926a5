"""`create_model`: builds any net, by registered name or from a genotype.yaml, and stamps the
features, class count and rebuild spec on it. The top of models/: it imports the registry, the
genotype and every family (which registers them), and nothing below imports it."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from torch import nn

from nas_kws.features import FeatureConfig
from nas_kws.models import bcresnet, dscnn, proxyless_kws  # noqa: F401  (registers the families)
from nas_kws.models.genotype import build_from_genotype, load_genotype
from nas_kws.models.registry import ModelFn, model_entry


def create_model(name_or_genotype: str | Path, num_classes: int | None = None,
                 features: FeatureConfig | dict | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model (or the net a genotype .yaml describes). The result has
    `.feature_config`, `.num_classes` and `.spec` (num_classes defaults to 12 for registered
    models and to the genotype's own for a genotype file), and
    `create_model(spec["name"], num_classes=..., **spec["kwargs"])` rebuilds it."""
    if str(name_or_genotype).endswith((".yaml", ".yml")):
        if features is not None:
            kwargs["features"] = features
        return build_from_genotype(load_genotype(name_or_genotype), num_classes=num_classes,
                                   **kwargs)

    name = str(name_or_genotype)
    try:
        entry = model_entry(name)
    except ValueError as err:
        raise ValueError(f"{err}, or a .yaml genotype file") from None
    num_classes = 12 if num_classes is None else num_classes
    _check_kwargs(name, entry.fn, kwargs)
    feature_config = _as_features(features, entry.features, name)
    model = entry.fn(num_classes=num_classes, features=feature_config, **kwargs)
    model.feature_config = feature_config
    model.num_classes = num_classes
    model.spec = {"name": name, "kwargs": {"features": feature_config.to_dict(), **kwargs}}
    return model


def _as_features(features: FeatureConfig | dict | None, default: FeatureConfig,
                 name: str) -> FeatureConfig:
    """A dict overrides only the keys it names (e.g. {"n_mfcc": 20}) on the model's defaults."""
    if features is None:
        return default
    if isinstance(features, FeatureConfig):
        return features
    return FeatureConfig.from_dict({**default.to_dict(), **features}, where=f"{name} features")


def _check_kwargs(name: str, fn: ModelFn, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("num_classes", "features")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown argument(s) {unknown}; accepted: {accepted}")
