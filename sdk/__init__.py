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

from converters import Artifact, Target, convert
from converters import targets as _targets
from runtime import load, profile
from sdk import errors
from sdk.distill import distill
from sdk.pipeline import pipeline  # noqa: E402  (sdk.pipeline(config) -> PipelineResult)


def targets() -> list[Target]:
    """Every registered target: name, device, format, quantization, runs_here, why_not."""
    return _targets()


__all__ = ["targets", "convert", "distill", "pipeline", "load", "profile", "Artifact", "Target", "errors"]
__version__ = "0.1.0"
