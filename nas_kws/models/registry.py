"""A timm-like model registry: every model is built by name (or from a genotype file) and
carries the features it expects and a spec that rebuilds it from a checkpoint."""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from nas_kws.features import FeatureConfig

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class _Entry:
    fn: ModelFn
    features: FeatureConfig


_MODELS: dict[str, _Entry] = {}


def register_model(fn_or_name: ModelFn | str | None = None, *,
                   features: FeatureConfig | None = None) -> Any:
    """Register `fn(num_classes, features, **kw) -> nn.Module` under its function name or an
    explicit one. Use as `@register_model`, `@register_model("bcresnet1.5")` or
    `@register_model(features=FeatureConfig.dscnn())`; default features are 40 log-mels."""
    def decorate(fn: ModelFn, name: str | None) -> ModelFn:
        name = name or fn.__name__
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = _Entry(fn, features or FeatureConfig.logmel())
        return fn

    if callable(fn_or_name):
        return decorate(fn_or_name, None)
    return lambda fn: decorate(fn, fn_or_name)


def list_models() -> list[str]:
    return sorted(_MODELS)


def _entry(name: str) -> _Entry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected a .yaml genotype file or one of "
                         f"{list_models()}")
    return _MODELS[name]


def default_features(name: str) -> FeatureConfig:
    return _entry(name).features


def _as_features(features: FeatureConfig | dict | None, name: str) -> FeatureConfig:
    """A dict overrides only the keys it names (e.g. {"n_mfcc": 20}) on the model's defaults."""
    if features is None:
        return default_features(name)
    if isinstance(features, FeatureConfig):
        return features
    return FeatureConfig.from_dict({**default_features(name).to_dict(), **features},
                                   where=f"{name} features")


def _is_genotype_path(name: str | Path) -> bool:
    return str(name).endswith((".yaml", ".yml"))


def create_model(name_or_genotype: str | Path, num_classes: int | None = None,
                 features: FeatureConfig | dict | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered model (or the net a genotype .yaml describes). The result has
    `.feature_config`, `.num_classes` and `.spec` (num_classes defaults to 12 for registered
    models and to the genotype's own for a genotype file), and
    `create_model(spec["name"], num_classes=..., **spec["kwargs"])` rebuilds it."""
    if _is_genotype_path(name_or_genotype):
        path = Path(name_or_genotype)
        if not path.is_file():
            raise FileNotFoundError(f"genotype file not found: {path}")
        from nas_kws.models.genotype import build_from_genotype, load_genotype

        if features is not None:
            kwargs["features"] = features
        return build_from_genotype(load_genotype(path), num_classes=num_classes, **kwargs)

    name = str(name_or_genotype)
    num_classes = 12 if num_classes is None else num_classes
    entry = _entry(name)
    _check_kwargs(name, entry.fn, kwargs)
    feature_config = _as_features(features, name)
    model = entry.fn(num_classes=num_classes, features=feature_config, **kwargs)
    model.feature_config = feature_config
    model.num_classes = num_classes
    model.spec = {"name": name, "kwargs": {"features": feature_config.to_dict(), **kwargs}}
    return model


def _check_kwargs(name: str, fn: ModelFn, kwargs: dict[str, Any]) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [p for p in params if p not in ("num_classes", "features")]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(f"model {name!r}: unknown argument(s) {unknown}; accepted: {accepted}")
