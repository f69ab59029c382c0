"""Which int8 scheme to deploy first, per target and kind of model.

The per-target quantization recipes live in each target's converter (one line per decision,
citing the measurement); this module only answers "which scheme for this model here", from the
``recommended_by_kind`` table each converter keeps (``benchmarks/int8_recipes.py`` measures it) and
its ``fp32_for_float_activation_convs`` (CNNs with HardSwish / SiLU / GELU, whose int8 measured
slower than fp32 there) and ``fp32_for_convs_without_int8_dot`` (a CNN without attention, where the deployment CPU has
no int8 dot-product instructions: `runtime.machine.int8_dot_product`, ``EDGESDK_CPU_INT8_DOT``) and
``fp32_for_inverted_residuals_without_int8_dot`` (the same, for MobileNetV2-style CNNs: `inverted_residuals`).
`quantize="auto"` (`edgesdk.auto`) still times every scheme and confirms or overrules the guess.

Example::

    import torch
    from edgesdk.converters.recipes import model_kind, recommended_scheme
    cnn = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 8, 3))
    model_kind(cnn)                          # 'conv'
    recommended_scheme("onnx-cpu", cnn)      # 'int8-static'
    hs = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Hardswish(), torch.nn.Conv2d(8, 8, 3))
    recommendation("onnx-cpu", hs)           # ('fp32', 'onnx-cpu: ... float activations ...')
"""

from __future__ import annotations

from torch import nn

from edgesdk.converters.registry import get_converter
from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.machine import int8_dot_product

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


# class-name parts of the token mixers that make a model a sequence model ("transformer" kind): attention,
# and state-space mixers (transformers' MambaMixer / Mamba2Mixer, the SDK's Mamba2Mixer). As "mlp", the
# zoo's mamba-tiny got int8-static: 1.18x fp32 on onnx-cpu, where int8-dynamic is 0.89x (ExecuTorch 0.98x vs
# 0.96x, LiteRT 0.77x vs 0.76x, gate-failed vs passed; benchmarks/recommended_vs_fp32.py --every-scheme,
# 10 interleaved rounds, cpu-exclusive, 2026-12-03 06:48)
SEQUENCE_MIXERS = ("attention", "mamba")


def model_kind(module: nn.Module) -> str:
    """``"conv"`` when convolutions hold most of the Linear/Conv weights, ``"transformer"`` when
    the model mixes tokens with attention or a state-space layer (a module whose class name mentions
    one of `SEQUENCE_MIXERS`, or ``nn.MultiheadAttention``), else ``"mlp"``."""
    conv = lin = 0
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            conv += m.weight.numel()
        elif isinstance(m, nn.Linear):
            lin += m.weight.numel()
    if conv and conv >= lin:
        return "conv"
    return "transformer" if mixes_tokens(module) else "mlp"


def mixes_tokens(module: nn.Module) -> bool:
    """The model has an attention or state-space layer (`SEQUENCE_MIXERS`, ``nn.MultiheadAttention``)."""
    return any(isinstance(m, nn.MultiheadAttention) or any(k in type(m).__name__.lower() for k in SEQUENCE_MIXERS)
               for m in module.modules())


# Conv models whose HardSwish / SiLU / GELU activations a target's int8 graph cannot fuse run them in
# float between dequantize / quantize pairs, and may run slower than fp32: a converter that
# measured so sets ``fp32_for_float_activation_convs`` to the reason (onnx-cpu: ORT per-op profile
# of the zoo artifacts, 2 threads, 2026-12-02 06:03, loaded machine: MobileNetV3-small fp32 Conv
# 17.6 ms + rest 5.1; int8 QLinearConv 11.3 + HardSigmoid/Mul/Q/DQ/ReduceMean 29.1. EfficientNet-B0
# fp32 Conv 51.8 + fused SiLU 18.2; int8 QLinearConv 35.9 + DQ/Mul/ReduceMean/Sigmoid/Q 79.6. Side
# by side on a quiet machine the int8-static p50 was 1.98x and 1.47x fp32: benchmarks/zoo.py
# profile, RESULTS.md), and fp32 is recommended there: int8 shrinks the file but runs slower.
# GELU: ORT has no int8 Gelu either; the zoo's five GELU CNNs ran int8-static 1.02-2.96x fp32 on
# onnx-cpu (ConvNeXt 1.05x, RepViT 1.02x, EdgeNeXt 1.27x, EfficientFormerV2 1.38x, FastViT 2.96x;
# benchmarks/recommended_vs_fp32.py, 10 interleaved rounds, cpu-exclusive, 2026-12-02 19:45, RESULTS.md
# "#17, sixth session").
FLOAT_ACTIVATIONS = (nn.Hardswish, nn.SiLU, nn.GELU)
# the same activations as other libraries' own module classes (timm's ``GELU`` / ``GELUTanh`` are
# ``nn.Module`` subclasses, not ``nn.GELU``), by class name
FLOAT_ACTIVATION_NAMES = ("GELU", "GELUTanh", "HardSwish")


def _float_activation(m: nn.Module) -> bool:
    return isinstance(m, FLOAT_ACTIVATIONS) or type(m).__name__ in FLOAT_ACTIVATION_NAMES


def _has_convs(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.Conv1d, nn.Conv2d)) for m in module.modules())


def _conv_with_float_activations(module: nn.Module) -> bool:
    """The model has convolutions and HardSwish, SiLU or GELU activation modules (torchvision's and
    timm's CNNs use the modules; MobileNetV3-small counts as "mlp" by weights, its head is large)."""
    return _has_convs(module) and any(_float_activation(m) for m in module.modules())


# An inverted-residual CNN (MobileNetV2, MNASNet, MobileNetV3, EfficientNet): most of its depthwise convolutions
# read a 1x1 convolution's output that is at least EXPANSION times wider than its input. Without int8 dot-product
# instructions its int8 1x1 convolutions run no faster than fp32 and its depthwise ones slower, on both XNNPACK
# targets (measurements: `executorch_xnnpack`, `litert_cpu`). The share separates the zoo's MBConv networks
# (0.91-0.94) from GhostNet (0.20), ShuffleNetV2 and the 7x7-depthwise CNNs (0-0.03), whose int8 measured faster
# there (benchmarks/inverted_residuals.py share)
INVERTED_RESIDUAL_EXPANSION = 3
INVERTED_RESIDUAL_SHARE = 0.5


def inverted_residual_counts(module: nn.Module) -> tuple[int, int]:
    """(depthwise convolutions fed by a widening 1x1, all 2-D depthwise convolutions): a depthwise one is fed
    when the convolution before it (in module order, as torchvision's and timm's blocks register them) is a 1x1
    one that widens its input at least `INVERTED_RESIDUAL_EXPANSION` times into exactly its channels."""
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    dw = fed = 0
    for prev, m in zip([None] + convs, convs):
        if m.groups > 1 and m.groups == m.in_channels:
            dw += 1
            fed += (prev is not None and prev.groups == 1 and tuple(prev.kernel_size) == (1, 1)
                    and prev.out_channels == m.in_channels
                    and prev.out_channels >= INVERTED_RESIDUAL_EXPANSION * prev.in_channels)
    return fed, dw


def inverted_residual_share(module: nn.Module) -> float:
    """The share of the model's depthwise convolutions fed by a widening 1x1 (`inverted_residual_counts`);
    0.0 without any."""
    fed, dw = inverted_residual_counts(module)
    return fed / dw if dw else 0.0


def inverted_residuals(module: nn.Module) -> bool:
    """Mostly inverted-residual blocks (`inverted_residual_share` >= `INVERTED_RESIDUAL_SHARE`)."""
    return inverted_residual_share(module) >= INVERTED_RESIDUAL_SHARE


def recommendation(target: str, module: nn.Module | None = None) -> tuple[str | None, str]:
    """``(scheme, why)``: the scheme to deploy first for ``module`` on ``target`` and the reason;
    ``"fp32"`` where the target's int8 measured slower than fp32 on this kind of model."""
    conv = get_converter(target)
    if module is None:
        return conv.recommended, f"{target}'s general recommendation (no model given)"
    kind = model_kind(module)
    if kind != "transformer" and conv.fp32_for_float_activation_convs and _conv_with_float_activations(module):
        return "fp32", f"{target}: {conv.fp32_for_float_activation_convs}"
    # a pure CNN only: wav2vec2-tiny (convolutions + attention, "conv" by weights) ran int8-static 0.90x fp32 there
    if kind != "transformer" and conv.fp32_for_convs_without_int8_dot and _has_convs(module) \
            and not mixes_tokens(module) and int8_dot_product() is False:
        return "fp32", f"{target}: {conv.fp32_for_convs_without_int8_dot}"
    if kind != "transformer" and conv.fp32_for_inverted_residuals_without_int8_dot and not mixes_tokens(module) \
            and int8_dot_product() is False and inverted_residuals(module):
        return "fp32", f"{target}: {conv.fp32_for_inverted_residuals_without_int8_dot}"
    rec = conv.recommended_by_kind.get(kind)
    if rec:
        return rec, f"{target}'s choice for {kind} models"
    return conv.recommended, f"{target}'s general recommendation"


def recommended_scheme(target: str, module: nn.Module | None = None) -> str | None:
    """The scheme to try first for ``module`` on ``target``: the converter's per-kind choice, or
    its general ``recommended`` when it has none for this kind (or no module is given); ``"fp32"``
    where int8 measured slower than fp32 on such models (`recommendation` says why)."""
    return recommendation(target, module)[0]
