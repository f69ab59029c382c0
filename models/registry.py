"""Models registered by decorator and created by name (timm-style)."""

from __future__ import annotations

from typing import Callable

_MODELS: dict[str, Callable] = {}


def register_model(name: str):
    """Decorator: ``@register_model("mlp")`` on a factory ``fn(**cfg) -> nn.Module``."""
    def deco(fn):
        if name in _MODELS and _MODELS[name] is not fn:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = fn
        return fn
    return deco


def list_models() -> list[str]:
    return sorted(_MODELS)


def create(name: str, **cfg):
    """Build a registered model: ``models.create("mlp", in_dim=64, out_dim=10)``."""
    if name not in _MODELS:
        raise KeyError(f"Unknown model {name!r}. Available: {', '.join(list_models())}")
    return _MODELS[name](**cfg)
