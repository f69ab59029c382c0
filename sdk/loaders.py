"""Loaders for what users name on the command line and in pipeline configs: a model
(``file.pt2`` or ``module:function`` / ``path/file.py:function`` returning ``(model,
example_inputs)``) and any object (``module:function`` returning it).

Example::

    from edgesdk.loaders import load_model_spec, load_object
    model, example_inputs, stem = load_model_spec("make_model.py:build")
    data = load_object("mypkg.data:calibration", "calibration.data")
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from edgesdk.runtime.errors import ConfigError

# Files loaded by path (``file.py:fn``), as module name -> absolute path: worker processes
# import the same files under the same names (`import_user_modules`), so the user's classes
# travel by reference and export exactly as they do here (their source file and lines go into
# ONNX stack-trace metadata).
USER_MODULES: dict[str, str] = {}


def load_model_spec(spec: str):
    """`file.pt2` (torch.export.save) or `module:function` / `path/file.py:function`.

    The function returns ``(model, example_inputs)``; example_inputs may be None for
    models implementing ``edge_programs()``.
    """
    import torch

    if spec.endswith(".pt2"):
        p = Path(spec)
        if not p.is_file():
            raise ConfigError(f"{spec}: no such file (expected a torch.export.save()d .pt2)")
        try:
            ep = torch.export.load(str(p))
        except Exception as e:
            raise ConfigError(f"{spec}: not a loadable torch.export program: {e}") from None
        args = ep.example_inputs[0] if ep.example_inputs else None
        if not args:
            raise ConfigError(f"{spec}: the saved program carries no example inputs; re-save it from "
                              "torch.export.export(model, example_args)")
        return ep.module(), tuple(args), p.stem
    if ":" not in spec:
        raise ConfigError(f"model {spec!r}: expected FILE.pt2 or MODULE:FUNCTION (e.g. mypkg.models:build "
                          "or ./make_model.py:build) returning (model, example_inputs)")
    fn_name = spec.rsplit(":", 1)[1]
    result = load_object(spec, "model")
    if not (isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], torch.nn.Module)):
        raise ConfigError(f"{spec} must return (model, example_inputs), got {type(result).__name__}")
    model, example = result
    return model, example, fn_name


def load_object(spec: str, what: str):
    """`module:function` or `path/file.py:function` -> the function's return value."""
    import importlib
    import importlib.util
    if ":" not in spec:
        raise ConfigError(f"{what} {spec!r}: expected MODULE:FUNCTION or path/file.py:FUNCTION")
    mod_name, fn_name = spec.rsplit(":", 1)
    try:
        if mod_name.endswith(".py") or "/" in mod_name:
            path = Path(mod_name)
            if not path.is_file():
                raise ConfigError(f"{what}: {mod_name}: no such file")
            module = _import_file(path)
        else:
            sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import {mod_name!r}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{what}: {mod_name} has no callable {fn_name!r}")
    return fn()


def _import_file(path: Path):
    """Import ``path`` as module ``path.stem`` and register it (its folder joins ``sys.path``);
    reuse it when that name already holds the same, unchanged file. A name taken by another
    module: loaded unregistered (its classes then travel by value)."""
    name, real = path.stem, str(path.resolve())
    mtime = path.stat().st_mtime
    have = sys.modules.get(name)
    same = have is not None and getattr(have, "__file__", None) and str(Path(have.__file__).resolve()) == real
    if same and getattr(have, "__edgesdk_mtime__", mtime) == mtime:
        USER_MODULES[name] = real
        return have
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent.resolve()) not in sys.path:
        sys.path.insert(0, str(path.parent.resolve()))
    register = have is None or same
    if register:
        module.__edgesdk_mtime__ = mtime
        sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        if register:
            sys.modules.pop(name, None)
        raise
    if register:
        USER_MODULES[name] = real
    return module


def user_module_sources() -> dict[str, tuple[str, bytes]]:
    """The registered user files, name -> (path, content): what a worker elsewhere needs."""
    return {name: (path, Path(path).read_bytes()) for name, path in USER_MODULES.items() if Path(path).is_file()}


def import_user_modules(mods: dict[str, tuple[str, bytes]], spill_dir: str | None = None) -> None:
    """In a worker: import each user file under its name, from its path when this machine has
    the same file, else from a copy written under ``spill_dir`` (another host)."""
    import hashlib
    import tempfile
    for name, (path, content) in mods.items():
        have = sys.modules.get(name)
        if have is not None and getattr(have, "__file__", None) and Path(have.__file__).is_file() \
                and Path(have.__file__).read_bytes() == content:
            continue
        p = Path(path)
        if not (p.is_file() and p.read_bytes() == content):
            d = Path(spill_dir or tempfile.gettempdir()) / "edgesdk-user-modules" / hashlib.sha256(content).hexdigest()[:16]
            d.mkdir(parents=True, exist_ok=True)
            p = d / f"{name}.py"
            if not p.is_file():
                p.write_bytes(content)
        spec = importlib.util.spec_from_file_location(name, p)
        module = importlib.util.module_from_spec(spec)
        if str(p.parent) not in sys.path:
            sys.path.insert(0, str(p.parent))
        sys.modules[name] = module
        spec.loader.exec_module(module)

