"""Pipeline family ``mlp``: graph-free MLP students. Default: LightHGNN+ from an HGNN teacher on the
digits hypergraph bundled with scikit-learn; with the user's teacher and features: KL (+ CE)."""

from __future__ import annotations

import torch

from edgesdk.runtime.errors import ConfigError
from edgesdk.families.base import (
    FamilyContext, FamilyResult, Runner, accuracy, register_family, torch_threads,
)

_MLP_SOURCES = ("sdk/families/mlp.py", "models/mlp.py", "models/registry.py", "models/distill/recipes/base.py", "models/distill/recipes/lighthgnn.py", "models/distill/trainer.py",
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
    with torch_threads(ctx.threads):
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
    with torch_threads(ctx.threads):
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
