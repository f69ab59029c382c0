"""Which int8 scheme to deploy first, per target and kind of model.

The per-target quantization recipes live in each target's converter (one line per decision,
citing the measurement); this module only answers "which scheme for this model here", from the
``recommended_by_kind`` table each converter keeps (``benchmarks/int8_recipes.py`` measures it).
`quantize="auto"` (`edgesdk.auto`) still times every scheme and confirms or overrules the guess.

Example::

    import torch
    from edgesdk.converters.recipes import model_kind, recommended_scheme
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    model_kind(cnn)                          # 'conv'
    recommended_scheme("onnx-cpu", cnn)      # 'int8-static'
"""

from __future__ import annotations

from torch import nn

from edgesdk.converters.registry import get_converter
from edgesdk.runtime.errors import ConfigError

KINDS = ("conv", "transformer", "mlp")
# the ``int8_ops`` option of the CPU targets: which ops their int8-static recipe quantizes
INT8_OPS = ("compute", "all")


def int8_ops(options: dict) -> str:
    """The ``int8_ops`` option, validated: ``"compute"`` (default; each target's tuned op list) or
    ``"all"`` (every op type the quantization tool supports: the untuned recipe)."""
    v = options.get("int8_ops", "compute")
    if v not in INT8_OPS:
        raise ConfigError(f"int8_ops must be one of {', '.join(map(repr, INT8_OPS))}, got {v!r}; 'compute' "
                          "quantizes the ops with fast int8 kernels only, 'all' every op the tool can")
    return v


def model_kind(module: nn.Module) -> str:
    """``"conv"`` when convolutions hold most of the Linear/Conv weights, ``"transformer"`` when
    the model has attention (a module whose class name mentions attention, or
    ``nn.MultiheadAttention``), else ``"mlp"``."""
    conv = lin = 0
    attention = False
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            conv += m.weight.numel()
        elif isinstance(m, nn.Linear):
            lin += m.weight.numel()
        if isinstance(m, nn.MultiheadAttention) or "attention" in type(m).__name__.lower():
            attention = True
    if conv and conv >= lin:
        return "conv"
    return "transformer" if attention else "mlp"


def recommended_scheme(target: str, module: nn.Module | None = None) -> str | None:
    """The scheme to try first for ``module`` on ``target``: the converter's per-kind choice, or
    its general ``recommended`` when it has none for this kind (or no module is given)."""
    conv = get_converter(target)
    if module is not None:
        rec = conv.recommended_by_kind.get(model_kind(module))
        if rec:
            return rec
    return conv.recommended
