"""Tiny KWS nets, built by name or from a genotype.yaml with `create_model`. Imports run one way:
layers/checks/registry -> families (bcresnet, dscnn, mbconv) -> genotype -> proxyless_kws ->
factory -> this package."""
from nas_kws.models.factory import create_model
from nas_kws.models.registry import default_features, list_models, register_model

__all__ = ["create_model", "default_features", "list_models", "register_model"]
