"""Target registry: one converter class per backend file, registered by decorator.

A target is what a user asks for by name (``onnx-cpu``); the converter behind it knows
how to export, which quantization schemes it offers and whether it can run here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from edgesdk.runtime.errors import UnsupportedModelError
from edgesdk.runtime.backends import BACKENDS
from edgesdk.runtime.plugins import KINDS, load_plugins
from edgesdk.runtime.registry import Registry

TARGETS: Registry[type["Converter"]] = Registry("target")


@dataclass(frozen=True)
class Target:
    """A registered target as `edgesdk.targets()` lists it.

    ``runs`` is ``"yes" | "simulated" | "software GPU" | "convert-only" | "no"``;
    ``runs_here`` is True when artifacts of this target execute on this machine;
    ``why_not`` says why not, and how to fix it, otherwise None.
    """

    name: str
    device: str
    format: str
    quantization: tuple
    runs_here: bool
    why_not: str | None
    runs: str
    backend: str
    description: str


class Converter:
    """Base of every target converter. Subclasses set the class attributes and `export`."""

    name: str = ""
    device: str = "cpu"          # cpu | npu | gpu
    format: str = ""             # onnx | pte | tflite | mlpackage
    backend: str = ""            # runtime backend that executes the artifact
    quantization: tuple = ("fp32",)
    calibrated: tuple = ()        # schemes that need calibration data
    recommended: str | None = None  # the quantized scheme to deploy by default (None: the first one)
    # the same for models with several programs (prefill + step; a calibrated scheme needs
    # calibration prompts, `converters.gen_calibration`), or None for fp32 only
    recommended_multi_program: str | None = None
    # per kind of model ("conv" | "transformer" | "mlp", converters.recipes.model_kind) where the
    # measured-fastest scheme differs from ``recommended``
    recommended_by_kind: dict = {}
    # why fp32 is recommended for conv models with HardSwish / SiLU activations (their int8 measured
    # slower here: converters.recipes), or None
    fp32_for_float_activation_convs: str | None = None
    # why fp32 is recommended for conv models when the CPU has no int8 dot-product instructions
    # (`runtime.machine.int8_dot_product`: its int8 convolutions measured slower here), or None
    fp32_for_convs_without_int8_dot: str | None = None
    # why fp32 is recommended for inverted-residual CNNs (MobileNetV2-style blocks, `recipes.inverted_residuals`)
    # when the CPU has no int8 dot-product instructions, or None
    fp32_for_inverted_residuals_without_int8_dot: str | None = None
    default_tolerance: dict = {}  # scheme -> (atol, rtol) when the device computes at lower precision
    float_compute = "fp32"  # "fp16": fp32 graphs run at fp16 there (generation models: converters.fp16_compute)
    description: str = ""
    convert_packages: tuple = ()  # python packages needed to export
    run_packages: tuple = ()      # python packages needed to execute
    install_hint: str = ""
    run_label: str = "yes"        # "yes" | "simulated" | "software GPU" | "convert-only"
    options: dict = {}            # target-specific keyword options of edgesdk.convert: name -> what it does
    dynamic_shapes: bool = False  # accepts edgesdk.convert(..., dynamic_shapes=...)
    # export paths tried in order; an artifact is handed back from the first that exports and verifies
    exporters: tuple = ()

    # -- availability -------------------------------------------------------------------
    @classmethod
    def missing(cls, packages) -> list[str]:
        return [p for p in packages if importlib.util.find_spec(p) is None]

    @classmethod
    def convert_unavailable(cls) -> str | None:
        miss = cls.missing(cls.convert_packages)
        if miss:
            return f"{', '.join(miss)} not installed; fix: {cls.install_hint}"
        return None

    @classmethod
    def run_unavailable(cls) -> str | None:
        miss = cls.missing(cls.run_packages)
        if miss:
            return f"runtime package {', '.join(miss)} not installed; fix: {cls.install_hint}"
        if not cls.backend:
            return None
        load_plugins("backends")  # a plug-in may register it
        if cls.backend not in BACKENDS:
            return (f"its runtime backend {cls.backend!r} is not registered here; fix: load the plug-in that "
                    f"registers it ({KINDS['backends'][0]} or the {KINDS['backends'][1]!r} entry-point group)")
        return None

    @classmethod
    def describe(cls) -> Target:
        why = cls.run_unavailable()
        runs = cls.run_label if why is None else ("convert-only" if cls.convert_unavailable() is None else "no")
        return Target(cls.name, cls.device, cls.format, tuple(cls.quantization), why is None, why,
                      runs, cls.backend, cls.description)

    def validate(self, workdir: Path, programs: dict, manifest) -> dict:
        """Structural check for artifacts that cannot run here (convert-only targets).

        Must raise ConversionError when the artifact is invalid; returns a report for the
        manifest's ``verification`` (e.g. op coverage, partition report, I/O check).
        """
        raise NotImplementedError(f"{self.name} cannot run here and defines no structural validation")

    def unsupported(self, programs: dict) -> str | None:
        """Why this target cannot take these programs (an op or input kind it does not offer), or
        None when it can. `convert` asks before exporting and raises UnsupportedModelError with the
        reason, so a target with a narrow op set says so up front instead of failing mid-export.
        ``programs`` maps a name to a `converters.programs.Program` (``module``, ``example_inputs``)."""
        return None

    def check_model(self, programs: dict) -> None:
        """UnsupportedModelError naming what this target lacks and the targets to try instead."""
        why = self.unsupported(programs)
        if why:
            others = [n for n, cls in TARGETS.items() if n != self.name and cls.device == self.device]
            raise UnsupportedModelError(f"{self.name} cannot take this model: {why}; fix: pick another target"
                                        + (f" ({self.device}: {', '.join(others)})" if others else ""))

    def placement(self, extra: dict) -> dict | None:
        """The manifest's normalized placement block (`converters.placement`) from this target's
        export facts (``extra`` as `export` returned it, or an older manifest's); None where all
        the compute runs on the CPU."""
        return None

    # -- work ---------------------------------------------------------------------------
    def export(self, programs: dict, workdir: Path, *, quantize: str, options: dict) -> dict:
        """Write the payload into ``workdir``.

        ``programs`` maps a program name to ``(module, example_inputs, input_names, output_names)``.
        Returns ``{"files": [relative paths], "programs": {name: (file, method)}, "extra": {...},
        "versions": {...}}``.
        """
        raise NotImplementedError


def register_target(cls: type[Converter]) -> type[Converter]:
    """Class decorator: add a converter to the registry; duplicate names are rejected."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no target name")
    if not cls.quantization or cls.quantization[0] != "fp32":
        raise ValueError(f"target {cls.name!r}: quantization schemes must start with 'fp32'")
    return TARGETS.register(cls.name, cls)


def target_names() -> list[str]:
    load_plugins("targets")
    return TARGETS.names()


def get_converter(name: str) -> Converter:
    """A fresh converter of the target ``name`` (RegistryError, a ConfigError, lists the names)."""
    load_plugins("targets")
    return TARGETS.get(name)()


def targets() -> list[Target]:
    """Every registered target with its availability on this machine (plug-ins included:
    `runtime.plugins`)."""
    load_plugins("targets")
    return [cls.describe() for _, cls in TARGETS.items()]
