"""What a pipeline deploys: `Entry` (a model with its example inputs, quality function and
calibration data), made from the config's ``model`` and from each ``distill`` entry's family.

`entries` yields them family by family, so an executor can start converting the first
family's students while the next family trains. File references in the config resolve next to
the config file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from edgesdk.runtime.errors import ConfigError
from edgesdk.cache import TrainingCache, code_version, fingerprint
from edgesdk.families import FamilyContext, FamilyResult, Runner, torch_threads, get_family
from edgesdk.loaders import load_model_spec, load_object
from edgesdk.pipeline.config import CalibrationSpec, ModelSpec, PipelineConfig
from edgesdk.progress import Progress


@dataclass
class Entry:
    """A model to deploy: a distilled student or the user's model. `prepare` fills the facts
    every row of the entry shares (several programs?, fp32 quality, weights hash, size)."""

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
    prompt_lengths: list | None = None    # generation models: edgesdk.convert(..., prompt_lengths=)
    multi: bool = False                   # several programs (edge_programs) rather than one forward
    fp32_quality: float | None = None     # the quality function on the fp32 PyTorch module
    quality_subset: Any = None            # (quality function, "4 of 12 ...") for devices where a run takes seconds
    fp32_quality_subset: float | None = None
    scored_workload: list | None = None   # the subset's calls as a profile workload (`pipeline.replay`; [] none)
    weights_sha256: str | None = None
    n_params: int | None = None

    def prepare(self) -> "Entry":
        self.multi = (self.example_inputs is None and hasattr(self.module, "edge_programs")
                      and len(self.module.edge_programs()) > 1)
        if self.quality is not None:
            # one torch thread, as the families train: these are batch-1 runs of a small model
            # (two threads only add fork/join), and under the local executor this runs while the
            # conversion workers hold the cores, where a 2-thread region waits for a descheduled
            # thread at every op (the encdec student's 40 greedy decodes: the run's critical path)
            with torch_threads(1):
                self.fp32_quality = float(self.quality(Runner.pytorch(self.module, self.example_inputs)))
                if self.quality_subset is not None:
                    self.fp32_quality_subset = float(self.quality_subset[0](Runner.pytorch(self.module,
                                                                                           self.example_inputs)))
        self.weights_sha256 = fingerprint(self.module)
        self.n_params = sum(p.numel() for p in self.module.parameters())
        return self


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
    ref = _resolve_ref(spec.source, base)
    if _is_hf_dir(ref):
        from edgesdk.models.teachers.hf import load_hf
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
        from edgesdk.models.teachers import load_teacher
        return load_teacher(ref)
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
    data = load_object(ref, "calibration.data")
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (list, tuple)):
        return [tuple(torch.as_tensor(t) for t in s) for s in data[:spec.samples]]
    arrays = data if isinstance(data, (list, tuple)) else [data]
    arrays = [torch.as_tensor(a) for a in arrays]
    b = example[0].shape[0] if example and example[0].ndim else 1
    n = min(len(arrays[0]) // max(b, 1), spec.samples)
    return [tuple(a[i * b:(i + 1) * b] for a in arrays) for i in range(n)]


def _distill(spec, cfg: PipelineConfig, base: Path, user_model, progress: Progress, quick: bool,
             families_out: list, trained_ahead: dict | None = None) -> list[Entry]:
    """Distil one ``distill`` entry's students with its family (trained modules come from the cache).
    ``trained_ahead``: what another process trained of it into the cache in this run (`train_ahead`),
    recorded as trained, not as cache hits."""
    fam = get_family(spec.family)
    t0 = time.perf_counter()
    teacher = _load_teacher(spec.teacher, base, user_model) if spec.teacher else (
        user_model if (user_model is not None and spec.data) else None)
    data = _load_data(spec.data, base) if spec.data else None
    key_parts = {"family": fam.name, "spec": spec.key(), "quick": quick, "code": code_version(fam.sources),
                 "torch": torch.__version__,
                 "teacher": fingerprint(teacher) if teacher is not None else "default",
                 "data": fingerprint(data) if data is not None else "default"}
    cache = TrainingCache(cfg.output.cache, fam.name, key_parts, enabled=cfg.output.use_cache, log=progress.stage)
    progress.stage(f"{fam.name}: distilling ({'embedded default teacher and data' if teacher is None else 'your teacher'}"
                   f"{', quick' if quick else ''})")
    ctx = FamilyContext(spec=spec, teacher=teacher, data=data, quick=quick, cache=cache, log=progress.stage)
    res: FamilyResult = fam.fn(ctx)
    secs = time.perf_counter() - t0
    where = {}
    if trained_ahead and trained_ahead["trained"]:  # trained in this run by another process: not a cache hit
        moved = [n for n in cache.hits if n in trained_ahead["trained"]]
        cache.hits[:] = [n for n in cache.hits if n not in moved]
        cache.misses.extend(moved)
        where = {"trained_in": f"worker process {trained_ahead['pid']}"}
    families_out.append({
        "family": fam.name, "description": fam.description, "metric": res.metric,
        "reference": res.reference, "reference_quality": res.reference_quality,
        "students": list(res.students), "cache_hits": cache.hits, "cache_misses": cache.misses,
        "cache_dir": str(cache.root), "code_version": key_parts["code"][:16], "seconds": round(secs, 2),
        **where, "info": res.info})
    progress.stage(f"{fam.name}: {len(res.students)} student(s) ready in {secs:.1f}s "
                   f"(cache: {len(cache.hits)} hit, {len(cache.misses)} trained); reference {res.metric} "
                   + (f"{res.reference_quality:.4f}" if res.reference_quality is not None else "n/a"))
    return [Entry(family=fam.name, name=name, module=_eval(st), example_inputs=res.example_inputs,
                  quality=res.quality, quality_subset=res.quality_subset, metric=res.metric,
                  reference_quality=res.reference_quality,
                  reference=res.reference, calibration=res.calibration,
                  calibration_source=f"{fam.name} family data", eval_data=res.eval_data,
                  profile_programs=res.info.get("profile_programs"), info=res.info)
            for name, st in res.students.items()]


class _Say:
    """`Progress`'s ``stage`` for a process that reports through a callback."""

    def __init__(self, say):
        self.stage = say


def trainable_ahead(cfg: PipelineConfig) -> list[int]:
    """``distill`` entries another process may train while this one trains those before them: the
    last one, when there are several (the demo lists the longest training last), it uses its
    family's embedded teacher and data (nothing of the user's to send) and the training cache is
    on (the cache is how the students come back)."""
    if len(cfg.distill) < 2 or not cfg.output.use_cache:
        return []
    last = cfg.distill[-1]
    return [len(cfg.distill) - 1] if last.teacher is None and last.data is None else []


def train_ahead(spec, cfg: PipelineConfig, quick: bool, say) -> list[str]:
    """Train one ``distill`` entry (see `trainable_ahead`) into the shared training cache, here: a
    worker of the local executor, while the parent trains the entries before it. The parent then
    distils the entry as usual and finds its students in the cache. Returns the names trained
    (those the cache did not hold)."""
    out: list = []
    _distill(spec, cfg, Path(cfg.base_dir), None, _Say(say), quick, out)
    return list(out[0]["cache_misses"])


# ----------------------------------------------------------------------------- entries

def _attach_calibration(e: Entry, cfg: PipelineConfig, base: Path) -> Entry:
    """Calibration data: the config's ``calibration.data``, else the family's training data
    (capped to ``calibration.samples``), else generated random inputs for the user's model."""
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
    return e


def _user_entry(cfg: PipelineConfig, base: Path, progress: Progress) -> Entry:
    progress.stage(f"loading model {cfg.model.source}")
    user_model, example, stem = _load_model(cfg.model, base)
    q = None
    if cfg.model.quality:
        q = load_object(_resolve_ref(cfg.model.quality, base), "model.quality")
        if not callable(q):
            raise ConfigError(f"model.quality {cfg.model.quality}: must return a function quality(run) -> float")
    return Entry(family="model", name=cfg.model.name or stem, module=user_model, example_inputs=example,
                 quality=q, metric="quality" if q else None, reference="your model (fp32 PyTorch)",
                 prompt_lengths=cfg.model.prompt_lengths)


def entries(cfg: PipelineConfig, progress: Progress, quick: bool, families_out: list,
            timings: dict, ahead=None) -> Iterator[list[Entry]]:
    """The entries to deploy, one batch per source: the user's model first, then each family's
    students as soon as that family has trained. ``families_out`` receives each family's
    record and ``timings["distill_s"]`` the time spent loading and distilling. ``ahead`` (the
    executor): ``train_ahead(cfg, quick, indices)`` starts training those of `trainable_ahead`'s
    entries it can elsewhere and returns their indices; ``wait_trained(i)`` waits for one and returns
    what was trained (None: it failed there, so it trains here)."""
    base = Path(cfg.base_dir)
    timings.setdefault("distill_s", 0.0)
    started = set(ahead.train_ahead(cfg, quick, trainable_ahead(cfg))) if ahead is not None else set()
    user_model = None
    if cfg.model is not None:
        user = _user_entry(cfg, base, progress)
        user_model = user.module
        yield [_attach_calibration(user, cfg, base)]
    for i, spec in enumerate(cfg.distill):
        t0 = time.perf_counter()
        done = ahead.wait_trained(i) if i in started else None
        batch = [_attach_calibration(e, cfg, base) for e in _distill(spec, cfg, base, user_model, progress, quick,
                                                                      families_out, done)]
        timings["distill_s"] += time.perf_counter() - t0
        yield batch
