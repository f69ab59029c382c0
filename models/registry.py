"""Models registered by decorator and created by name (timm-style)."""

from __future__ import annotations

from typing import Callable

from edgesdk.runtime.registry import Registry, RegistryError

MODELS: Registry[Callable] = Registry("model")
UnknownModelError = RegistryError  # a KeyError, ValueError and ConfigError


def register_model(name: str):
    """Decorator: ``@register_model("mlp")`` on a factory ``fn(**cfg) -> nn.Module``."""
    return MODELS.register(name)


def list_models() -> list[str]:
    return MODELS.names()


def get_model(name: str) -> Callable:
    """The factory registered under ``name`` (RegistryError lists the names if there is none)."""
    return MODELS.get(name)


def create(name: str, **cfg):
    """Build a registered model: ``models.create("mlp", in_dim=64, out_dim=10)``."""
    return MODELS.get(name)(**cfg)
