"""The one plug-in registry behind models, losses, recipes, student families and targets."""

import pytest

from edgesdk import families
from edgesdk.converters import registry as targets
from edgesdk.errors import ConfigError
from edgesdk.models import registry as models
from edgesdk.models.distill import losses, recipes
from edgesdk.runtime.registry import Registry, RegistryError


def _callable_only(name, obj):
    if not callable(obj):
        raise TypeError(f"{name}: not callable")


def test_register_get_list_and_errors():
    reg = Registry("color", check=_callable_only)
    red = reg.register("red")(lambda: 1)
    assert reg.get("red") is red and reg.names() == ["red"] and "red" in reg and len(reg) == 1
    assert reg.register("red", red) is red  # the same object again is fine
    with pytest.raises(ValueError, match="color 'red' is already registered by .*choose another name"):
        reg.register("red", lambda: 2)
    with pytest.raises(TypeError):
        reg.register("blue", 3)
    for exc in (RegistryError, ConfigError, KeyError, ValueError):
        with pytest.raises(exc, match="Unknown color 'blue'. Available: red"):
            reg.get("blue")
    assert str(RegistryError("no quotes")) == "no quotes"
    reg.unregister("red")
    with pytest.raises(RegistryError, match=r"Available: \(none\)"):
        reg.get("red")


@pytest.mark.parametrize("registry,kind", [
    (models.MODELS, "model"), (losses.LOSSES, "loss"), (recipes.RECIPES, "recipe"),
    (families.FAMILIES, "student family"), (targets.TARGETS, "target"),
])
def test_every_plugin_kind_uses_it(registry, kind):
    """One error type and one message shape for every kind of plug-in."""
    assert isinstance(registry, Registry) and len(registry) > 0
    with pytest.raises(RegistryError, match=f"Unknown {kind} 'nope'. Available: {registry.names()[0]}"):
        registry.get("nope")


def test_old_names_stay_aliases():
    assert losses.UnknownLossError is RegistryError and recipes.UnknownRecipeError is RegistryError
    assert models.list_models() == models.MODELS.names() and families.list_families() == families.FAMILIES.names()
    assert targets.target_names() == targets.TARGETS.names() and recipes.list_recipes() == recipes.RECIPES.names()
