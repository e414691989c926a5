"""Model families register themselves on import; build them with `create_model(name)`."""
from nas_kws.models.registry import create_model, default_features, list_models, register_model
from nas_kws.models import bcresnet, dscnn, mbconv  # noqa: F401  (registers the families)

__all__ = ["create_model", "default_features", "list_models", "register_model"]
