"""Loaders for what users name on the command line and in pipeline configs: a model
(``file.pt2`` or ``module:function`` / ``path/file.py:function`` returning ``(model,
example_inputs)``) and any object (``module:function`` returning it).

Example::

    from sdk.loaders import load_model_spec, load_object
    model, example_inputs, stem = load_model_spec("make_model.py:build")
    data = load_object("mypkg.data:calibration", "calibration.data")
"""

from __future__ import annotations

import sys
from pathlib import Path

from runtime.errors import ConfigError


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
            s = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(s)
            sys.path.insert(0, str(path.parent.resolve()))
            s.loader.exec_module(module)
        else:
            sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(mod_name)
    except ImportError as e:
        raise ConfigError(f"{what}: cannot import {mod_name!r}: {e}") from None
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise ConfigError(f"{what}: {mod_name} has no callable {fn_name!r}")
    return fn()
