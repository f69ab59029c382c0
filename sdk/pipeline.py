"""`sdk.pipeline(config) -> PipelineResult`: teacher -> distilled students -> quantized, converted,
verified, profiled artifacts -> `results.json` (the deployment lockfile) + `report.html`/`report.md`.

Example::

    import sdk
    res = sdk.pipeline({
        "model": "make_model.py:build",                 # or file.pt2, or a local Hugging Face folder
        "targets": ["onnx-cpu", "executorch-xnnpack"],
        "quantize": {"schemes": "recommended", "max_drop": 0.02},
        "output": {"dir": "out/deploy"},
    })
    print(res.report_html, [(r["target"], r["scheme"], r["p50_ms"]) for r in res.rows])

The same from a YAML file: ``edgesdk deploy deploy.yaml``. Every key is optional except that
a config names a ``model`` or a ``distill`` section (or both); unknown keys are a
`ConfigError` listing the valid ones. ``docs/demo.md`` documents every key; `edgesdk demo` runs
``sdk/demo.yaml`` through this function.

Stages: (1) distil each ``distill`` entry's students with its family (`sdk.families`; trained
teachers and students come from the content-addressed cache when nothing changed); (2) for
every student (and the user's ``model``) x target x scheme: `sdk.convert` with the calibration
data and the accuracy gate (``max_drop``), verified against PyTorch; (3) `runtime.profile` every
artifact that runs here and score it with the family's quality function; (4) write
``results.json``, ``report.md`` and ``report.html``. A failed gate or conversion is recorded in
its row (``status``) and the run goes on, unless ``quantize.on_fail: error``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runtime.errors import ConfigError, SdkError, ToleranceError
from sdk.families import DEFAULT_CACHE_DIR, FamilyContext, FamilyResult, Runner, TrainingCache, code_version, \
    fingerprint, get_family
from sdk.progress import Progress

# What a quick (smoke) run of `targets: all` converts for generation models (prefill + step):
# the two CPU targets whose exports take seconds (ExecuTorch's lowering of one takes ~30 s, the
# GPU/NPU paths more). Single-program models convert to every target that runs here.
QUICK_TARGETS = ("onnx-cpu", "litert-cpu")


def calibrated_schemes(target) -> tuple[str, ...]:
    from converters.registry import get_converter
    return tuple(get_converter(target.name).calibrated)


def recommended_scheme(target, multi_program: bool = False) -> str | None:
    """The quantized scheme `schemes: recommended` picks for a target (None: fp32 only): the
    converter's ``recommended`` (``recommended_multi_program`` for models with several programs)."""
    from converters.registry import get_converter
    conv = get_converter(target.name)
    if multi_program:
        rec = conv.recommended_multi_program
        return rec if rec in target.quantization else None
    rec = conv.recommended
    if rec in target.quantization:
        return rec
    return target.quantization[1] if len(target.quantization) > 1 else None


# ----------------------------------------------------------------------------- config

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
    ``module:function`` returning ``quality(run) -> float`` (see `sdk.families.Runner`)."""

    source: str = ""
    name: str | None = None
    quality: str | None = None
    seq_len: int = 32
    text: str = "Edge devices run compact models."

    def __post_init__(self):
        _check(isinstance(self.source, str) and self.source, "model.source: give MODULE:FUNCTION, FILE.pt2 or a "
               "local Hugging Face folder, e.g. model: make_model.py:build")
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
        from sdk.families import list_families
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
    -> list. ``max_drop``: the accuracy gate (None: measured, not enforced). ``on_fail``:
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
        _check(self.max_drop is None or (isinstance(self.max_drop, (int, float)) and not isinstance(self.max_drop, bool)
                                         and self.max_drop >= 0),
               f"quantize.max_drop must be a number >= 0 (e.g. 0.02) or null, got {self.max_drop!r}")
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
    """``warmup``: runs, or ``auto`` (until the median of the last window stops moving);
    ``threads``: a count, null (all usable cores) or ``auto`` (time 1..usable cores, use the
    fastest); ``isolate``: profile in a child process holding only the runtime and the backend,
    so memory is the artifact's own."""

    enabled: bool = True
    warmup: Any = "auto"
    iters: int = 100
    threads: Any = None
    per_op: bool = True
    isolate: bool = True

    def __post_init__(self):
        if self.warmup != "auto":
            _opt_int(self.warmup, "profile.warmup (or auto)", 0)
        _opt_int(self.iters, "profile.iters", 1)
        if self.threads != "auto":
            _opt_int(self.threads, "profile.threads (or auto, or null for all cores)", 1)
        _check(isinstance(self.enabled, bool) and isinstance(self.per_op, bool) and isinstance(self.isolate, bool),
               "profile.enabled, profile.per_op and profile.isolate must be true or false")


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
    """A deployment pipeline (`sdk.pipeline`, ``edgesdk deploy``). See ``docs/demo.md``."""

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


# ----------------------------------------------------------------------------- loading references

def _resolve_ref(ref: str, base: Path) -> str:
    """Make a file reference (``file.py:fn``, ``x.npz``, ``model.pt2``, a folder) relative to the config."""
    path_part = ref.rsplit(":", 1)[0] if (":" in ref and not ref.endswith(":")) else ref
    if (path_part.endswith((".py", ".pt2", ".npz")) or "/" in path_part) and not Path(path_part).is_absolute():
        cand = base / path_part
        if cand.exists():
            return str(cand) + ref[len(path_part):]
    return ref


def _is_hf_dir(ref: str) -> bool:
    return Path(ref).is_dir() and (Path(ref) / "config.json").is_file()


def _eval(m):
    """``m.eval()``, where the module allows it (an ExportedProgram's module is already in eval form)."""
    try:
        return m.eval()
    except NotImplementedError:
        return m


def _load_model(spec: ModelSpec, base: Path):
    from sdk.cli import load_model_spec
    ref = _resolve_ref(spec.source, base)
    if _is_hf_dir(ref):
        from models.teachers.hf import load_hf
        model = load_hf(ref)
        tok = model.tokenizer([spec.text], padding="max_length", truncation=True, max_length=spec.seq_len,
                              return_tensors="pt")
        return model.eval(), (tok["input_ids"], tok["attention_mask"]), Path(ref).name
    if Path(ref).is_dir():
        raise ConfigError(f"model {spec.source}: a folder but not a Hugging Face model (no config.json)")
    model, example, stem = load_model_spec(ref)
    return _eval(model), (tuple(example) if example is not None else None), stem


def _load_teacher(ref: str, base: Path, user_model):
    if ref == "model":
        if user_model is None:
            raise ConfigError("distill.teacher: model refers to the config's `model`, which is not set")
        return user_model
    ref = _resolve_ref(ref, base)
    if _is_hf_dir(ref) or ref in ("minilm", "decoder"):
        from models.teachers import load_teacher
        return load_teacher(ref)
    from sdk.cli import load_model_spec, load_object
    if ref.endswith(".pt2"):
        return _eval(load_model_spec(ref)[0])
    obj = load_object(ref, "distill.teacher")
    if isinstance(obj, tuple) and obj and isinstance(obj[0], torch.nn.Module):
        obj = obj[0]
    if not isinstance(obj, torch.nn.Module):
        raise ConfigError(f"distill.teacher {ref}: must return an nn.Module (or (module, example_inputs)), "
                          f"got {type(obj).__name__}")
    return _eval(obj)


def _load_data(ref: str, base: Path):
    ref = _resolve_ref(ref, base)
    if ref.endswith(".npz"):
        if not Path(ref).is_file():
            raise ConfigError(f"{ref}: no such .npz file")
        with np.load(ref, allow_pickle=False) as z:
            return {k: torch.from_numpy(z[k]) for k in z.files}
    from sdk.cli import load_object
    return load_object(ref, "data")


def _generated_calibration(example: tuple, n: int, seed: int = 0) -> list[tuple]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        sample = []
        for t in example:
            if t.is_floating_point():
                sample.append(torch.randn(t.shape, generator=g, dtype=t.dtype))
            elif t.dtype == torch.bool:
                sample.append(torch.ones_like(t))
            else:
                lo, hi = int(t.min()), int(t.max())
                sample.append(torch.randint(lo, hi + 1, t.shape, generator=g, dtype=t.dtype))
        out.append(tuple(sample))
    return out


def _user_calibration(spec: CalibrationSpec, base: Path, example: tuple):
    ref = _resolve_ref(spec.data, base)
    if ref.endswith(".npz"):
        return ref
    from sdk.cli import load_object
    data = load_object(ref, "calibration.data")
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (list, tuple)):
        return [tuple(torch.as_tensor(t) for t in s) for s in data[:spec.samples]]
    arrays = data if isinstance(data, (list, tuple)) else [data]
    arrays = [torch.as_tensor(a) for a in arrays]
    b = example[0].shape[0] if example and example[0].ndim else 1
    n = min(len(arrays[0]) // max(b, 1), spec.samples)
    return [tuple(a[i * b:(i + 1) * b] for a in arrays) for i in range(n)]


# ----------------------------------------------------------------------------- result

@dataclass
class Entry:
    """A model to deploy: a distilled student or the user's model."""

    family: str
    name: str
    module: torch.nn.Module
    example_inputs: tuple | None
    quality: Any = None
    metric: str | None = None
    reference_quality: float | None = None
    reference: str | None = None
    calibration: Any = None
    calibration_source: str = ""
    eval_data: Any = None
    profile_programs: list | None = None
    info: dict = field(default_factory=dict)


@dataclass
class PipelineResult:
    """What `sdk.pipeline` returns: one row per model x target x scheme (see ``results.json``)."""

    config: PipelineConfig
    rows: list[dict]
    families: list[dict]
    out_dir: Path
    results_json: Path
    report_html: Path | None
    report_md: Path | None
    timings: dict
    cache: dict

    @property
    def ok(self) -> bool:
        return all(r["status"] in ("ok", "convert-only", "skipped") for r in self.rows)


# ----------------------------------------------------------------------------- pipeline

def _targets(cfg: PipelineConfig):
    import sdk
    all_t = {t.name: t for t in sdk.targets()}
    if cfg.targets == "all":
        return list(all_t.values())
    if cfg.targets == "runs-here":
        return [t for t in all_t.values() if t.runs_here]
    unknown = [t for t in cfg.targets if t not in all_t]
    if unknown:
        raise ConfigError(f"targets: unknown target{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}. "
                          f"Available: {', '.join(sorted(all_t))}")
    return [all_t[n] for n in cfg.targets]


def schemes_for(target, schemes, quick: bool = False, multi_program: bool = False) -> tuple[list[str], list[str]]:
    """(schemes to convert, schemes asked for but not offered by this target). ``recommended``
    is fp32 + the target's recommended scheme; the recommended scheme alone in a quick run and
    on convert-only targets (nothing is measured there: the deployable scheme is what counts)."""
    quick = quick or not target.runs_here
    if isinstance(schemes, dict):
        schemes = schemes.get(target.name, "recommended")
    if isinstance(schemes, str):
        schemes = [schemes]
    out, missing = [], []
    for s in schemes:
        if s == "auto":  # every scheme the target offers (QAT needs a QAT-trained model): the recommendation picks
            for x in target.quantization:
                if x != "int8-qat" and x not in out:
                    out.append(x)
        elif s == "recommended":
            rec = recommended_scheme(target, multi_program)
            for x in ((rec or "fp32",) if quick else ("fp32", rec)):
                if x and x not in out:
                    out.append(x)
        elif s in target.quantization:
            if s not in out:
                out.append(s)
        else:
            missing.append(s)
    return out, missing


def _placement(manifest) -> dict | None:
    ex = manifest.extra
    if "qnn" in ex and isinstance(ex["qnn"].get("placement"), dict) and "fraction" in ex["qnn"]["placement"]:
        p = ex["qnn"]["placement"]
        return {"kind": "NPU", "fraction": p["fraction"], "on_accelerator": p.get("on_npu"),
                "compute_nodes": p.get("compute_nodes"),
                "fallback": [f"{r.get('node')} ({r.get('op_type')})" for r in p.get("cpu_fallback", [])]}
    if "gpu" in ex and isinstance(ex["gpu"], dict) and "fully_accelerated" in ex["gpu"]:
        return {"kind": "GPU", "fraction": 1.0 if ex["gpu"]["fully_accelerated"] else None,
                "fully_accelerated": ex["gpu"]["fully_accelerated"]}
    part = ex.get("partition")
    if isinstance(part, dict) and part:
        fr = [p.get("delegated_fraction") for p in part.values() if isinstance(p, dict)]
        fr = [f for f in fr if isinstance(f, (int, float))]
        if fr:
            return {"kind": "delegate", "fraction": min(fr)}
    return None


def _top_ops(rep, n: int = 10) -> list[dict]:
    return [{"name": r["name"], "op_type": r["op_type"], "mean_ms": r["mean_ms"], "share": r["share"],
             "calls": r["calls"]} for r in rep.ops[:n]]


def _runs_label(target, manifest=None) -> str:
    if target.runs == "convert-only" or not target.runs_here:
        return "convert-only"
    return target.runs  # yes | simulated | software GPU


def _distill_entries(cfg: PipelineConfig, base: Path, user_model, progress: Progress, quick: bool,
                     families_out: list) -> list[Entry]:
    entries = []
    for spec in cfg.distill:
        fam = get_family(spec.family)
        t0 = time.perf_counter()
        teacher = _load_teacher(spec.teacher, base, user_model) if spec.teacher else (
            user_model if (user_model is not None and spec.data) else None)
        data = _load_data(spec.data, base) if spec.data else None
        key_parts = {"family": fam.name, "spec": spec.key(), "quick": quick, "code": code_version(fam.sources),
                     "torch": torch.__version__,
                     "teacher": fingerprint(teacher) if teacher is not None else "default",
                     "data": fingerprint(data) if data is not None else "default"}
        cache = TrainingCache(cfg.output.cache, fam.name, key_parts, enabled=cfg.output.use_cache,
                              log=progress.stage)
        progress.stage(f"{fam.name}: distilling ({'embedded default teacher and data' if teacher is None else 'your teacher'}"
                       f"{', quick' if quick else ''})")
        ctx = FamilyContext(spec=spec, teacher=teacher, data=data, quick=quick, cache=cache, log=progress.stage)
        res: FamilyResult = fam.fn(ctx)
        secs = time.perf_counter() - t0
        families_out.append({
            "family": fam.name, "description": fam.description, "metric": res.metric,
            "reference": res.reference, "reference_quality": res.reference_quality,
            "students": list(res.students), "cache_hits": cache.hits, "cache_misses": cache.misses,
            "cache_dir": str(cache.root), "code_version": key_parts["code"][:16], "seconds": round(secs, 2),
            "info": res.info})
        progress.stage(f"{fam.name}: {len(res.students)} student(s) ready in {secs:.1f}s "
                       f"(cache: {len(cache.hits)} hit, {len(cache.misses)} trained); reference {res.metric} "
                       + (f"{res.reference_quality:.4f}" if res.reference_quality is not None else "n/a"))
        for name, st in res.students.items():
            entries.append(Entry(family=fam.name, name=name, module=_eval(st), example_inputs=res.example_inputs,
                                 quality=res.quality, metric=res.metric, reference_quality=res.reference_quality,
                                 reference=res.reference, calibration=res.calibration,
                                 calibration_source=f"{fam.name} family data", eval_data=res.eval_data,
                                 profile_programs=res.info.get("profile_programs"), info=res.info))
    return entries


def pipeline(config, *, progress: Progress | bool | None = None, quick: bool | None = None) -> PipelineResult:
    """Run a deployment pipeline (see the module docstring and ``docs/demo.md``).

    ``config``: a `PipelineConfig`, a mapping, or a YAML path. ``quick=True`` shrinks training
    and profiling to a smoke run (also ``quick: true`` in the config).
    """
    from sdk import lockfile
    cfg = load_config(config)
    quick = cfg.quick if quick is None else bool(quick)
    if progress is None or progress is True:
        progress = Progress(True)
    elif progress is False:
        progress = Progress(False)
    base = Path(cfg.base_dir)
    out = Path(cfg.output.dir)
    art_dir = out / "artifacts"
    t_start = time.perf_counter()
    timings: dict = {}
    targets = _targets(cfg)
    if quick:  # a smoke run: only what runs here
        targets = [t for t in targets if t.runs_here]

    entries: list[Entry] = []
    families: list[dict] = []
    user_model = None
    if cfg.model is not None:
        progress.stage(f"loading model {cfg.model.source}")
        user_model, example, stem = _load_model(cfg.model, base)
        q = None
        if cfg.model.quality:
            from sdk.cli import load_object
            q = load_object(_resolve_ref(cfg.model.quality, base), "model.quality")
            if not callable(q):
                raise ConfigError(f"model.quality {cfg.model.quality}: must return a function quality(run) -> float")
        entries.append(Entry(family="model", name=cfg.model.name or stem, module=user_model, example_inputs=example,
                             quality=q, metric="quality" if q else None, reference="your model (fp32 PyTorch)"))
    t0 = time.perf_counter()
    entries += _distill_entries(cfg, base, user_model, progress, quick, families)
    timings["distill_s"] = time.perf_counter() - t0

    # calibration for entries without family data
    for e in entries:
        if e.family == "model":
            if cfg.calibration.data:
                e.calibration = _user_calibration(cfg.calibration, base, e.example_inputs or ())
                e.calibration_source = cfg.calibration.data
            elif e.example_inputs is not None:
                e.calibration = _generated_calibration(e.example_inputs, cfg.calibration.samples)
                e.calibration_source = "generated random inputs (give calibration.data for real ones)"
        elif cfg.calibration.data:
            e.calibration = _user_calibration(cfg.calibration, base, e.example_inputs or ())
            e.calibration_source = cfg.calibration.data
        elif isinstance(e.calibration, list):
            e.calibration = e.calibration[:cfg.calibration.samples]

    warmup, iters = cfg.profile.warmup, cfg.profile.iters
    if quick:
        warmup, iters = (warmup if warmup == "auto" else min(warmup, 3)), min(iters, 30)
    rows: list[dict] = []
    t_conv = t_prof = 0.0
    def several_programs(e) -> bool:
        return e.example_inputs is None and hasattr(e.module, "edge_programs") and len(e.module.edge_programs()) > 1

    multi_of = {id(e): several_programs(e) for e in entries}

    def targets_of(e) -> list:
        if quick and multi_of[id(e)] and cfg.targets == "all":
            return [t for t in targets if t.name in QUICK_TARGETS]
        return targets
    plan = [(e, t, s) for e in entries for t in targets_of(e)
            for s in schemes_for(t, cfg.quantize.schemes, quick, multi_of[id(e)])[0]]
    progress.stage(f"converting {len(entries)} model(s) x {len(targets)} target(s): {len(plan)} artifacts")
    done = 0
    for e in entries:
        fp32_quality = None
        if e.quality is not None:
            fp32_quality = float(e.quality(Runner.pytorch(e.module, e.example_inputs)))
        weights_sha = fingerprint(e.module)
        n_params = sum(p.numel() for p in e.module.parameters())
        multi = multi_of[id(e)]
        for t in targets_of(e):
            schemes, missing = schemes_for(t, cfg.quantize.schemes, quick, multi)
            for s in missing:
                rows.append(_base_row(e, t, s, fp32_quality, weights_sha, n_params) | {
                    "status": "skipped", "message": f"{t.name} has no scheme {s!r} (offers {', '.join(t.quantization)})"})
            for s in schemes:
                done += 1
                row = _base_row(e, t, s, fp32_quality, weights_sha, n_params)
                if multi and s in calibrated_schemes(t):
                    rows.append(row | {"status": "skipped", "message": f"{s}: calibrated quantization of a model "
                                       "with several programs is not supported by the converters yet"})
                    continue
                name = f"{e.family}-{e.name}-{t.name}-{s}" if e.family != "model" else f"{e.name}-{t.name}-{s}"
                name = "".join(c if c.isalnum() or c in "._-" else "-" for c in name)[:128]
                tag = f"[{done}/{len(plan)}] {e.name} {t.name} {s}"
                progress.stage(f"{tag}: converting")
                tc = time.perf_counter()
                try:
                    art, from_cache = _cached_convert(e, t, s, cfg, art_dir, name,
                                                      lambda msg, tag=tag: progress.stage(f"{tag}: {msg}"),
                                                      weights_sha)
                    row["conversion_cached"] = from_cache
                except ToleranceError as err:
                    t_conv += time.perf_counter() - tc
                    if cfg.quantize.on_fail == "error":
                        raise
                    rep = getattr(err, "report", {}) or {}
                    if "drop" in rep:  # the accuracy gate refused a quantized artifact
                        row.update(status="rejected", message=" ".join(str(err).split()),
                                   gate={"max_drop": cfg.quantize.max_drop, "drop": rep.get("drop"), "passed": False,
                                         "drop_basis": rep.get("drop_basis")})
                        progress.stage(f"{tag}: rejected by the accuracy gate")
                    else:  # verification against PyTorch failed
                        row.update(status="failed", message=f"ToleranceError: {' '.join(str(err).split())}")
                        progress.stage(f"{tag}: failed verification ({row['message'][:160]})")
                    rows.append(row)
                    continue
                except SdkError as err:
                    t_conv += time.perf_counter() - tc
                    if cfg.quantize.on_fail == "error":
                        raise
                    row.update(status="failed", message=f"{type(err).__name__}: {' '.join(str(err).split())}")
                    progress.stage(f"{tag}: failed ({row['message'][:160]})")
                    rows.append(row)
                    continue
                t_conv += time.perf_counter() - tc
                _fill_artifact(row, art, cfg, e)
                if t.runs_here and cfg.profile.enabled:
                    tp = time.perf_counter()
                    try:
                        _profile_into(row, art, e, cfg, warmup, iters, progress, tag)
                    except SdkError as err:
                        if cfg.quantize.on_fail == "error":
                            raise
                        row.update(status="failed", message=f"profiling: {type(err).__name__}: "
                                                            f"{' '.join(str(err).split())}")
                        progress.stage(f"{tag}: {row['message'][:160]}")
                    t_prof += time.perf_counter() - tp
                else:
                    row["status"] = "ok" if t.runs_here else "convert-only"
                rows.append(row)
    timings.update(convert_s=t_conv, profile_s=t_prof)
    out.mkdir(parents=True, exist_ok=True)
    timings["total_s"] = time.perf_counter() - t_start
    cache_info = {"hits": sum(len(f["cache_hits"]) for f in families),
                  "misses": sum(len(f["cache_misses"]) for f in families), "dir": cfg.output.cache}
    from sdk.auto import recommend
    recommendations = recommend(rows)  # marks rows `recommended` / `target_pick` (sdk.auto's rule)
    results = lockfile.build(cfg, rows, families, timings, cache_info)
    results["recommendations"] = recommendations
    results_path = lockfile.write(results, out / "results.json")
    html = md = None
    if cfg.output.report:
        from sdk import report
        progress.stage("writing the report")
        html, md = report.render(results, out)
        timings["report_s"] = time.perf_counter() - t_start - timings["total_s"]
    return PipelineResult(cfg, rows, families, out, results_path, html, md, timings, cache_info)


def _base_row(e: Entry, t, scheme: str, fp32_quality, weights_sha, n_params) -> dict:
    return {
        "family": e.family, "model": e.name, "target": t.name, "device": t.device, "format": t.format,
        "scheme": scheme, "runs": _runs_label(t), "status": None, "message": "",
        "params": n_params, "metric": e.metric, "reference": e.reference,
        "reference_quality": e.reference_quality, "fp32_quality": fp32_quality, "quality": None,
        "weights_sha256": weights_sha,
    }


_CONVERT_SOURCES = None


def _convert_code_version() -> str:
    global _CONVERT_SOURCES
    if _CONVERT_SOURCES is None:
        from sdk.families import ROOT
        files = sorted(str(p.relative_to(ROOT)) for d in ("converters", "runtime") for p in (ROOT / d).glob("*.py"))
        _CONVERT_SOURCES = code_version(files)
    return _CONVERT_SOURCES


def _artifact_key(e: Entry, t, scheme: str, cfg: PipelineConfig, name: str, weights_sha: str) -> str:
    """Content address of a conversion: everything that goes into it (weights, inputs, target,
    scheme, calibration, gate settings, converter/runtime code, tool versions)."""
    import hashlib
    from sdk.lockfile import tool_versions
    parts = {"name": name, "weights": weights_sha, "class": type(e.module).__qualname__,
             "example": fingerprint(e.example_inputs) if e.example_inputs is not None else
             fingerprint([ex for _, ex in e.module.edge_programs().values()]),
             "target": t.name, "scheme": scheme, "code": _convert_code_version(), "versions": tool_versions()}
    if scheme != "fp32":
        cal = e.calibration
        parts.update(calibration=fingerprint(cal) if not isinstance(cal, str) else fingerprint(Path(cal).read_bytes()),
                     eval=fingerprint(e.eval_data) if e.eval_data is not None else None,
                     max_drop=cfg.quantize.max_drop, auto_fallback=cfg.quantize.auto_fallback,
                     min_calibration=cfg.calibration.min_samples)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def _cached_convert(e: Entry, t, scheme: str, cfg: PipelineConfig, art_dir: Path, name: str, say, weights_sha: str):
    """`sdk.convert`, reusing an identical earlier conversion from the cache (payload hashes
    re-checked against its manifest before use). Returns (artifact, from_cache)."""
    import shutil
    import uuid
    from converters import Artifact
    from runtime.errors import IntegrityError
    from runtime.manifest import verify_payload
    if not cfg.output.use_cache:
        return _convert(e, t, scheme, cfg, art_dir, name, say), False
    key = _artifact_key(e, t, scheme, cfg, name, weights_sha)
    cached = Path(cfg.output.cache) / "artifacts" / t.name / key[:24] / name
    final = art_dir / name
    if (cached / "manifest.json").is_file():
        try:
            cached_art = Artifact.open(cached)
            verify_payload(cached, cached_art.manifest)
            art_dir.mkdir(parents=True, exist_ok=True)
            tmp = art_dir / f".{name}.cached-{uuid.uuid4().hex[:8]}"
            shutil.copytree(cached, tmp)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            say(f"reused the cached conversion ({cached.parent.name[:12]})")
            return Artifact.open(final), True
        except (OSError, ValueError, IntegrityError) as err:
            say(f"cached conversion unusable ({type(err).__name__}); converting again")
    art = _convert(e, t, scheme, cfg, art_dir, name, say)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.parent / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        shutil.copytree(art.path, tmp)
        if cached.exists():
            shutil.rmtree(cached)
        os.rename(tmp, cached)
    except OSError:
        pass  # the cache is an optimisation: a read-only or full disk must not fail the run
    return art, False


def _convert(e: Entry, t, scheme: str, cfg: PipelineConfig, art_dir: Path, name: str, say):
    import sdk
    conv_kw: dict = {}
    if scheme != "fp32":
        conv_kw.update(max_drop=cfg.quantize.max_drop, auto_fallback=cfg.quantize.auto_fallback,
                       min_calibration=cfg.calibration.min_samples)
        if e.calibration is not None:
            conv_kw["calibration"] = e.calibration
        if e.eval_data is not None:
            conv_kw["eval_data"] = e.eval_data
    return sdk.convert(e.module, e.example_inputs, t.name, quantize=scheme, out_dir=art_dir, name=name,
                       progress=say, **conv_kw)


def _fill_artifact(row: dict, art, cfg: PipelineConfig, e: Entry) -> None:
    from sdk.lockfile import artifact_hashes
    m = art.manifest
    v = m.verification or {}
    q = m.quantization or {}
    row.update(path=str(art.path), artifact=art.path.name, size_bytes=art.size_bytes,
               conversion_s=m.extra.get("conversion_s"), verification=v.get("kind", "numerical vs PyTorch"),
               max_abs_err=v.get("max_abs_err"), min_cosine=v.get("min_cosine"),
               placement=_placement(m), programs=list(m.programs), label=m.extra.get("runs_label", ""),
               device_label=m.extra.get("device_label"))
    if "gate" in q:
        g = q["gate"]
        row["gate"] = {k: g.get(k) for k in ("max_drop", "drop", "passed", "drop_basis")}
        row["kept_float"] = [k["layer"] for k in q.get("kept_float", [])]
        if q.get("calibration"):
            row["calibration"] = {**q["calibration"], "source": e.calibration_source or q["calibration"].get("source")}
    row["hashes"] = artifact_hashes(m, row["weights_sha256"])
    row["versions"] = dict(m.versions)


def _profile_into(row: dict, art, e: Entry, cfg: PipelineConfig, warmup: int, iters: int, progress: Progress,
                  tag: str) -> None:
    import runtime
    if "generation" in art.manifest.extra:
        # one timed run is a whole generation (prefill + 32 steps): a fifth of the runs still
        # gives ~30 per-token samples per run, and keeps generation models within the budget
        warmup = warmup if warmup == "auto" else min(warmup, max(1, warmup // 5))
        iters = min(iters, max(5, iters // 5))
    programs = e.profile_programs or [None]
    reps = {}
    for prog in programs:
        progress.stage(f"{tag}: profiling{' ' + prog if prog else ''} ({warmup} warm-up + {iters} runs)")
        reps[prog or "default"] = runtime.profile(art.path, warmup=warmup, iters=iters, threads=cfg.profile.threads,
                                                  program=prog, per_op=cfg.profile.per_op, isolate=cfg.profile.isolate,
                                                  progress=progress.bar(f"{e.name} {row['target']} {row['scheme']}"))
    rep = next(iter(reps.values()))
    st = rep.stats
    row.update(status="ok", p50_ms=st["p50"], p90_ms=st["p90"], p99_ms=st["p99"], mean_ms=st["mean"],
               std_ms=st["std"], cv=st["cv"], noisy=rep.noisy, load_ms=rep.load_ms, first_run_ms=rep.first_run_ms,
               peak_rss_mb=rep.peak_rss_mb, threads=rep.threads, backend=rep.backend,
               backend_version=rep.backend_version, device_name=rep.device, label=rep.label or row.get("label", ""),
               program=rep.program, samples_ms=[round(x, 6) for x in rep.samples_ms], ops=_top_ops(rep),
               ops_note=rep.ops_note, warmup=rep.warmup, iters=iters)
    from sdk.lockfile import profile_fields
    row.update(profile_fields(rep))
    if rep.extra.get("generation"):  # generation artifacts: samples are times to first token
        row["generation"] = rep.extra["generation"]
    if len(reps) > 1:
        row["program_profiles"] = {k: {"p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms,
                                       "samples_ms": [round(x, 6) for x in r.samples_ms], "ops": _top_ops(r)}
                                   for k, r in reps.items()}
    if e.quality is not None:
        try:
            row["quality"] = float(e.quality(Runner.artifact(art.path, threads=rep.threads)))
        except Exception as err:  # a quality function that cannot run on this artifact: say so, keep going
            row["quality_error"] = f"{type(err).__name__}: {' '.join(str(err).split())[:300]}"
    elif "gate" in row and row["gate"].get("drop") is not None:
        row["quality"] = 1.0 - row["gate"]["drop"]
        row["metric"] = "agreement with fp32 (1 - gate drop)"
    elif row.get("min_cosine") is not None:
        row["quality"] = row["min_cosine"]
        row["metric"] = "min cosine vs fp32"
    if row["quality"] is not None and row.get("fp32_quality") is not None:
        row["quality_drop"] = row["fp32_quality"] - row["quality"]
    if row["quality"] is not None and row.get("reference_quality") is not None:
        row["quality_vs_reference"] = row["quality"] - row["reference_quality"]


__all__ = ["PipelineConfig", "ModelSpec", "DistillSpec", "QuantizeSpec", "CalibrationSpec", "ProfileSpec",
           "OutputSpec", "PipelineResult", "pipeline", "load_config", "recommended_scheme",
           "schemes_for"]
