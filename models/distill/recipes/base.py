"""What every distillation recipe shares: the recipe registry (``register_recipe`` /
``get_recipe`` / ``list_recipes``), the `RecipeResult` a recipe returns, a torch thread-count
context and the keep-the-best-weights evaluator. The recipes are one file each beside this one."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from edgesdk.models.distill.trainer import DistillConfig
from edgesdk.runtime.registry import Registry, RegistryError

# ------------------------------------------------------------------------------------------ registry

def _check_recipe(name, fn) -> None:
    if not callable(fn):
        raise TypeError(f"@register_recipe({name!r}) decorates functions, got {fn!r}")


RECIPES: Registry[Callable] = Registry("recipe", check=_check_recipe, name_attr="recipe_name")
UnknownRecipeError = RegistryError  # an unregistered recipe name (a KeyError, ValueError and ConfigError)


def register_recipe(name: str):
    """Decorator: ``@register_recipe("lighthgnn")`` on a function returning a `RecipeResult`.
    A name taken by another function is rejected."""
    return RECIPES.register(name)


def list_recipes() -> list[str]:
    """Registered recipe names, sorted."""
    return RECIPES.names()


def get_recipe(name: str) -> Callable:
    """The recipe function registered under ``name``."""
    return RECIPES.get(name)


@dataclass
class RecipeResult:
    """What a recipe returns: the trained ``student`` (eval mode), the ``teacher`` it used,
    ``metrics`` (teacher and student scores), ``timings`` (seconds per phase), the
    ``config`` (DistillConfig) and ``info`` (recipe-specific extras)."""

    student: nn.Module
    teacher: nn.Module | None
    metrics: dict
    config: DistillConfig
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def num_threads(threads: int | None):
    """Context: torch intra-op threads for training (restored afterwards)."""
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)
    return _Ctx()


class BestState:
    """``eval_fn`` for the trainer that keeps the student's weights at its best ``metric``."""

    def __init__(self, score: Callable[[nn.Module], dict], metric: str):
        self.score, self.metric = score, metric
        self.best, self.best_step, self.state, self.calls = -math.inf, 0, None, 0

    def __call__(self, student: nn.Module) -> dict:
        self.calls += 1
        m = self.score(student)
        if m[self.metric] > self.best:
            self.best, self.best_step = m[self.metric], self.calls
            self.state = copy.deepcopy(student.state_dict())
        return m

    def restore(self, student: nn.Module) -> None:
        if self.state is not None:
            student.load_state_dict(self.state)



