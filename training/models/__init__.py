"""Model zoo: CIFAR-sized classifiers, built by name.

Each model module registers a keyword-only builder with :func:`register_model`;
:func:`get_model` and :func:`list_models` read the registry. The registry is
filled once at import and read-only afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["get_model", "get_model_builder", "list_models", "register_model"]

ModelBuilder = Callable[..., nn.Module]
_BUILDERS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Register ``builder`` under ``name``; a duplicate name is an error."""

    def wrapper(builder: ModelBuilder) -> ModelBuilder:
        if name in _BUILDERS:
            raise ValueError(f"A model named {name!r} is already registered.")
        _BUILDERS[name] = builder
        return builder

    return wrapper


def list_models() -> list[str]:
    """Names accepted by :func:`get_model`, sorted."""
    return sorted(_BUILDERS)


def get_model_builder(name: str) -> ModelBuilder:
    try:
        return _BUILDERS[name]
    except KeyError:
        raise KeyError(
            f"Unknown model {name!r}; known models: {', '.join(list_models())}. "
            "Register a new one with dse.training.models.register_model."
        ) from None


def get_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` with keyword arguments ``kwargs``."""
    return get_model_builder(name)(**kwargs)


# Importing the modules fills the registry.
from . import mobilenet_v2, recurrent_classifier, tiny_cnn  # noqa: E402,F401
