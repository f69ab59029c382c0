"""What every student family shares: the `FamilyContext` it gets, the `FamilyResult` it returns,
the `Runner` its quality function scores through, the registry, and small helpers. The families
themselves are one file each beside this one (trained modules are cached by `edgesdk.cache`).

A family is a function registered by name that takes a `FamilyContext` and returns a
`FamilyResult`::

    from edgesdk.families import FamilyContext, FamilyResult, register_family

    @register_family("mlp", sources=("models/mlp.py", "models/distill/recipes/base.py"))
    def mlp(ctx: FamilyContext) -> FamilyResult:
        teacher = ctx.cache.module("teacher", build=lambda: HGNN(cfg), train=lambda: train_hgnn(hg))
        student = ctx.cache.module("student", build=lambda: models.create("mlp-small", ...),
                                   train=lambda: lighthgnn(hg, teacher=teacher).student)
        return FamilyResult(students={"mlp-small": student}, teacher=teacher,
                            example_inputs=(x[:1],), metric="accuracy",
                            quality=lambda run: accuracy(run.map([x_eval])[0], y_eval),
                            reference_quality=teacher_acc, reference="HGNN teacher (fp32 PyTorch)")

- ``ctx.spec`` is the `DistillSpec` from the config (family, teacher, data, steps, seed,
  students, options); ``ctx.teacher`` / ``ctx.data`` are the user's objects when the config names
  them (``None``: the family's embedded default teacher and data, nothing downloaded);
  ``ctx.quick`` asks for a smoke-sized run (``edgesdk demo --quick``).
- ``ctx.cache.module(name, build, train)`` returns the trained module: from the cache when an
  entry with the same key exists (``build()`` makes the untrained architecture, the weights
  come from safetensors), else ``train()`` and store. The key hashes the family name, the spec,
  the entry name, the user's teacher/data fingerprints, torch's version and the family's
  ``sources`` (its code version), so a change to any of them retrains.
- ``quality(run) -> float`` scores a student (higher is better) through a `Runner`: the fp32
  PyTorch module and every converted artifact that runs here get the same function.
  ``reference_quality`` is the fp32 teacher/reference on the same data (None if not meaningful).
- ``quality_subset`` (optional): ``(function, "4 of 12 held-out windows")``, the same metric on a
  spread subset, used for generation artifacts on an emulated device (the NPU emulator, a software
  GPU: one generation takes seconds there); their rows compare it with fp32 on the same subset and
  say so (``quality_subset``).
- Students implementing ``edge_programs()`` pass ``example_inputs=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.registry import Registry
from edgesdk.cache import DEFAULT_CACHE_DIR, ROOT, TrainingCache, code_version, fingerprint  # noqa: F401  (re-exported)


# ----------------------------------------------------------------------------- runner

class Runner:
    """One interface over a PyTorch module and a converted artifact, for quality functions.

    ``run(arrays, program=None) -> list[np.ndarray]`` runs one input set (numpy arrays, the
    exported shapes); ``map(arrays)`` runs arrays whose first axis holds N samples, in chunks
    of the exported batch size, and concatenates the outputs along axis 0. ``kind`` is
    ``"pytorch"`` or ``"artifact"``.
    """

    def __init__(self, run: Callable, batch: int | None, kind: str, generator=None):
        self._run, self.batch, self.kind = run, batch, kind
        self._gen = generator  # a Session, or converters.programs.TorchPrograms, for generation models

    def generate(self, prompt, max_new_tokens: int = 32, **kw):
        """Greedy (or ``strategy="top_k"``) generation: the same numpy loop (`runtime.generate`)
        over the artifact's programs or, for the fp32 reference, the PyTorch programs."""
        if self._gen is None:
            raise ConfigError("this model is not a generation model (no edge_generation())")
        return self._gen.generate(prompt, max_new_tokens, **kw)

    def score(self, prompt, continuation) -> dict:
        """Teacher-forced log-probabilities of ``continuation`` (see `runtime.generate.score`)."""
        if self._gen is None:
            raise ConfigError("this model is not a generation model (no edge_generation())")
        return self._gen.score(prompt, continuation)

    @classmethod
    def pytorch(cls, module: nn.Module, example_inputs=None) -> "Runner":
        programs = module.edge_programs() if example_inputs is None and hasattr(module, "edge_programs") else None

        def run(arrays, program=None):
            mod = module if program in (None, "forward") or programs is None else programs[program][0]
            with torch.no_grad():
                out = mod(*[torch.from_numpy(np.ascontiguousarray(a)) for a in arrays])
            outs = out if isinstance(out, (tuple, list)) else [out]
            return [o.detach().cpu().numpy() for o in outs]
        ex = example_inputs if example_inputs is not None else None
        batch = int(ex[0].shape[0]) if ex and getattr(ex[0], "ndim", 0) else None
        gen = None
        if programs is not None and hasattr(module, "edge_generation"):
            from edgesdk.converters.programs import TorchPrograms
            gen = TorchPrograms(module)
        return cls(run, batch, "pytorch", gen)

    @classmethod
    def artifact(cls, path, threads: int | None = None) -> "Runner":
        from edgesdk import runtime
        sess = runtime.load(path, threads=threads, nan_policy="allow")
        first = sess.inputs[0].shape if sess.inputs else ()
        batch = first[0] if first and isinstance(first[0], int) else None

        def run(arrays, program=None):
            return sess.run(list(arrays), program=program)
        r = cls(run, batch, "artifact", sess if sess.generation is not None else None)
        r.session = sess
        return r

    def run(self, arrays, program: str | None = None) -> list[np.ndarray]:
        return self._run(arrays, program)

    def map(self, arrays, program: str | None = None) -> list[np.ndarray]:
        arrays = [np.asarray(a) for a in arrays]
        n = len(arrays[0])
        b = self.batch or n
        chunks: list[list[np.ndarray]] = []
        for start in range(0, n, b):
            part = [a[start:start + b] for a in arrays]
            short = b - len(part[0])
            if short:  # pad the last chunk to the exported batch size, drop the padding after
                part = [np.concatenate([p, np.repeat(p[-1:], short, axis=0)]) for p in part]
            outs = self.run(part, program)
            chunks.append([o[:b - short] for o in outs])
        return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


# ----------------------------------------------------------------------------- registry

@dataclass
class FamilyContext:
    spec: Any                      # edgesdk.pipeline.DistillSpec
    teacher: nn.Module | None      # the user's teacher, or None: the family's default
    data: Any                      # the user's data, or None: the family's default
    quick: bool
    cache: TrainingCache
    log: Callable[[str], None] = lambda s: None
    threads: int = 1               # torch threads while training


@dataclass
class FamilyResult:
    """What a family hands the pipeline (see the module docstring)."""

    students: dict[str, nn.Module]
    teacher: nn.Module | None
    example_inputs: tuple | None
    quality: Callable[[Runner], float]
    metric: str
    reference_quality: float | None = None
    reference: str = "fp32 teacher"
    calibration: list | None = None     # input tuples (exported shapes) for static quantization; prompts
                                        # (token id lists) for generation models (edge_generation)
    eval_data: list | None = None       # input tuples (or held-out prompts) for the quantization gate
    info: dict = field(default_factory=dict)
    # (quality function, what it scores): the same metric on a spread subset of the held-out data,
    # used where one generation takes seconds (an emulated NPU) and compared with fp32 on that subset
    quality_subset: tuple[Callable[[Runner], float], str] | None = None


@dataclass(frozen=True)
class Family:
    name: str
    fn: Callable[[FamilyContext], FamilyResult]
    sources: tuple
    description: str


FAMILIES: Registry[Family] = Registry("student family")
_SDK_SOURCES = ("sdk/families/base.py",)


def register_family(name: str, sources: tuple = (), description: str = ""):
    """Decorator: ``@register_family("encdec", sources=("models/encdec.py",))`` on
    ``fn(ctx: FamilyContext) -> FamilyResult``. ``sources`` (paths from the repository root)
    define the code version in the cache key. Duplicate names are rejected."""
    def deco(fn):
        FAMILIES.register(name, Family(name, fn, tuple(sources) + _SDK_SOURCES,
                                       description or (fn.__doc__ or "").strip().split("\n")[0]))
        return fn
    return deco


def list_families() -> list[str]:
    return FAMILIES.names()


def get_family(name: str) -> Family:
    return FAMILIES.get(name)


# ----------------------------------------------------------------------------- helpers for families

def accuracy(logits: np.ndarray, labels) -> float:
    y = np.asarray(labels)
    return float((np.asarray(logits).argmax(-1) == y).mean()) if len(y) else float("nan")


def spread(items: list, n: int) -> list:
    """``n`` of ``items`` spread evenly over the list (all of them when ``n >= len(items)``)."""
    k = len(items)
    return list(items) if n >= k else [items[(i * k) // n] for i in range(n)]


def family_options(ctx: "FamilyContext", family: str, valid: tuple) -> dict:
    """``distill.options`` of one family entry, unknown keys rejected with the valid ones listed."""
    opts = dict(ctx.spec.options or {})
    unknown = set(opts) - set(valid)
    if unknown:
        raise ConfigError(f"family {family}: unknown distill.options {sorted(unknown)}; valid: {', '.join(valid)}")
    return opts


def torch_threads(n: int):
    """Context manager: torch runs ``n`` intra-op threads inside, the previous count after."""
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)
    return _Ctx()
