"""One name -> plug-in registry for every kind of plug-in: models, losses, recipes, student
families, targets and runtime backends.

Standard library only (plus our error types), so every layer may use it: it is the one module of
ours that ``models/`` imports. Each kind of plug-in keeps its own ``register_x`` / ``get_x`` /
``list_x`` functions; they are thin wrappers over a `Registry`.

Example::

    from edgesdk.runtime.registry import Registry
    COLORS = Registry("color")

    @COLORS.register("red")
    def red():
        return (255, 0, 0)

    COLORS.get("red")()        # (255, 0, 0)
    COLORS.names()             # ['red']
    COLORS.get("blue")         # RegistryError: Unknown color 'blue'. Available: red
"""

from __future__ import annotations

from typing import Callable, Generic, Iterator, TypeVar

from edgesdk.runtime.errors import ConfigError

T = TypeVar("T")


class RegistryError(ConfigError, KeyError):
    """An unregistered name. A ConfigError (so the CLI prints it as a one-line error), and a
    KeyError and ValueError for callers that catch those."""

    def __str__(self) -> str:  # KeyError would print the message in quotes
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Names -> plug-ins of one ``kind`` (used in messages: "Unknown loss 'x'").

    ``register(name)`` is a decorator (or ``register(name, obj)`` a call); registering a second,
    different object under a taken name raises ValueError naming the first. ``check`` (optional)
    validates each object and raises TypeError/ValueError for a wrong one; ``name_attr``
    (optional) is set on each object to the name it was registered under.
    """

    def __init__(self, kind: str, *, check: Callable[[str, object], None] | None = None,
                 name_attr: str | None = None):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._check = check
        self._name_attr = name_attr

    def register(self, name: str, obj: T | None = None, *, replace: bool = False):
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")

        def add(item: T) -> T:
            if self._check is not None:
                self._check(name, item)
            prev = self._items.get(name)
            if prev is not None and not replace and not _same(prev, item):
                raise ValueError(f"{self.kind} {name!r} is already registered by {_describe(prev)}; "
                                 f"choose another name (taken: {', '.join(self.names())})")
            self._items[name] = item
            if self._name_attr:
                setattr(item, self._name_attr, name)
            return item

        return add if obj is None else add(obj)

    def unregister(self, name: str) -> None:
        """Remove a name (tests that register a toy plug-in clean up with this)."""
        self._items.pop(name, None)

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._items:
            raise RegistryError(f"Unknown {self.kind} {name!r}. Available: {', '.join(self.names()) or '(none)'}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        return [(n, self._items[n]) for n in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


def _same(a, b) -> bool:
    """The same plug-in registered twice (a record that wraps a function counts as its function)."""
    if a is b:
        return True
    fa, fb = getattr(a, "fn", None), getattr(b, "fn", None)
    return fa is not None and fa is fb


def _describe(obj) -> str:
    fn = getattr(obj, "fn", obj)
    mod, qual = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{mod}.{qual}" if mod and qual else repr(obj)
