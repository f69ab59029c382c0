"""Edge SDK: make compact models, convert them per target, run and profile them.

Example::

    import torch, edgesdk
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    x = torch.randn(1, 64)
    for t in edgesdk.targets():
        print(t.name, t.device, t.format, t.runs_here, t.why_not)
    art = edgesdk.convert(model, (x,), target="onnx-cpu", out_dir="out")
    rep = edgesdk.profile(art.path, iters=200)
    print(rep.table())

The public names load their layer on first use, so ``from edgesdk import runtime`` (the
torch-free runtime) never imports torch or the converters.
"""

import importlib as _importlib
import sys as _sys
import types as _types

# A split install (edge-sdk-runtime in another site directory) still finds edgesdk.runtime.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)

__version__ = "0.1.0"

# public name -> (module, attribute); resolved on first access
_LAZY = {
    "Artifact": ("edgesdk.converters", "Artifact"),
    "Target": ("edgesdk.converters", "Target"),
    "load": ("edgesdk.runtime", "load"),
    "profile": ("edgesdk.runtime", "profile"),
    "distill": ("edgesdk.distill", "distill"),
    "pipeline": ("edgesdk.pipeline", "pipeline"),
    "errors": ("edgesdk.errors", None),
}
# `edgesdk.distill` and `edgesdk.pipeline` are functions named like their submodules: importing
# the submodule must not replace the function (the import system sets the parent's attribute).
_FUNCTIONS_OVER_MODULES = frozenset({"distill", "pipeline"})


def convert(model, example_inputs, target, *, quantize=None, **options):
    """`edgesdk.converters.convert` (its documentation lists every option), plus ``target="auto"``
    (optionally ``device="cpu" | "npu" | "gpu"``), which converts to every target that runs here
    with each of its schemes, and ``quantize="auto"``, every scheme of one target. Each candidate
    is gated and profiled (isolated, best thread count) and the fastest that passed comes back as
    an `edgesdk.auto.AutoArtifact` whose ``selection`` lists every candidate and why it lost."""
    if target == "auto" or quantize == "auto":
        from edgesdk.auto import convert_auto
        return convert_auto(model, example_inputs, target, quantize=quantize, **options)
    return _importlib.import_module("edgesdk.converters").convert(
        model, example_inputs, target, quantize="fp32" if quantize is None else quantize, **options)


def targets():
    """Every registered target: name, device, format, quantization, runs_here, why_not."""
    return _importlib.import_module("edgesdk.converters").targets()


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'edgesdk' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = _importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value  # cached: later lookups bypass __getattr__
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _Package(_types.ModuleType):
    def __setattr__(self, name, value):
        if name in _FUNCTIONS_OVER_MODULES and isinstance(value, _types.ModuleType):
            return  # the submodule stays importable through sys.modules
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package

__all__ = ["targets", "convert", "distill", "pipeline", "load", "profile", "Artifact", "Target", "errors"]
