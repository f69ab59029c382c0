"""The pipeline config: the YAML schema (`PipelineConfig` and its sections) and its validation.

Every section is strict: an unknown key is a `ConfigError` listing the valid ones. ``docs/demo.md``
documents every key.

Example::

    from edgesdk.pipeline.config import PipelineConfig
    cfg = PipelineConfig.from_dict({"model": "make_model.py:build", "targets": ["onnx-cpu"]})
    cfg = PipelineConfig.load("deploy.yaml")           # file references resolve next to it
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesdk.runtime.errors import ConfigError
from edgesdk.cache import DEFAULT_CACHE_DIR
from edgesdk.families import get_family


class _Section:
    """Strict construction from a mapping: unknown keys are rejected with the valid ones listed."""

    @classmethod
    def from_dict(cls, d, where: str):
        if d is None:
            return cls()
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected a mapping with keys {', '.join(cls.keys())}, got {type(d).__name__}")
        unknown = [k for k in d if k not in cls.keys()]
        if unknown:
            raise ConfigError(f"{where}: unknown key{'s' if len(unknown) > 1 else ''} "
                              f"{', '.join(repr(k) for k in unknown)}; valid keys: {', '.join(cls.keys())}")
        return cls(**{k: v for k, v in d.items()})

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _opt_int(v, where, lo=0) -> None:
    _check(v is None or (isinstance(v, int) and not isinstance(v, bool) and v >= lo),
           f"{where} must be an integer >= {lo}, got {v!r}")


@dataclass
class ModelSpec(_Section):
    """The user's model, converted as-is (and the default teacher of a ``distill`` entry).

    ``source``: ``module:function`` / ``path/file.py:function`` returning ``(model,
    example_inputs)``, a ``torch.export.save``d ``.pt2``, or a local Hugging Face folder
    (example inputs: ``text`` tokenized to ``seq_len`` tokens). ``quality``: optional
    ``module:function`` returning ``quality(run) -> float`` (see `edgesdk.families.Runner`)."""

    source: str = ""
    name: str | None = None
    quality: str | None = None
    seq_len: int = 32
    text: str = "Edge devices run compact models."
    prompt_lengths: Any = None  # generation models: prompt length classes, e.g. [64, 256, 1024]

    def __post_init__(self):
        _check(isinstance(self.source, str) and self.source, "model.source: give MODULE:FUNCTION, FILE.pt2 or a "
               "local Hugging Face folder, e.g. model: make_model.py:build")
        pl = self.prompt_lengths
        _check(pl is None or (isinstance(pl, list) and pl and all(isinstance(x, int) and not isinstance(x, bool)
                                                                  and x > 0 for x in pl)),
               f"model.prompt_lengths must be a list of positive ints (e.g. [64, 256, 1024]), got {pl!r}")
        _check(self.name is None or isinstance(self.name, str), f"model.name must be a string, got {self.name!r}")
        _opt_int(self.seq_len, "model.seq_len", 1)


@dataclass
class DistillSpec(_Section):
    """One student family to distil. ``teacher``/``data``: omitted = the family's embedded
    default (no downloads); ``teacher: model`` = the config's ``model``."""

    family: str = "mlp"
    teacher: str | None = None
    data: str | None = None
    steps: int | None = None
    seed: int = 0
    students: dict | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        from edgesdk.families import list_families
        _check(isinstance(self.family, str) and bool(self.family),
               f"distill.family must be one of {', '.join(list_families())}, got {self.family!r}")
        get_family(self.family)  # unknown: ConfigError listing the registered families
        _opt_int(self.steps, "distill.steps", 1)
        _opt_int(self.seed, "distill.seed", 0)
        _check(self.students is None or isinstance(self.students, dict),
               "distill.students must map a student name to its model config, e.g. {mlp-small: {model: mlp-small}}")
        _check(isinstance(self.options, dict), f"distill.options must be a mapping, got {self.options!r}")

    def key(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class QuantizeSpec(_Section):
    """``schemes``: ``recommended`` (fp32 + each target's recommended scheme), ``auto`` (every scheme
    each target offers; the report's recommendation picks the fastest that passed), ``fp32``, a list
    (``[fp32, int8-static]``, schemes a target lacks are skipped and listed) or a mapping target
    -> list. ``max_drop``: the accuracy gate (a number, ``default`` for the SDK's thresholds per
    kind of output, or None: measured, not enforced, with a warning). ``on_fail``:
    ``report`` (record the rejected artifact and go on) or ``error`` (stop)."""

    schemes: Any = "recommended"
    max_drop: float | None = 0.05
    auto_fallback: bool = False
    on_fail: str = "report"

    def __post_init__(self):
        s = self.schemes
        ok = isinstance(s, str) or (isinstance(s, list) and all(isinstance(x, str) for x in s)) or (
            isinstance(s, dict) and all(isinstance(v, (str, list)) for v in s.values()))
        _check(ok, f"quantize.schemes: 'recommended', 'auto', 'fp32', a list of schemes or a mapping target -> list, "
                   f"got {s!r}")
        _check(self.max_drop is None or self.max_drop == "default" or (
            isinstance(self.max_drop, (int, float)) and not isinstance(self.max_drop, bool) and self.max_drop >= 0),
               f"quantize.max_drop must be a number >= 0 (e.g. 0.02), 'default' (top-1 >= 99% for classifiers, "
               f"min cosine >= 0.99 otherwise) or null (gate off), got {self.max_drop!r}")
        _check(isinstance(self.auto_fallback, bool), f"quantize.auto_fallback must be true or false, got {self.auto_fallback!r}")
        _check(self.on_fail in ("report", "error"), f"quantize.on_fail must be 'report' or 'error', got {self.on_fail!r}")


@dataclass
class CalibrationSpec(_Section):
    """``data``: ``module:function`` (returning input tuples, or arrays whose first axis indexes
    samples) or a ``.npz`` (one array per input); omitted: the family's training data for
    students, generated random inputs for your model (labelled so). ``samples`` caps the count."""

    data: str | None = None
    samples: int = 64
    min_samples: int = 8

    def __post_init__(self):
        _opt_int(self.samples, "calibration.samples", 1)
        _opt_int(self.min_samples, "calibration.min_samples", 1)


@dataclass
class ProfileSpec(_Section):
    """``devices``: target -> where its latency is measured: ``local`` (default: this machine,
    or the executor's node with the target's device) or ``adb:SERIAL`` (a phone on adb,
    through the android_demo app; the ``ray`` executor runs it on the worker that has it).
    ``warmup``: runs, or ``auto`` (until the median of the last window stops moving);
    ``threads``: a count, null (all usable cores) or ``auto`` (time 1..usable cores, use the
    fastest); ``isolate``: profile in a child process holding only the runtime and the backend,
    so memory is the artifact's own."""

    enabled: bool = True
    warmup: Any = "auto"
    iters: int = 100
    threads: Any = None
    per_op: bool = True
    isolate: bool = True
    devices: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.warmup != "auto":
            _opt_int(self.warmup, "profile.warmup (or auto)", 0)
        _opt_int(self.iters, "profile.iters", 1)
        if self.threads != "auto":
            _opt_int(self.threads, "profile.threads (or auto, or null for all cores)", 1)
        _check(isinstance(self.enabled, bool) and isinstance(self.per_op, bool) and isinstance(self.isolate, bool),
               "profile.enabled, profile.per_op and profile.isolate must be true or false")
        _check(isinstance(self.devices, dict) and all(
            isinstance(k, str) and isinstance(v, str) and (v == "local" or (v.startswith("adb:") and len(v) > 4))
            for k, v in self.devices.items()),
            f"profile.devices maps a target to local or adb:SERIAL (a serial from `adb devices`), "
            f"e.g. {{executorch-xnnpack: adb:R58M12ABC}}; got {self.devices!r}")


@dataclass
class OutputSpec(_Section):
    dir: str = "edgesdk-out/deploy"
    cache: str = DEFAULT_CACHE_DIR
    use_cache: bool = True
    report: bool = True

    def __post_init__(self):
        _check(isinstance(self.dir, str) and self.dir, f"output.dir must be a path, got {self.dir!r}")
        _check(isinstance(self.cache, str) and self.cache, f"output.cache must be a path, got {self.cache!r}")


@dataclass
class PipelineConfig:
    """A deployment pipeline (`edgesdk.pipeline`, ``edgesdk deploy``). See ``docs/demo.md``."""

    name: str = "deploy"
    model: ModelSpec | None = None
    distill: list[DistillSpec] = field(default_factory=list)
    targets: Any = "all"
    quantize: QuantizeSpec = field(default_factory=QuantizeSpec)
    calibration: CalibrationSpec = field(default_factory=CalibrationSpec)
    profile: ProfileSpec = field(default_factory=ProfileSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    quick: bool = False
    base_dir: str = field(default=".", repr=False)  # where relative file references in the config resolve

    SECTIONS = ("name", "model", "distill", "targets", "quantize", "calibration", "profile", "output", "quick")

    def __post_init__(self):
        _check(isinstance(self.name, str) and self.name, f"name must be a non-empty string, got {self.name!r}")
        _check(self.model is not None or bool(self.distill),
               "the config deploys nothing: add `model: MODULE:FUNCTION` (your model) and/or a `distill:` section "
               "(e.g. distill: {family: mlp})")
        t = self.targets
        _check(t == "all" or t == "runs-here" or (isinstance(t, list) and t and all(isinstance(x, str) for x in t)),
               f"targets: 'all', 'runs-here' or a list of target names (see `edgesdk targets`), got {t!r}")
        _check(isinstance(self.quick, bool), f"quick must be true or false, got {self.quick!r}")

    @classmethod
    def from_dict(cls, d: dict, base_dir: str | os.PathLike = ".") -> "PipelineConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"a pipeline config is a mapping with keys {', '.join(cls.SECTIONS)}, got {type(d).__name__}")
        unknown = [k for k in d if k not in cls.SECTIONS]
        if unknown:
            raise ConfigError(f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(repr(k) for k in unknown)} "
                              f"in the pipeline config; valid keys: {', '.join(cls.SECTIONS)}")
        kw: dict = {k: v for k, v in d.items() if k in ("name", "targets", "quick")}
        if d.get("model") is not None:
            m = d["model"]
            kw["model"] = ModelSpec(source=m) if isinstance(m, str) else ModelSpec.from_dict(m, "model")
        dist = d.get("distill")
        if dist is not None:
            items = dist if isinstance(dist, list) else [dist]
            kw["distill"] = [DistillSpec(family=x) if isinstance(x, str) else
                             DistillSpec.from_dict(x, f"distill[{i}]" if isinstance(dist, list) else "distill")
                             for i, x in enumerate(items)]
        if isinstance(kw.get("targets"), str) and kw["targets"] not in ("all", "runs-here"):
            kw["targets"] = [kw["targets"]]
        for key, typ in (("quantize", QuantizeSpec), ("calibration", CalibrationSpec), ("profile", ProfileSpec),
                         ("output", OutputSpec)):
            if key in d:
                kw[key] = typ.from_dict(d[key], key)
        return cls(**kw, base_dir=str(base_dir))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PipelineConfig":
        """Read a YAML (or JSON) pipeline config; file references resolve next to it."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{path}: no such config file")
        import yaml
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
        return cls.from_dict(d or {}, base_dir=p.resolve().parent)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("base_dir", None)
        return d


def load_config(config) -> PipelineConfig:
    """A `PipelineConfig` from itself, a mapping, or a YAML/JSON path."""
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return PipelineConfig.from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return PipelineConfig.load(config)
    raise ConfigError(f"config must be a PipelineConfig, a mapping or a path to a YAML file, got {type(config).__name__}")
