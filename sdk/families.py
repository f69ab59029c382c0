"""Student families for `edgesdk.pipeline`: how each family distils its students, and how their
quality is measured, behind one small interface (trained modules are cached by `edgesdk.cache`).

A family is a function registered by name that takes a `FamilyContext` and returns a
`FamilyResult`::

    from edgesdk.families import FamilyContext, FamilyResult, register_family

    @register_family("mlp", sources=("models/mlp.py", "models/distill/recipes.py"))
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
- Students implementing ``edge_programs()`` pass ``example_inputs=None``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgesdk.runtime.errors import ConfigError
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


@dataclass(frozen=True)
class Family:
    name: str
    fn: Callable[[FamilyContext], FamilyResult]
    sources: tuple
    description: str


_FAMILIES: dict[str, Family] = {}
_SDK_SOURCES = ("sdk/families.py",)


def register_family(name: str, sources: tuple = (), description: str = ""):
    """Decorator: ``@register_family("encdec", sources=("models/encdec.py",))`` on
    ``fn(ctx: FamilyContext) -> FamilyResult``. ``sources`` (paths from the repository root)
    define the code version in the cache key. Duplicate names are rejected."""
    def deco(fn):
        prev = _FAMILIES.get(name)
        if prev is not None and prev.fn is not fn:
            raise ValueError(f"family {name!r} is already registered by {prev.fn.__module__}.{prev.fn.__qualname__}")
        _FAMILIES[name] = Family(name, fn, tuple(sources) + _SDK_SOURCES,
                                 description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn
    return deco


def list_families() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ConfigError(f"Unknown student family {name!r}. Available: {', '.join(list_families())}")
    return _FAMILIES[name]


# ----------------------------------------------------------------------------- helpers for families

def accuracy(logits: np.ndarray, labels) -> float:
    y = np.asarray(labels)
    return float((np.asarray(logits).argmax(-1) == y).mean()) if len(y) else float("nan")


def family_options(ctx: "FamilyContext", family: str, valid: tuple) -> dict:
    """``distill.options`` of one family entry, unknown keys rejected with the valid ones listed."""
    opts = dict(ctx.spec.options or {})
    unknown = set(opts) - set(valid)
    if unknown:
        raise ConfigError(f"family {family}: unknown distill.options {sorted(unknown)}; valid: {', '.join(valid)}")
    return opts


def _threads(n: int):
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            torch.set_num_threads(n)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)
    return _Ctx()


# ----------------------------------------------------------------------------- mlp

_MLP_SOURCES = ("models/mlp.py", "models/registry.py", "models/distill/recipes.py", "models/distill/trainer.py",
                "models/distill/losses.py", "models/teachers/hgnn.py", "models/data/hypergraph.py")


@register_family("mlp", sources=_MLP_SOURCES,
                 description="graph-free MLP students (LightHGNN+) from an HGNN teacher on scikit-learn digits; "
                             "or any teacher on your features (KL + CE)")
def mlp_family(ctx: FamilyContext) -> FamilyResult:
    """MLP students. Default: LightHGNN+ on the digits k-NN hypergraph (1797 nodes, 64 features,
    10 classes, bundled with scikit-learn): an HGNN teacher, graph-free MLP students scored by
    accuracy on the nodes whose labels training never used. With ``distill.teacher`` and
    ``distill.data`` (features ``(N, F)``, optionally labels): KL to the teacher's logits (+ CE).
    ``distill.students`` maps a name to a ``models.create`` config (``model: mlp-small`` ...)."""
    if (ctx.teacher is None) != (ctx.data is None):
        raise ConfigError("family mlp: give both distill.teacher and distill.data (your teacher and its features), "
                          "or neither (the embedded digits teacher and data)")
    if ctx.teacher is None:
        return _mlp_digits(ctx)
    return _mlp_generic(ctx)


def _student_specs(ctx, default: dict) -> dict[str, dict]:
    """``distill.students`` (name -> models.create config) or the default; a quick run keeps the first."""
    specs = ctx.spec.students or default
    if ctx.quick:
        specs = dict(list(specs.items())[:1])
    out = {}
    for name, cfg in specs.items():
        cfg = dict(cfg or {})
        out[name] = {"model": cfg.pop("model", name if name.startswith("mlp") else "mlp"), **cfg}
    return out


def _mlp_digits(ctx: FamilyContext) -> FamilyResult:
    from edgesdk import models
    from edgesdk.models.data import digits_hypergraph
    from edgesdk.models.distill.recipes import lighthgnn
    from edgesdk.models.teachers.hgnn import HGNN, HGNNConfig, predict, train_hgnn

    opts = dict(ctx.spec.options or {})
    unknown = set(opts) - {"teacher_epochs", "k"}
    if unknown:
        raise ConfigError(f"family mlp: unknown distill.options {sorted(unknown)}; valid: k, teacher_epochs")
    hg = digits_hypergraph(k=int(opts.get("k", 10)), seed=ctx.spec.seed)
    epochs = int(opts.get("teacher_epochs", 60 if ctx.quick else 200))
    steps = ctx.spec.steps or (60 if ctx.quick else 200)
    hidden = 64
    with _threads(ctx.threads):
        teacher = ctx.cache.module(
            "teacher", build=lambda: HGNN(HGNNConfig(in_dim=hg.num_features, out_dim=hg.num_classes, hidden=hidden,
                                                     dropout=0.5)),
            train=lambda: train_hgnn(hg, epochs=epochs, seed=ctx.spec.seed, hidden=hidden, threads=ctx.threads))
        default = {"mlp-small": {"model": "mlp-small"}, "mlp-256": {"model": "mlp-small", "hidden": 256}}
        students = {}
        for name, cfg in _student_specs(ctx, default).items():
            cfg = dict(cfg)
            model_name = cfg.pop("model")
            build = (lambda mn=model_name, c=cfg: models.create(mn, in_dim=hg.num_features, out_dim=hg.num_classes, **c))
            students[name] = ctx.cache.module(
                f"student-{name}", build=build,
                train=lambda b=build: lighthgnn(hg, teacher=teacher, student=b(), steps=steps, seed=ctx.spec.seed,
                                                threads=ctx.threads).student)
    idx = torch.cat([hg.splits["test"], hg.splits["test_inductive"]])
    if ctx.quick:
        idx = idx[:200]
    x_eval, y_eval = hg.x[idx].numpy(), hg.y[idx].numpy()
    teacher_acc = accuracy(predict(teacher, hg)[idx].numpy(), y_eval)
    train_idx = hg.splits["train"]
    calib = [(hg.x[i:i + 1].clone(),) for i in train_idx[:64].tolist()]
    val = hg.splits["val"]
    eval_data = [(hg.x[i:i + 1].clone(),) for i in val[:48].tolist()]

    def quality(run: Runner) -> float:
        return accuracy(run.map([x_eval])[0], y_eval)

    return FamilyResult(
        students=students, teacher=teacher, example_inputs=(hg.x[:1].clone(),), quality=quality,
        metric="accuracy", reference_quality=teacher_acc,
        reference=f"HGNN teacher on the full hypergraph (fp32 PyTorch, {hg.name})",
        calibration=calib, eval_data=eval_data,
        info={"data": hg.name, "eval_nodes": int(len(idx)), "teacher_epochs": epochs, "student_steps": steps,
              "input": "one node's 64 pixel features (batch 1); the student never sees the graph"})


def _as_features(data) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(data, dict):
        x, y = data.get("x"), data.get("labels", data.get("y"))
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = data
    else:
        x, y = data, None
    x = torch.as_tensor(x).float() if not torch.is_tensor(x) else x.float()
    if x.ndim != 2:
        raise ConfigError(f"family mlp: distill.data must give features (N, F) [and labels (N,)], got shape "
                          f"{tuple(x.shape)}")
    if y is not None:
        y = torch.as_tensor(y).long()
    return x, y


def _mlp_generic(ctx: FamilyContext) -> FamilyResult:
    from edgesdk import models
    from edgesdk.models.distill.trainer import DistillConfig, LossSpec, TensorData, distill

    x, y = _as_features(ctx.data)
    teacher = ctx.teacher
    try:
        teacher.eval()
    except NotImplementedError:  # an ExportedProgram's module: already in eval form
        pass
    with torch.no_grad():
        t_logits = teacher(x[:2])
    out_dim = int(t_logits.shape[-1])
    n = len(x)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(ctx.spec.seed))
    n_eval = max(1, n // 5)
    ev, tr = perm[:n_eval], perm[n_eval:]
    tensors = {"x": x[tr]}
    if y is not None:
        tensors["labels"] = y[tr]
    steps = ctx.spec.steps or (100 if ctx.quick else 300)
    losses = [LossSpec("kl", 1.0, {"temperature": 2.0})] + ([LossSpec("ce", 0.5)] if y is not None else [])
    cfg = DistillConfig(losses=losses, steps=steps, batch_size=min(64, len(tr)), lr=3e-3, seed=ctx.spec.seed,
                        progress=False)
    students = {}
    with _threads(ctx.threads):
        for name, scfg in _student_specs(ctx, {"mlp": {"model": "mlp", "hidden": 128, "depth": 2}}).items():
            scfg = dict(scfg)
            mn = scfg.pop("model")
            build = (lambda mn=mn, c=scfg: models.create(mn, in_dim=x.shape[1], out_dim=out_dim, **c))
            students[name] = ctx.cache.module(
                f"student-{name}", build=build,
                train=lambda b=build: distill(teacher, b(), TensorData(tensors, inputs=("x",)), cfg))
    x_eval = x[ev].numpy()
    with torch.no_grad():
        t_eval = teacher(x[ev]).numpy()
    if y is not None:
        y_eval, metric = y[ev].numpy(), "accuracy"
        ref = accuracy(t_eval, y_eval)
    else:
        y_eval, metric, ref = t_eval.argmax(-1), "top-1 agreement with the teacher", 1.0

    def quality(run: Runner) -> float:
        return accuracy(run.map([x_eval])[0], y_eval)

    calib = [(x[i:i + 1].clone(),) for i in tr[:64].tolist()]
    eval_data = [(x[i:i + 1].clone(),) for i in ev[:48].tolist()]
    return FamilyResult(students=students, teacher=teacher, example_inputs=(x[:1].clone(),), quality=quality,
                        metric=metric, reference_quality=ref, reference="your teacher (fp32 PyTorch)",
                        calibration=calib, eval_data=eval_data,
                        info={"train_samples": len(tr), "eval_samples": n_eval, "steps": steps})


# The generation families live in their own files and register on import.
from edgesdk import family_encdec  # noqa: E402,F401  (registers "encdec")
from edgesdk import family_mamba  # noqa: E402,F401  (registers "mamba")
