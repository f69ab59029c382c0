"""Typed quantization configs: ``convert(..., quantize=Int8Static(calibration=data, max_drop=0.01))``.

Each class is one scheme (its ``scheme`` is the string name the targets list, which stays a valid
``quantize=`` value) and carries the options of `converters.convert` that belong to it, checked
when the config is made. `convert` dispatches on the type: the config's scheme plus its options,
exactly as if they had been passed by keyword.

Example::

    import torch, edgesdk
    from edgesdk.converters.quant_configs import Int8Static
    model, x = torch.nn.Linear(16, 4), torch.randn(1, 16)
    calib = [(torch.randn(1, 16),) for _ in range(64)]
    art = edgesdk.convert(model, (x,), "onnx-cpu", quantize=Int8Static(calibration=calib, max_drop=0.05))
    art.manifest.quantization["scheme"]    # 'int8-static'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from edgesdk.runtime.errors import ConfigError


@dataclass(frozen=True)
class QuantConfig:
    """Base of the typed configs: the options every scheme shares. ``None`` leaves an option at
    `convert`'s default. ``max_drop``: the accuracy gate (a float >= 0, or "default" / "off");
    ``eval_data`` / ``metric``: what the gate scores on; ``exclude``: module names kept in float
    (targets that accept it)."""

    scheme: ClassVar[str] = ""
    max_drop: float | str | None = None
    eval_data: Any = None
    metric: Any = None
    exclude: tuple | None = None

    def __post_init__(self):
        md = self.max_drop
        if md is not None and not (isinstance(md, str) and md in ("default", "off")) and (
                isinstance(md, bool) or not isinstance(md, (int, float)) or md < 0):
            raise ConfigError(f"{type(self).__name__}(max_drop={md!r}): expected a number >= 0, 'default' or 'off'")
        if self.exclude is not None and (isinstance(self.exclude, str)
                                         or not all(isinstance(e, str) for e in self.exclude)):
            raise ConfigError(f"{type(self).__name__}(exclude={self.exclude!r}): expected a list of module names, "
                              "e.g. ('head', 'encoder.layers.0')")

    def options(self) -> dict:
        """The options this config sets (the ones not None), as `convert` keywords."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        if "exclude" in out:
            out["exclude"] = list(out["exclude"])
        if out.get("max_drop") == "off":
            out["max_drop"] = None  # convert's way to turn the gate off
        return out


@dataclass(frozen=True)
class _Calibrated(QuantConfig):
    """Schemes that observe activations: ``calibration`` (a list of input tuples), at least
    ``min_calibration`` of them; ``auto_fallback`` keeps the most sensitive layers in float (up to
    ``max_fallback_layers``) when the gate fails."""

    calibration: Any = None
    min_calibration: int | None = None
    auto_fallback: bool | None = None
    max_fallback_layers: int | None = None

    def __post_init__(self):
        super().__post_init__()
        name = type(self).__name__
        if self.calibration is not None and (isinstance(self.calibration, (str, bytes))
                                             or not hasattr(self.calibration, "__len__") or not len(self.calibration)):
            raise ConfigError(f"{name}(calibration=...): expected a non-empty list of input tuples (or prompts for "
                              f"a generation model), got {type(self.calibration).__name__}")
        for key in ("min_calibration", "max_fallback_layers"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ConfigError(f"{name}({key}={v!r}): expected a positive int")
        if self.auto_fallback is not None and not isinstance(self.auto_fallback, bool):
            raise ConfigError(f"{name}(auto_fallback={self.auto_fallback!r}): expected True or False")


@dataclass(frozen=True)
class Fp32(QuantConfig):
    scheme: ClassVar[str] = "fp32"


@dataclass(frozen=True)
class Fp16(QuantConfig):
    scheme: ClassVar[str] = "fp16"


@dataclass(frozen=True)
class Int8Dynamic(QuantConfig):
    scheme: ClassVar[str] = "int8-dynamic"


@dataclass(frozen=True)
class Int8Weight(QuantConfig):
    scheme: ClassVar[str] = "int8-weight"


@dataclass(frozen=True)
class Int4Weight(QuantConfig):
    scheme: ClassVar[str] = "int4-weight"


@dataclass(frozen=True)
class Palettize4(QuantConfig):
    scheme: ClassVar[str] = "palettize4"


@dataclass(frozen=True)
class Int8Qat(QuantConfig):
    scheme: ClassVar[str] = "int8-qat"


@dataclass(frozen=True)
class Int8Static(_Calibrated):
    scheme: ClassVar[str] = "int8-static"


@dataclass(frozen=True)
class Uint8Static(_Calibrated):
    scheme: ClassVar[str] = "uint8-static"


@dataclass(frozen=True)
class Uint16Static(_Calibrated):
    scheme: ClassVar[str] = "uint16-static"


CONFIGS: dict[str, type[QuantConfig]] = {c.scheme: c for c in (
    Fp32, Fp16, Int8Dynamic, Int8Weight, Int4Weight, Palettize4, Int8Qat, Int8Static, Uint8Static, Uint16Static)}


def resolve(quantize, given: dict) -> tuple[str, dict]:
    """``(scheme name, keyword options)`` for `convert`: a string passes through; a config gives
    its scheme and its options, which may not also be passed by keyword (``given``: the keywords
    the caller set away from their defaults)."""
    if isinstance(quantize, str):
        return quantize, {}
    if not isinstance(quantize, QuantConfig) or not quantize.scheme:
        raise ConfigError(f"quantize must be a scheme name or a config ({', '.join(c.__name__ for c in CONFIGS.values())}"
                          f"), got {type(quantize).__name__}")
    opts = quantize.options()
    twice = sorted(set(opts) & set(given))
    if twice:
        raise ConfigError(f"{', '.join(twice)} given both in {type(quantize).__name__}(...) and as keywords; "
                          "give each once")
    return quantize.scheme, opts
