"""Third-party targets and runtime backends, loaded by name: the ``EDGESDK_PLUGINS`` environment
variable and the ``edgesdk.plugins`` entry-point group.

A plug-in is a module that registers itself when imported (`converters.registry.register_target`,
`runtime.backends.register_backend`). Adding a target is two new files, a converter and a backend,
and one of these two ways to load them::

    # pyproject.toml of the package that ships them
    [project.entry-points."edgesdk.plugins"]
    my-npu = "my_package.my_npu_converter"

    # or, without packaging: module names or .py files, separated by os.pathsep (":" on Linux)
    EDGESDK_PLUGINS=my_package.my_npu_converter:/path/to/my_npu_backend.py edgesdk targets

They load once, on the first look-up in either registry, in every process (subprocesses inherit
the variable). A plug-in that fails to import is a ConfigError naming it and where it came from.
Standard library only: this module is part of the embeddable runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from importlib import metadata
from pathlib import Path

from edgesdk.runtime.errors import ConfigError

ENV = "EDGESDK_PLUGINS"
GROUP = "edgesdk.plugins"
_loaded: dict[str, str] = {}  # spec -> where it came from ("EDGESDK_PLUGINS" | "entry point NAME")
_done = False


def requested() -> list[tuple[str, str]]:
    """``(spec, origin)`` for every plug-in this process is asked to load, entry points first."""
    out = [(ep.value, f"entry point {ep.name!r} of group {GROUP!r}") for ep in metadata.entry_points(group=GROUP)]
    out += [(s.strip(), ENV) for s in os.environ.get(ENV, "").split(os.pathsep) if s.strip()]
    return out


def _import(spec: str):
    if spec.endswith(".py"):  # a file: imported under its stem, once
        path = Path(spec).expanduser().resolve()
        name = f"edgesdk_plugin_{path.stem}"
        if name in sys.modules:
            return sys.modules[name]
        if not path.is_file():
            raise FileNotFoundError(f"no such file {path}")
        mod_spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module
    return importlib.import_module(spec.split(":", 1)[0])  # "pkg.mod" or an entry point's "pkg.mod:attr"


def load_plugins(*, force: bool = False) -> dict[str, str]:
    """Import every requested plug-in not imported yet; returns ``{spec: origin}`` of all loaded.
    Registries call this on their first look-up; ``force`` re-reads the variable (tests)."""
    global _done
    if _done and not force:
        return dict(_loaded)
    _done = True  # set first: a plug-in that looks a target up while importing must not recurse
    for spec, origin in requested():
        if spec in _loaded:
            continue
        try:
            _import(spec)
        except Exception as e:
            _done = False
            raise ConfigError(f"plug-in {spec!r} (from {origin}) failed to import: {type(e).__name__}: {e}; fix: "
                              f"install it, correct the name (module names or .py files separated by "
                              f"{os.pathsep!r}), or remove it from {origin}") from e
        _loaded[spec] = origin
    return dict(_loaded)
