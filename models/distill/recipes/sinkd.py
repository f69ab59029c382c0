"""Recipe ``sinkd``: SinKD's objective — Sinkhorn Distance Minimization for Knowledge Distillation
(Cui et al., LREC-COLING 2024, arXiv 2402.17110) — weighted against CE and KL as its authors do.

The authors' GLUE training loop (github.com/2018cx/SinKD, ``glue_train.py``, ``distill_train``)
adds up, per batch::

    loss = α · KD + (1 − α) · CE + β · Sinkhorn

- KD is their ``DistillKL``: the cross-entropy −Σ p_T log q_S of the teacher's and the student's
  distributions at temperature T, averaged over the batch, with **no** T² factor;
- CE is the student's cross-entropy against the labels;
- Sinkhorn is their ``Sinkhorn`` module: 0.001 · Σ P ⊙ C at T = 2, ε = 0.1, 20 rounds — our
  ``sinkhorn_kd`` loss times the 0.001 scale;
- their student scripts (``script/student/*.sh``) use α ∈ {0.8, 0.9, 1.0} (0.9 most often),
  β = 0.8 and T between 1 and 4 for KD. The defaults here are α = 0.9, β = 0.8, T_KD = 2.

`sinkd_losses` turns that into `LossSpec` terms for the shared trainer: ``kl`` with
``value="cross_entropy"`` at weight α/T² (our ``kl`` multiplies by T², theirs does not, so the
gradients are identical), ``ce`` at 1 − α and ``sinkhorn_kd`` at β · 0.001. `sinkd_term` is the
SinKD term alone, to add to another recipe's losses (``extra_losses=`` of ``lighthgnn``,
``tokenbag`` and ``encdec-from-decoder``). The recipe ``sinkd`` trains any teacher / student /
data triple of the trainer's protocol with those losses.

Example::

    import torch
    from edgesdk.models.distill import TensorData
    from edgesdk.models.distill.recipes import get_recipe
    x, y = torch.randn(256, 8), torch.randint(0, 3, (256,))
    teacher, student = torch.nn.Linear(8, 3), torch.nn.Linear(8, 3)
    res = get_recipe("sinkd")(teacher, student, TensorData({"x": x, "labels": y}), steps=20, batch_size=16)
    res.config.losses    # kl (cross-entropy form) 0.9/T², ce 0.1, sinkhorn_kd 0.8·0.001

Plain PyTorch (imports nothing of the SDK beyond `models`).
"""

from __future__ import annotations

import time

import torch
from torch import nn

from edgesdk.models.distill.recipes.base import RecipeResult, num_threads, register_recipe
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, distill

__all__ = ["SINKHORN_SCALE", "sinkd_term", "sinkd_losses", "sinkd"]

SINKHORN_SCALE = 1e-3  # the reference multiplies its Sinkhorn loss by 0.001 (loss.py, Sinkhorn.forward)


def sinkd_term(beta: float = 0.8, *, temperature: float = 2.0, epsilon: float = 0.1, n_iter: int = 20,
               key: str = "logits", mask_key: str | None = "mask", scale: float = SINKHORN_SCALE) -> LossSpec:
    """The SinKD term: ``sinkhorn_kd`` at weight β · ``scale`` (0.8 · 0.001 by default)."""
    if not beta >= 0:
        raise ValueError(f"beta must be >= 0, got {beta!r}")
    return LossSpec("sinkhorn_kd", beta * scale, {"key": key, "mask_key": mask_key, "temperature": temperature,
                                                  "epsilon": epsilon, "n_iter": n_iter})


def sinkd_losses(alpha: float = 0.9, beta: float = 0.8, *, kd_temperature: float = 2.0,
                 sinkhorn_temperature: float = 2.0, epsilon: float = 0.1, n_iter: int = 20, key: str = "logits",
                 mask_key: str | None = "mask", labels_key: str = "labels") -> list[LossSpec]:
    """SinKD's objective as trainer terms: α·KD + (1 − α)·CE + β·0.001·Sinkhorn (module docstring).

    >>> [(t.name, round(t.weight, 6)) for t in sinkd_losses()]
    [('kl', 0.225), ('ce', 0.1), ('sinkhorn_kd', 0.0008)]
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1] (the KD share; CE gets 1 - alpha), got {alpha!r}")
    if not kd_temperature > 0:
        raise ValueError(f"kd_temperature must be > 0, got {kd_temperature!r}")
    terms = []
    if alpha:
        terms.append(LossSpec("kl", alpha / kd_temperature ** 2,
                              {"key": key, "mask_key": mask_key, "temperature": kd_temperature,
                               "value": "cross_entropy"}))
    if alpha < 1.0:
        terms.append(LossSpec("ce", 1.0 - alpha, {"key": key, "mask_key": mask_key, "labels_key": labels_key}))
    if beta:
        terms.append(sinkd_term(beta, temperature=sinkhorn_temperature, epsilon=epsilon, n_iter=n_iter, key=key,
                                mask_key=mask_key))
    if not terms:
        raise ValueError("alpha = 1 and beta = 0 leave only KD: use the 'kl' loss directly")
    return terms


@register_recipe("sinkd")
def sinkd(teacher: nn.Module, student: nn.Module, data, *, alpha: float = 0.9, beta: float = 0.8,
          kd_temperature: float = 2.0, steps: int = 300, batch_size: int = 32, lr: float = 1e-3,
          weight_decay: float = 0.0, schedule: str = "linear", warmup_steps: int = 0, eval_fn=None,
          eval_every: int = 100, seed: int = 0, threads: int | None = None, progress: bool = False,
          **sinkhorn) -> RecipeResult:
    """Distil ``teacher`` into ``student`` on ``data`` (any trainer data: ``sample`` and ``inputs``,
    batches holding ``labels``) with SinKD's objective (`sinkd_losses`; ``sinkhorn`` passes
    ``sinkhorn_temperature``, ``epsilon``, ``n_iter``, ``key``, ``mask_key``, ``labels_key``).
    AdamW with a linear schedule, as the reference's BERT runs. The batch is SinKD's transport
    batch: the Sinkhorn term grows with it, so keep ``batch_size`` near the reference's 16–32 or
    lower ``beta``. Returns a `RecipeResult` (``metrics`` holds the last ``eval_fn`` result)."""
    t0 = time.perf_counter()
    with num_threads(threads):
        torch.manual_seed(seed)
        losses = sinkd_losses(alpha, beta, kd_temperature=kd_temperature, **sinkhorn)
        cfg = DistillConfig(losses=losses, steps=steps, batch_size=batch_size, optimizer="adamw", lr=lr,
                            weight_decay=weight_decay, schedule=schedule, warmup_steps=warmup_steps,
                            eval_every=eval_every, seed=seed, progress=progress)
        distill(teacher, student, data, cfg, eval_fn=eval_fn)
    history = student.distill_history
    metrics = next((h["metrics"] for h in reversed(history) if h.get("metrics")), {})
    return RecipeResult(student, teacher, dict(metrics), cfg, {"total_s": time.perf_counter() - t0},
                        {"history": history})
