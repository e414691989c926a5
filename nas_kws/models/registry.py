"""Model names -> constructors, like timm's `_registry.py`. The families register their variants
here and `models.factory` looks them up; a leaf, so registering never imports another family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from nas_kws.features import FeatureConfig

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelEntry:
    """A constructor `fn(num_classes, features, **kw)` and the features its model expects."""
    fn: ModelFn
    features: FeatureConfig


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn_or_name: ModelFn | str | None = None, *,
                   features: FeatureConfig | None = None) -> Any:
    """Register `fn(num_classes, features, **kw) -> nn.Module` under its function name or an
    explicit one. Use as `@register_model`, `@register_model("bcresnet1.5")` or
    `@register_model(features=FeatureConfig.dscnn())`; default features are 40 log-mels."""
    def decorate(fn: ModelFn, name: str | None) -> ModelFn:
        name = name or fn.__name__
        if name in _MODELS:
            raise ValueError(f"model name {name!r} is already registered")
        _MODELS[name] = ModelEntry(fn, features or FeatureConfig.logmel())
        return fn

    if callable(fn_or_name):
        return decorate(fn_or_name, None)
    return lambda fn: decorate(fn, fn_or_name)


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; expected one of {list_models()}")
    return _MODELS[name]


def default_features(name: str) -> FeatureConfig:
    return model_entry(name).features
