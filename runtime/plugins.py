"""Third-party targets and runtime backends, loaded by name: environment variables and
entry-point groups, one pair per kind of plug-in.

A plug-in is a module that registers itself when imported. Adding a target is two new files:
a converter (`converters.registry.register_target`), which needs torch, and a runtime backend
(`runtime.backends.register_backend`), which must not, so that an app shipping the runtime
alone can open the target's artifacts. Each is loaded one of two ways::

    # pyproject.toml of the package that ships them
    [project.entry-points."edgesdk.targets"]
    my-npu = "my_package.my_npu_converter"
    [project.entry-points."edgesdk.backends"]
    my-npu = "my_package.my_npu_backend"

    # or, without packaging: module names or .py files, separated by os.pathsep (":" on Linux)
    EDGESDK_TARGETS=my_package.my_npu_converter EDGESDK_BACKENDS=/path/to/my_npu_backend.py edgesdk targets

Each kind loads once per process, on the first look-up in its registry (subprocesses inherit
the variables). A plug-in that fails to import is a ConfigError naming it and where it came
from. Standard library only: this module is part of the embeddable runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys
from importlib import metadata
from pathlib import Path

from edgesdk.runtime.errors import ConfigError

KINDS = {"targets": ("EDGESDK_TARGETS", "edgesdk.targets"), "backends": ("EDGESDK_BACKENDS", "edgesdk.backends")}
_loaded: dict[str, dict[str, str]] = {kind: {} for kind in KINDS}  # spec -> where it came from
_done: set[str] = set()


def requested(kind: str) -> list[tuple[str, str]]:
    """``(spec, origin)`` for every plug-in of ``kind`` this process is asked to load, entry points first."""
    if kind not in KINDS:
        raise ConfigError(f"plug-in kind {kind!r} is not one of {', '.join(KINDS)}")
    env, group = KINDS[kind]
    out = [(ep.value, f"entry point {ep.name!r} of group {group!r}") for ep in metadata.entry_points(group=group)]
    out += [(s.strip(), env) for s in os.environ.get(env, "").split(os.pathsep) if s.strip()]
    return out


def _import(spec: str, kind: str):
    if not spec.endswith(".py"):
        return importlib.import_module(spec.split(":", 1)[0])  # "pkg.mod", or an entry point's "pkg.mod:attr"
    path = Path(spec).expanduser().resolve()
    name = f"edgesdk_{kind}_plugin_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}"
    if name in sys.modules:
        return sys.modules[name]
    if not path.is_file():
        raise FileNotFoundError(f"no such file {path}")
    mod_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(mod_spec)
    sys.modules[name] = module  # registered under this name: a backend may name its own module
    try:
        mod_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_plugins(kind: str, *, force: bool = False) -> dict[str, str]:
    """Import every requested plug-in of ``kind`` ("targets" | "backends") not imported yet;
    returns ``{spec: origin}`` of those loaded. The registries call this on their first look-up;
    ``force`` re-reads the variable (tests)."""
    if kind in _done and not force:
        return dict(_loaded[kind])
    _done.add(kind)  # first: a plug-in that looks a name up while importing must not recurse
    for spec, origin in requested(kind):
        if spec in _loaded[kind]:
            continue
        try:
            _import(spec, kind)
        except Exception as e:
            _done.discard(kind)  # the next look-up says it again
            raise ConfigError(f"{kind[:-1]} plug-in {spec!r} (from {origin}) failed to import: {type(e).__name__}: "
                              f"{e}; fix: install it, correct the name (module names or .py files separated by "
                              f"{os.pathsep!r}), or remove it from {origin}") from e
        _loaded[kind][spec] = origin
    return dict(_loaded[kind])
