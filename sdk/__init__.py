"""Edge SDK: make compact models, convert them per target, run and profile them.

Example::

    import torch, sdk, runtime
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    x = torch.randn(1, 64)
    for t in sdk.targets():
        print(t.name, t.device, t.format, t.runs_here, t.why_not)
    art = sdk.convert(model, (x,), target="onnx-cpu", out_dir="out")
    rep = runtime.profile(art.path, iters=200)
    print(rep.table())
"""

import functools

from converters import Artifact, Target
from converters import convert as _convert
from converters import targets as _targets
from runtime import load, profile
from sdk import errors
from sdk.distill import distill
from sdk.pipeline import pipeline  # noqa: E402  (sdk.pipeline(config) -> PipelineResult)


@functools.wraps(_convert)
def convert(model, example_inputs, target, *, quantize=None, **options) -> Artifact:
    # target="auto" / quantize="auto": convert to every candidate, gate, profile, return the
    # fastest that passed (sdk/auto.py); everything else is converters.convert unchanged.
    if target == "auto" or quantize == "auto":
        from sdk.auto import convert_auto
        return convert_auto(model, example_inputs, target, quantize=quantize, **options)
    return _convert(model, example_inputs, target, quantize="fp32" if quantize is None else quantize, **options)


convert.__doc__ = (_convert.__doc__ or "") + """
    ``target="auto"`` (optionally ``device="cpu" | "npu" | "gpu"``) converts to every target that
    runs here with each of its schemes, and ``quantize="auto"`` to every scheme of one target;
    each candidate is gated and profiled (isolated, best thread count) and the fastest that
    passed is returned as an `sdk.auto.AutoArtifact` whose ``selection`` lists every candidate
    and why it lost (see `sdk.auto`).
"""


def targets() -> list[Target]:
    """Every registered target: name, device, format, quantization, runs_here, why_not."""
    return _targets()


__all__ = ["targets", "convert", "distill", "pipeline", "load", "profile", "Artifact", "Target", "errors"]
__version__ = "0.1.0"
