"""Distillation losses in a string-keyed registry: ``get_loss(name, **kwargs) -> nn.Module``.

Every loss has one forward signature, so a trainer can mix them by name::

    loss(student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor  # scalar

Constructor kwargs choose which dict keys are read (logit losses: ``key="logits"``, shape
``(..., V)``). With ``mask_key`` (default ``"mask"``) present in ``batch`` — a bool/0-1 tensor whose
shape is the leading shape ``(...)`` of the inputs — only the masked positions count; otherwise
every position does. Logit divergences sum over the vocabulary and average over positions.
Teacher tensors are targets: every loss detaches them. Divergences are computed from
``log_softmax`` / ``logsumexp`` in float32 (half inputs are upcast); ``-inf`` logits (a masked
vocabulary) give finite losses and gradients.

| name | formula (p = teacher, q = student, both at temperature T where there is one) |
|---|---|
| ``kl`` | T² · KL(p ‖ q) (Hinton KD; ``value="cross_entropy"``: T² · H(p, q)) |
| ``reverse_kl`` | T² · KL(q ‖ p) |
| ``js`` | T² · (λ KL(q ‖ m) + (1−λ) KL(p ‖ m)), m = (1−λ)p + λq; λ = ``lam``, ½ by default (DistiLLM uses 0.9) |
| ``skew_kl`` | T² · KL(p ‖ λp + (1−λ)q), λ = 0.1 (DistiLLM; ``value="cross_entropy"`` as ``kl``) |
| ``skew_reverse_kl`` | T² · KL(q ‖ λq + (1−λ)p), λ = 0.1 (DistiLLM) |
| ``taid`` | KL(p_t ‖ q), p_t = softmax((1−t)·sg(z_s) + t·z_T), t on TAID's adaptive schedule |
| ``minilm`` | KL(A_T ‖ A_S) + KL(VR_T ‖ VR_S), VR = softmax(V Vᵀ/√d_head), averaged per sequence (MiniLM) |
| ``hidden_mse`` | mean ‖W h_s + b − h_T‖² / D_T (learned projector W when dims differ) |
| ``hidden_cosine`` | mean (1 − cos(W h_s + b, h_T)) |
| ``sinkhorn_kd`` | SinKD: Σ P ⊙ C, C_ij = ‖q_i − p_j‖₁ over the batch, P = 20 Sinkhorn normalisations of exp(−C/ε) (gradient through them) |
| ``feature_ot`` | entropic OT between the student and teacher feature batches, Sinkhorn run to convergence |
| ``mse`` | mean (z_s − z_T)² on logits |
| ``ce`` | cross-entropy against ``batch["labels"]`` (ignore_index −100) |
| ``group_kl`` | T² · KL(p̄_g ‖ q̄_g) per group g of positions (``batch["groups"]``), p̄_g = mean of its members' p (LightHGNN+ hyperedges) |
| ``relation_mse`` | mean over pairs i ≠ j of (cos(s_i, s_j) − cos(t_i, t_j))² in the batch (relational KD; widths may differ) |

``kl``, ``skew_kl`` and ``taid`` take ``value="kl" | "cross_entropy"``: the papers' code (DistiLLM,
TAID, SinKD) logs the cross-entropy −Σ p log q, which exceeds the KL by the target's entropy
H(p). The target does not depend on the student, so the gradient is the same either way; only
the logged number (and TAID's schedule, which reads it) changes.

``sinkhorn`` is a deprecated alias of ``feature_ot`` (``get_loss("sinkhorn")`` warns): it never
was SinKD, which is ``sinkhorn_kd``. ``tests/test_losses_reference.py`` checks every registered
loss against a plain-torch transcription of its paper's formula or reference code.

Losses with parameters (the projectors of ``hidden_*`` and ``feature_ot``) create them in
``__init__``: pass ``loss.parameters()`` to the optimizer together with the student's.

Example::

    >>> import torch
    >>> from edgesdk.models.distill.losses import get_loss
    >>> kd = get_loss("kl", temperature=2.0)
    >>> s = torch.randn(4, 10, requires_grad=True)
    >>> kd({"logits": s}, {"logits": torch.randn(4, 10)}).backward()
    >>> s.grad.shape
    torch.Size([4, 10])
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from edgesdk.runtime.registry import Registry, RegistryError

__all__ = [
    "DistillLoss", "LOSSES", "UnknownLossError", "register_loss", "get_loss", "get_loss_class", "list_losses",
    "KLLoss", "ReverseKLLoss", "JSLoss", "SkewKLLoss", "SkewReverseKLLoss", "TAIDLoss", "MiniLMLoss",
    "HiddenMSELoss", "HiddenCosineLoss", "SinkhornKDLoss", "FeatureOTLoss", "LogitMSELoss", "CrossEntropyLoss",
    "GroupKLLoss", "RelationMSELoss", "sinkhorn_normalize", "entropic_ot",
]

# ------------------------------------------------------------------------------------------ registry

def _check_loss(name, cls) -> None:
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise TypeError(f"@register_loss({name!r}) decorates nn.Module subclasses, got {cls!r}")


LOSSES: Registry[type[nn.Module]] = Registry("loss", check=_check_loss, name_attr="loss_name")
UnknownLossError = RegistryError  # an unregistered loss name (a KeyError, ValueError and ConfigError)

# deprecated name -> (current name, {old kwarg: new kwarg}, why)
_DEPRECATED: dict[str, tuple[str, dict[str, str], str]] = {
    "sinkhorn": ("feature_ot", {"n_iter": "max_iter"},
                 "it is the feature-level entropic OT loss, not SinKD; its value is now the entropic OT objective "
                 "with Sinkhorn run to convergence (n_iter is read as max_iter). For SinKD (Cui et al., 2024) use "
                 "'sinkhorn_kd'"),
}


def register_loss(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator: ``@register_loss("kl")`` on an ``nn.Module`` subclass whose forward is
    ``forward(student, teacher, batch=None) -> scalar``. A name taken by another class is rejected."""
    return LOSSES.register(name)


def list_losses() -> list[str]:
    """Registered loss names, sorted."""
    return LOSSES.names()


def _current_name(name: str) -> str:
    """``name``, or the current name of a deprecated one (with a FutureWarning, pointed at the
    caller of ``get_loss`` / ``get_loss_class``, that says why)."""
    if name in _DEPRECATED and name not in LOSSES:
        new, _, why = _DEPRECATED[name]
        warnings.warn(f"loss {name!r} is deprecated: use {new!r} ({why})", FutureWarning, stacklevel=3)
        return new
    return name


def get_loss_class(name: str) -> type[nn.Module]:
    """The class registered under ``name`` (``UnknownLossError`` lists the names if there is none;
    a deprecated name warns and gives its successor)."""
    name = _current_name(name)
    return LOSSES.get(name)


def get_loss(name: str, **kwargs) -> nn.Module:
    """Build a registered loss: ``get_loss("kl", temperature=2.0)``.

    An unknown name raises ``UnknownLossError`` (a KeyError and a ValueError) listing the
    registered names; an unknown keyword raises TypeError listing the accepted ones. A
    deprecated name (``sinkhorn``) warns and builds its successor, renaming old keywords."""
    if name in _DEPRECATED and name not in LOSSES:
        renamed = _DEPRECATED[name][1]
        kwargs = {renamed.get(k, k): v for k, v in kwargs.items()}
        name = _current_name(name)
    cls = get_loss_class(name)
    sig = inspect.signature(cls.__init__)
    try:
        sig.bind(None, **kwargs)
    except TypeError as e:
        accepted = [p for p in sig.parameters if p != "self"]
        raise TypeError(f"get_loss({name!r}): {e}. {cls.__name__} accepts: {', '.join(accepted)}") from None
    return cls(**kwargs)


# ------------------------------------------------------------------------------------------ helpers

def _f32(x: Tensor) -> Tensor:
    """Upcast half/bfloat16 to float32 for the divergence math; leave float32/64 alone."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _log_softmax(z: Tensor) -> Tensor:
    """log_softmax over the last dim with -inf replaced by the dtype's lowest finite value, so that
    0 · (log p − log q) stays 0 (and its gradient finite) when a logit is -inf."""
    return torch.log_softmax(z, dim=-1).clamp_min(torch.finfo(z.dtype).min)


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p ‖ q) over the last dim from log-probabilities: Σ p (log p − log q).  (..., V) -> (...)"""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """log(w·a + (1−w)·b), computed with logaddexp."""
    if w == 0.0:
        return log_b
    if w == 1.0:
        return log_a
    return torch.logaddexp(log_a + math.log(w), log_b + math.log1p(-w))


def _entropy(log_p: Tensor) -> Tensor:
    """H(p) = −Σ p log p over the last dim (0 · log 0 = 0).  (..., V) -> (...)"""
    return -(log_p.exp() * log_p).sum(-1)


VALUES = ("kl", "cross_entropy")


def _check_value(owner: str, value: str) -> str:
    if value not in VALUES:
        raise ValueError(f"{owner}: value must be one of {VALUES}, got {value!r}; 'cross_entropy' reports "
                         "−Σ p log q as the papers' code does, 'kl' subtracts the target's entropy (same gradient)")
    return value


def _mean(values: Tensor) -> Tensor:
    """Mean over every element; 0 (still attached to the graph) when nothing is selected."""
    return values.mean() if values.numel() else values.sum()


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def _read(d: dict | None, key: str, side: str, loss: nn.Module, kwarg: str) -> Tensor:
    if d is None or key not in d:
        have = ", ".join(map(repr, d)) if d else "nothing"
        raise KeyError(f"{type(loss).__name__} reads {side}[{key!r}] but {side} has {have}; "
                       f"pass {kwarg}=... to read another key")
    x = d[key]
    if not torch.is_tensor(x):
        raise TypeError(f"{type(loss).__name__}: {side}[{key!r}] must be a Tensor, got {type(x).__name__}")
    return x


# ------------------------------------------------------------------------------------------ base

class DistillLoss(nn.Module):
    """Base class: mask handling and the example inputs the registry-wide tests use.

    ``at_match`` says what the loss is when student == teacher: ``"zero"``, ``"min"`` (smallest
    but not exactly 0) or ``None`` (no such relation, e.g. cross-entropy against labels).
    """

    at_match: str | None = "zero"
    loss_name: str = ""
    reads_teacher: bool = True   # False: the trainer skips the teacher's forward in stages made only of such losses

    def __init__(self, mask_key: str | None = "mask"):
        super().__init__()
        self.mask_key = mask_key

    def _mask(self, batch: dict | None, lead_shape: torch.Size | tuple, device) -> Tensor | None:
        """batch[mask_key] as a bool tensor of ``lead_shape``, or None when there is none."""
        if batch is None or self.mask_key is None or self.mask_key not in batch:
            return None
        m = torch.as_tensor(batch[self.mask_key], device=device)
        if tuple(m.shape) != tuple(lead_shape):
            raise ValueError(f"{type(self).__name__}: batch[{self.mask_key!r}] has shape {tuple(m.shape)}, "
                             f"expected {tuple(lead_shape)} (the inputs' leading dims); fix the mask or pass "
                             f"mask_key=None to use every position")
        return m.bool()

    def _select(self, batch: dict | None, lead_shape, *xs: Tensor) -> list[Tensor]:
        """Flatten the leading dims ``lead_shape`` of each x into one axis of positions and keep only
        the masked ones: (*lead, *rest) -> (N, *rest)."""
        n = len(lead_shape)
        out = [x.reshape(-1, *x.shape[n:]) for x in xs]
        m = self._mask(batch, lead_shape, xs[0].device)
        if m is not None:
            keep = m.reshape(-1)
            out = [x[keep] for x in out]
        return out

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        """Tiny inputs for tests: ``(init_kwargs, student, teacher, batch)``. With ``matched`` the
        teacher equals the student (and the kwargs make that comparable)."""
        g = torch.Generator().manual_seed(seed)
        s = 2 * torch.randn(2, 3, 5, generator=g)  # (B, T, V)
        t = s.clone() if matched else 2 * torch.randn(2, 3, 5, generator=g)
        return {}, {"logits": s}, {"logits": t}, None


class _LogitLoss(DistillLoss):
    """Reads ``student[key]`` and ``teacher[key]`` logits of shape (..., V)."""

    def __init__(self, key: str = "logits", mask_key: str | None = "mask"):
        super().__init__(mask_key)
        self.key = key

    def _logits(self, student: dict, teacher: dict, batch: dict | None) -> tuple[Tensor, Tensor]:
        s = _read(student, self.key, "student", self, "key")
        t = _read(teacher, self.key, "teacher", self, "key").detach()
        if s.shape != t.shape:
            raise ValueError(f"{type(self).__name__}: student logits {tuple(s.shape)} and teacher logits "
                             f"{tuple(t.shape)} differ; they must share the position dims and the vocabulary")
        s, t = self._select(batch, s.shape[:-1], s, t)  # (N, V)
        return _f32(s), _f32(t)


class _LogitDivergence(_LogitLoss):
    """T² · D(teacher, student) on temperature-softened distributions, summed over V, mean over positions."""

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 1.0):
        super().__init__(key, mask_key)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.temperature = float(temperature)

    def divergence(self, log_p: Tensor, log_q: Tensor) -> Tensor:
        """(N, V) teacher/student log-probabilities -> (N,) divergences."""
        raise NotImplementedError

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, t = self._logits(student, teacher, batch)  # (N, V)
        T = self.temperature
        per = self.divergence(_log_softmax(t / T), _log_softmax(s / T))  # (N,)
        return _mean(per) * (T * T)

    def extra_repr(self) -> str:
        return f"key={self.key!r}, temperature={self.temperature}"


# ------------------------------------------------------------------------------------------ logit divergences

@register_loss("kl")
class KLLoss(_LogitDivergence):
    """Forward KL (Hinton KD): T² · KL(p_T ‖ q_S), p = softmax(z_T/T), q = softmax(z_S/T).

    ``value="cross_entropy"`` returns T² · H(p_T, q_S) = T² · (KL + H(p_T)) instead, the number
    DistiLLM's ``forward_kl`` and SinKD's ``DistillKL`` log. H(p_T) does not depend on the
    student: the gradient is identical, only the reported value differs."""

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 1.0,
                 value: str = "kl"):
        super().__init__(key, mask_key, temperature)
        self.value = _check_value("KLLoss", value)

    def divergence(self, log_p, log_q):
        d = _kl(log_p, log_q)
        return d + _entropy(log_p) if self.value == "cross_entropy" else d

    def extra_repr(self) -> str:
        return super().extra_repr() + f", value={self.value!r}"


@register_loss("reverse_kl")
class ReverseKLLoss(_LogitDivergence):
    """Reverse KL (mode-seeking): T² · KL(q_S ‖ p_T)."""

    def divergence(self, log_p, log_q):
        return _kl(log_q, log_p)


@register_loss("js")
class JSLoss(_LogitDivergence):
    """Generalised Jensen–Shannon (DistiLLM's ``js_distance``):
    T² · (λ KL(q ‖ m) + (1 − λ) KL(p ‖ m)) with m = (1 − λ) p + λ q, p = teacher, q = student.

    ``lam`` = λ ∈ (0, 1) is the student's weight in the mixture. λ = ½ (default) is the symmetric
    Jensen–Shannon divergence, bounded by T² ln 2; DistiLLM's default is λ = 0.9."""

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 1.0,
                 lam: float = 0.5):
        super().__init__(key, mask_key, temperature)
        if not 0.0 < lam < 1.0:
            raise ValueError(f"JSLoss: lam (λ) must be in (0, 1), got {lam!r}; at 0 or 1 the mixture equals one "
                             "side and the loss vanishes")
        self.lam = float(lam)

    def divergence(self, log_p, log_q):
        lam = self.lam
        log_m = _log_mix(log_q, log_p, lam)  # log(λq + (1−λ)p)
        return lam * _kl(log_q, log_m) + (1.0 - lam) * _kl(log_p, log_m)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", lam={self.lam}"


class _Skew(_LogitDivergence):
    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 1.0,
                 skew: float = 0.1):
        super().__init__(key, mask_key, temperature)
        if not 0.0 <= skew < 1.0:
            raise ValueError(f"skew (λ) must be in [0, 1), got {skew!r}; λ=0 is plain KL, λ→1 makes the loss vanish")
        self.skew = float(skew)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", skew={self.skew}"


@register_loss("skew_kl")
class SkewKLLoss(_Skew):
    """Skew KL (DistiLLM, Ko et al. 2024): T² · KL(p ‖ λp + (1−λ)q), p = teacher, q = student, λ = ``skew``.

    ``value="cross_entropy"`` returns T² · H(p, λp + (1−λ)q) (DistiLLM's ``skewed_forward_kl``
    value); the gradient is the same."""

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 1.0,
                 skew: float = 0.1, value: str = "kl"):
        super().__init__(key, mask_key, temperature, skew)
        self.value = _check_value("SkewKLLoss", value)

    def divergence(self, log_p, log_q):
        d = _kl(log_p, _log_mix(log_p, log_q, self.skew))
        return d + _entropy(log_p) if self.value == "cross_entropy" else d

    def extra_repr(self) -> str:
        return super().extra_repr() + f", value={self.value!r}"


@register_loss("skew_reverse_kl")
class SkewReverseKLLoss(_Skew):
    """Skew reverse KL (DistiLLM): T² · KL(q ‖ λq + (1−λ)p), λ = ``skew``."""

    def divergence(self, log_p, log_q):
        return _kl(log_q, _log_mix(log_q, log_p, self.skew))


# ------------------------------------------------------------------------------------------ TAID

@register_loss("taid")
class TAIDLoss(_LogitLoss):
    """TAID — Temporally Adaptive Interpolated Distillation (Shing et al., ICLR 2025, arXiv 2501.16937).

    Loss: ``KL(p_t ‖ q_s)`` with the intermediate target ``p_t = softmax((1 − t)·sg(z_s) + t·z_T)``
    (sg = stop-gradient: only ``log q_s`` carries gradient). At t = 0 the target is the student
    itself, at t = 1 the teacher.

    Schedule for t (the paper's Algorithm 1; the same update as the reference implementation).
    The trainer calls ``update(progress, loss_value)`` once per optimizer step, with
    ``progress = step / total_steps`` and the step's TAID loss J_n:

    - first call: only remember J_n (t stays ``t_start``);
    - afterwards::

        δ_n  = (J_{n−1} − J_n) / (J_{n−1} + 1e-15)          relative improvement of the objective
        m_n  = β·m_{n−1} + (1 − β)·δ_n                      momentum of δ, m_0 = 0
        Δt   = α · sigmoid(m_n) · (1 − t_n)                 larger while the student still improves fast
        t_{n+1} = min(t_end, max(t_start + (t_end − t_start)·progress, t_n + Δt))

      i.e. t never falls below the linear schedule, never decreases, and never exceeds ``t_end``.
      With ``adaptive=False`` t is the linear schedule alone. Defaults: t_start 0.4, t_end 1.0,
      α = 5e-4, β = 0.99 (the paper's).

    Non-finite loss values do not touch the momentum or J_{n−1} (the linear floor still applies).
    J is the full KL by default (0 when p_t = q_s). The reference code uses the cross-entropy
    −Σ p_t log q_s, which has the same gradient but exceeds the KL by H(p_t), so its δ_n differs
    slightly; ``value="cross_entropy"`` returns (and schedules on) that number, as the reference.

    ``extra_state()`` / ``load_extra_state()`` save and restore t, the momentum and J_{n−1}
    (a JSON-serialisable dict) for resuming; ``state_dict()`` holds no TAID state.

    >>> taid = TAIDLoss()
    >>> s = torch.randn(2, 7, requires_grad=True)
    >>> loss = taid({"logits": s}, {"logits": torch.randn(2, 7)})
    >>> loss.backward(); t = taid.update(progress=0.5, loss_value=loss)
    """

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", t_start: float = 0.4,
                 t_end: float = 1.0, alpha: float = 5e-4, beta: float = 0.99, adaptive: bool = True,
                 value: str = "kl"):
        super().__init__(key, mask_key)
        self.value = _check_value("TAIDLoss", value)
        if not 0.0 <= t_start < 1.0:
            raise ValueError(f"t_start must be in [0, 1), got {t_start!r}")
        if not (0.0 < t_end <= 1.0 and t_end >= t_start):
            raise ValueError(f"t_end must be in (0, 1] and >= t_start={t_start}, got {t_end!r}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.t_start, self.t_end, self.alpha, self.beta = float(t_start), float(t_end), float(alpha), float(beta)
        self.adaptive = bool(adaptive)
        self._t = self.t_start
        self._momentum = 0.0
        self._prev_loss: float | None = None
        self._last_loss: Tensor | None = None

    @property
    def t(self) -> float:
        """Current interpolation weight of the teacher."""
        return self._t

    @property
    def momentum(self) -> float:
        return self._momentum

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, z_t = self._logits(student, teacher, batch)  # (N, V)
        t = self._t
        log_pt = _log_softmax((1.0 - t) * s.detach() + t * z_t)  # target, no gradient
        per = _kl(log_pt, _log_softmax(s))  # (N,)
        if self.value == "cross_entropy":
            per = per + _entropy(log_pt)
        loss = _mean(per)
        self._last_loss = loss.detach()
        return loss

    def update(self, progress: float, loss_value: float | Tensor | None = None) -> float:
        """Advance t after an optimizer step (see the class docstring); returns the new t.

        ``progress`` = step / total_steps in [0, 1]; ``loss_value`` = this step's TAID loss J_n
        (defaults to the value of the last forward). Pass the TAID term itself, not a weighted
        total that includes other losses: δ_n is the relative change of J."""
        progress = float(progress)
        if not progress >= 0.0:
            raise ValueError(f"progress must be >= 0 (step / total_steps), got {progress!r}")
        progress = min(progress, 1.0)
        if loss_value is None:
            if self._last_loss is None:
                raise ValueError("TAIDLoss.update() without loss_value needs a forward call first")
            loss_value = self._last_loss
        loss = float(loss_value.detach()) if torch.is_tensor(loss_value) else float(loss_value)
        linear = self.t_start + (self.t_end - self.t_start) * progress
        if not self.adaptive:
            self._t = min(self.t_end, max(self._t, linear))
            return self._t
        if not math.isfinite(loss):
            self._t = min(self.t_end, max(linear, self._t))
            return self._t
        if self._prev_loss is None:  # first step: nothing to compare with yet
            self._prev_loss = loss
            return self._t
        rel = (self._prev_loss - loss) / (self._prev_loss + 1e-15)
        self._momentum = self.beta * self._momentum + (1.0 - self.beta) * rel
        delta = self.alpha * _sigmoid(self._momentum) * (1.0 - self._t)
        self._t = min(self.t_end, max(linear, self._t + delta))
        self._prev_loss = loss
        return self._t

    def extra_state(self) -> dict:
        """Schedule state as a JSON-serialisable dict (kept out of ``state_dict()``, which stays
        tensor-only for safetensors checkpoints)."""
        return {"t": self._t, "momentum": self._momentum, "prev_loss": self._prev_loss}

    def load_extra_state(self, state: dict) -> None:
        """Restore what ``extra_state()`` returned (to resume training)."""
        prev = state.get("prev_loss")
        self._t, self._momentum = float(state["t"]), float(state["momentum"])
        self._prev_loss = None if prev is None else float(prev)

    def extra_repr(self) -> str:
        return (f"t={self._t:.4f}, t_start={self.t_start}, t_end={self.t_end}, alpha={self.alpha}, "
                f"beta={self.beta}, adaptive={self.adaptive}, value={self.value!r}")


# ------------------------------------------------------------------------------------------ MiniLM

@register_loss("minilm")
class MiniLMLoss(DistillLoss):
    """MiniLM v1 (Wang et al. 2020) last-layer transfer, per head and query position:

        attn_weight · KL(A_T ‖ A_S) + value_weight · KL(VR_T ‖ VR_S),  VR = softmax(V Vᵀ / √d_head)

    Reads ``attn`` (B, H, T, T) attention probabilities and ``values`` (B, H, T, d_head) from
    both sides. The head dims of student and teacher may differ (each relation is T × T); the
    head counts must match (MiniLM v1 transfers head by head). ``batch[mask_key]`` (B, T)
    marks real tokens: padded keys are excluded from the value relation and padded queries
    from the average. Attention probabilities of exactly 0 in the student are clamped to the
    smallest normal float before the log (finite loss, no gradient through that entry).

    ``reduction="sequence"`` (default) is the papers': each sequence averages over its heads and
    its own |x| real positions (MiniLM's 1/(A_h|x|) Σ_a Σ_t), then sequences are averaged, as in
    MiniLMv2's batched form. ``"token"`` averages over every real (sequence, position) of the
    batch at once, so long sequences weigh more; the two agree when no position is padded.
    """

    REDUCTIONS = ("sequence", "token")

    def __init__(self, attn_key: str = "attn", values_key: str = "values", mask_key: str | None = "mask",
                 attn_weight: float = 1.0, value_weight: float = 1.0, reduction: str = "sequence"):
        super().__init__(mask_key)
        if reduction not in self.REDUCTIONS:
            raise ValueError(f"MiniLMLoss: reduction must be one of {self.REDUCTIONS}, got {reduction!r}; "
                             "'sequence' is the papers' per-sequence average")
        self.attn_key, self.values_key = attn_key, values_key
        self.attn_weight, self.value_weight = float(attn_weight), float(value_weight)
        self.reduction = reduction

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        a_s = _f32(_read(student, self.attn_key, "student", self, "attn_key"))             # (B, H, T, T)
        a_t = _f32(_read(teacher, self.attn_key, "teacher", self, "attn_key").detach())    # (B, H, T, T)
        v_s = _f32(_read(student, self.values_key, "student", self, "values_key"))         # (B, H, T, d_s)
        v_t = _f32(_read(teacher, self.values_key, "teacher", self, "values_key").detach())  # (B, H, T, d_t)
        for name, x in (("student attn", a_s), ("teacher attn", a_t), ("student values", v_s),
                        ("teacher values", v_t)):
            if x.dim() != 4:
                raise ValueError(f"MiniLMLoss: {name} must be 4-D (B, H, T, T or d_head), got shape {tuple(x.shape)}")
        if a_s.shape[1] != a_t.shape[1] or v_s.shape[1] != v_t.shape[1]:
            raise ValueError(f"MiniLMLoss: student has {a_s.shape[1]} attention heads and teacher {a_t.shape[1]}; "
                             "MiniLM v1 transfers head by head, so the head counts must match (give the student "
                             "the teacher's head count, or distill another layer)")
        if a_s.shape != a_t.shape or a_s.shape[-1] != a_s.shape[-2]:
            raise ValueError(f"MiniLMLoss: attention shapes must be equal (B, H, T, T); student {tuple(a_s.shape)}, "
                             f"teacher {tuple(a_t.shape)}")
        if v_s.shape[:3] != a_s.shape[:3] or v_t.shape[:3] != a_t.shape[:3]:
            raise ValueError(f"MiniLMLoss: values must be (B, H, T, d_head) matching attention {tuple(a_s.shape)}; "
                             f"student {tuple(v_s.shape)}, teacher {tuple(v_t.shape)}")
        B, H, T, _ = a_s.shape
        keep = self._mask(batch, (B, T), a_s.device)  # (B, T) or None

        # attention transfer: Σ_k A_T log(A_T / A_S), 0·log 0 = 0
        tiny = torch.finfo(a_s.dtype).tiny
        at = (torch.xlogy(a_t, a_t) - a_t * torch.log(a_s.clamp_min(tiny))).sum(-1)  # (B, H, T)

        # value relation: softmax over keys of V Vᵀ / √d, each side with its own d_head
        def log_relation(v: Tensor) -> Tensor:  # (B, H, T, d) -> (B, H, T, T)
            scores = v @ v.transpose(-1, -2) / math.sqrt(v.shape[-1])
            if keep is not None:
                scores = scores.masked_fill(~keep[:, None, None, :], torch.finfo(scores.dtype).min)
            return _log_softmax(scores)
        vr = _kl(log_relation(v_t), log_relation(v_s))  # (B, H, T)

        per = self.attn_weight * at + self.value_weight * vr  # (B, H, T)
        if self.reduction == "token":
            (per,) = self._select(batch, (B, T), per.transpose(1, 2))  # (N, H)
            return _mean(per)
        real = torch.ones(B, T, dtype=torch.bool, device=per.device) if keep is None else keep  # (B, T)
        per = torch.where(real[:, None, :], per, torch.zeros_like(per))  # padded queries may hold garbage
        n = real.sum(1)                                                   # (B,) real positions |x|
        has = n > 0
        per_seq = per.sum((1, 2))[has] / (H * n[has]).to(per.dtype)       # (B',)
        return _mean(per_seq)

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        a_s = torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1)  # (B, H, T, T)
        v_s = torch.randn(2, 2, 4, 3, generator=g)                     # (B, H, T, d_s)
        if matched:
            return {}, {"attn": a_s, "values": v_s}, {"attn": a_s.clone(), "values": v_s.clone()}, None
        a_t = torch.softmax(torch.randn(2, 2, 4, 4, generator=g), -1)
        v_t = torch.randn(2, 2, 4, 5, generator=g)                     # teacher head dim differs
        return {}, {"attn": a_s, "values": v_s}, {"attn": a_t, "values": v_t}, None

    def extra_repr(self) -> str:
        return f"attn_weight={self.attn_weight}, value_weight={self.value_weight}, reduction={self.reduction!r}"


# ------------------------------------------------------------------------------------------ hidden states

class _FeatureLoss(DistillLoss):
    """Reads ``student[student_key]`` (..., D_s) and ``teacher[teacher_key]`` (..., D_t).

    The projector (``nn.Linear(student_dim, teacher_dim)``) is created in ``__init__`` — never
    lazily — so an optimizer built from ``loss.parameters()`` sees it. ``projector=None``
    creates one exactly when ``student_dim != teacher_dim``; ``True`` always (identity-initialised
    when the dims are equal); ``False`` never. Without dims, inputs must have equal widths."""

    def __init__(self, student_key: str = "hidden", teacher_key: str = "hidden", mask_key: str | None = "mask",
                 student_dim: int | None = None, teacher_dim: int | None = None, projector: bool | None = None):
        super().__init__(mask_key)
        self.student_key, self.teacher_key = student_key, teacher_key
        if (student_dim is None) != (teacher_dim is None):
            raise ValueError(f"{type(self).__name__}: give both student_dim and teacher_dim (got {student_dim!r}, "
                             f"{teacher_dim!r})")
        self.student_dim, self.teacher_dim = student_dim, teacher_dim
        self.projector: nn.Linear | None = None
        if student_dim is None:
            if projector:
                raise ValueError(f"{type(self).__name__}: projector=True needs student_dim and teacher_dim")
            return
        use = (student_dim != teacher_dim) if projector is None else bool(projector)
        if not use and student_dim != teacher_dim:
            raise ValueError(f"{type(self).__name__}: projector=False but student_dim={student_dim} != "
                             f"teacher_dim={teacher_dim}; allow the projector")
        if use:
            self.projector = nn.Linear(student_dim, teacher_dim)
            if student_dim == teacher_dim:
                with torch.no_grad():
                    self.projector.weight.copy_(torch.eye(student_dim))
                    self.projector.bias.zero_()

    def _pair(self, student: dict, teacher: dict, batch: dict | None) -> tuple[Tensor, Tensor]:
        """-> projected student (N, D_t), teacher (N, D_t) at the masked positions."""
        h_s = _read(student, self.student_key, "student", self, "student_key")
        h_t = _read(teacher, self.teacher_key, "teacher", self, "teacher_key").detach()
        name = type(self).__name__
        if h_s.shape[:-1] != h_t.shape[:-1]:
            raise ValueError(f"{name}: student {tuple(h_s.shape)} and teacher {tuple(h_t.shape)} must share "
                             "every dim but the last")
        ds, dt = h_s.shape[-1], h_t.shape[-1]
        if self.student_dim is not None and (ds, dt) != (self.student_dim, self.teacher_dim):
            raise ValueError(f"{name} was built for student_dim={self.student_dim}, teacher_dim={self.teacher_dim} "
                             f"but got features of width {ds} and {dt}")
        if self.projector is None and ds != dt:
            raise ValueError(f"{name}: student width {ds} != teacher width {dt} and no projector exists; build the "
                             f"loss with get_loss({self.loss_name!r}, student_dim={ds}, teacher_dim={dt}) and pass "
                             "loss.parameters() to the optimizer")
        h_s, h_t = self._select(batch, h_s.shape[:-1], h_s, h_t)  # (N, D_s), (N, D_t)
        if self.projector is not None:
            h_s = self.projector(h_s.to(self.projector.weight.dtype))
        return _f32(h_s), _f32(h_t)

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        h_s = torch.randn(2, 3, 4, generator=g)  # (B, T, D_s)
        if matched:
            return {}, {"hidden": h_s}, {"hidden": h_s.clone()}, None
        h_t = torch.randn(2, 3, 6, generator=g)  # (B, T, D_t)
        return {"student_dim": 4, "teacher_dim": 6}, {"hidden": h_s}, {"hidden": h_t}, None


@register_loss("hidden_mse")
class HiddenMSELoss(_FeatureLoss):
    """Hidden-state MSE (FitNets-style): mean over positions and teacher dims of (W h_s + b − h_T)²."""

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        p, t = self._pair(student, teacher, batch)
        return _mean((p - t).pow(2).mean(-1))


@register_loss("hidden_cosine")
class HiddenCosineLoss(_FeatureLoss):
    """Hidden-state cosine: mean over positions of 1 − cos(W h_s + b, h_T)."""

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        p, t = self._pair(student, teacher, batch)
        return _mean(1.0 - F.cosine_similarity(p, t, dim=-1, eps=1e-8))


# ------------------------------------------------------------------------------------------ optimal transport

def sinkhorn_normalize(log_k: Tensor, n_iter: int) -> Tensor:
    """``n_iter`` rounds of "divide every row by its sum, then every column by its sum" applied to
    K = exp(log_k), in the log domain (no underflow for large costs).  (N, M) -> log P.

    After the last round every column of P sums to 1 (P sums to M); the rows only approach 1.
    Differentiable: autograd follows every round."""
    for _ in range(n_iter):
        log_k = log_k - torch.logsumexp(log_k, dim=1, keepdim=True)
        log_k = log_k - torch.logsumexp(log_k, dim=0, keepdim=True)
    return log_k


def entropic_ot(cost: Tensor, epsilon: float, tol: float = 1e-4, max_iter: int = 2000
                ) -> tuple[Tensor, Tensor, int, float]:
    """Entropic OT with uniform marginals a = 1/N, b = 1/M by log-domain Sinkhorn, iterated until
    the plan's row sums are within ``tol`` of a (L1; its columns are exact).  Runs without autograd.

    Returns ``(plan, kl, iterations, marginal_error)``: the plan P (N, M) (sums to 1), KL(P ‖ a bᵀ),
    the iterations used and the final L1 row-marginal error (> tol when ``max_iter`` ran out). With
    potentials f, g (in units of ε): P_ij = a_i b_j exp(f_i + g_j − C_ij/ε), updated as
    f = −logsumexp_j(g_j − C_ij/ε + log b_j), g = −logsumexp_i(f_i − C_ij/ε + log a_i)."""
    with torch.no_grad():
        n, m = cost.shape
        c = cost / epsilon
        log_a, log_b = -math.log(n), -math.log(m)

        def update_f(g):  # (M,) -> (N,)
            return -torch.logsumexp(g[None, :] - c + log_b, dim=1)

        def update_g(f):  # (N,) -> (M,)
            return -torch.logsumexp(f[:, None] - c + log_a, dim=0)

        f = c.new_zeros(n)
        g = update_g(f)
        err, it = math.inf, 0
        while it < max_iter:
            it += 1
            f_new = update_f(g)
            # row sums of the current plan are a_i · exp(f_i − f_new_i): the next update reveals the error
            err = float((torch.exp(f - f_new) - 1.0).abs().sum()) / n
            if err <= tol:
                break
            f = f_new
            g = update_g(f)
        log_rel = f[:, None] + g[None, :] - c                 # log(P / a bᵀ)
        plan = torch.exp(log_rel + log_a + log_b)
        kl = (plan * log_rel).sum()
    return plan, kl, it, err


@register_loss("sinkhorn_kd")
class SinkhornKDLoss(_LogitLoss):
    """SinKD — Sinkhorn Distance Minimization for Knowledge Distillation (Cui et al., LREC-COLING
    2024, arXiv 2402.17110; reference code github.com/2018cx/SinKD, ``loss.py`` ``Sinkhorn``).

    Batch-wise optimal transport between the output distributions of the N positions of a batch
    (leading dims flattened, masked positions only)::

        q_i = softmax(z_S,i / T),  p_j = softmax(z_T,j / T)          (N, V) each
        C_ij = ‖q_i − p_j‖₁                                           L1 cost, (N, N)
        P = n_iter rounds of row- then column-normalisation of exp(−C / ε)
        loss = Σ_ij P_ij C_ij

    The plan is normalised to the batch: its columns sum to 1, so P sums to N and the loss grows
    with the batch size (the reference scales it by 0.001 inside the loss; ``sinkd_losses`` in
    :mod:`models.distill.recipes.sinkd` puts that factor into the recipe weight). Gradients flow
    through every normalisation round, as in the reference. Defaults are the reference's:
    T = 2, ε = 0.1, 20 rounds. Not 0 when student == teacher (the entropic plan is not a
    permutation), but smallest there.

    >>> kd = SinkhornKDLoss()
    >>> s = torch.randn(8, 5, requires_grad=True)
    >>> kd({"logits": s}, {"logits": torch.randn(8, 5)}).backward()
    """

    at_match = "min"

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", temperature: float = 2.0,
                 epsilon: float = 0.1, n_iter: int = 20):
        super().__init__(key, mask_key)
        if not temperature > 0:
            raise ValueError(f"SinkhornKDLoss: temperature must be > 0, got {temperature!r}")
        if not epsilon > 0:
            raise ValueError(f"SinkhornKDLoss: epsilon must be > 0, got {epsilon!r}")
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise ValueError(f"SinkhornKDLoss: n_iter must be a positive int, got {n_iter!r}")
        self.temperature, self.epsilon, self.n_iter = float(temperature), float(epsilon), n_iter

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, t = self._logits(student, teacher, batch)  # (N, V)
        if s.shape[0] == 0:
            return s.sum() * 0.0
        T = self.temperature
        q, p = torch.softmax(s / T, dim=-1), torch.softmax(t / T, dim=-1)
        cost = torch.cdist(q, p, p=1)                               # (N, N)
        plan = sinkhorn_normalize(-cost / self.epsilon, self.n_iter).exp()
        return (plan * cost).sum()

    def extra_repr(self) -> str:
        return f"key={self.key!r}, temperature={self.temperature}, epsilon={self.epsilon}, n_iter={self.n_iter}"


@register_loss("feature_ot")
class FeatureOTLoss(_FeatureLoss):
    """Batch-wise entropic optimal transport between student and teacher features.

    The N student vectors and N teacher vectors (all leading dims flattened; masked positions
    only; student projected to the teacher width when dims differ) get a cost matrix C (N, N):
    ``"cosine"``: 1 − cos(s_i, t_j) in [0, 2] (default, scale-free), or ``"sqeuclidean"``:
    ‖s_i − t_j‖². The loss is the entropic OT objective with uniform marginals 1/N::

        OT_ε(C) = min_P ⟨P, C⟩ + ε · KL(P ‖ a bᵀ)

    solved by log-domain Sinkhorn until the plan's marginals are within ``tol`` (L1), at most
    ``max_iter`` iterations (a RuntimeWarning says when they ran out). Its gradient is P* ⊙ ∂C
    (envelope theorem), so the plan is computed without autograd and the value returned is the
    one whose gradient is applied. ``last_iterations`` / ``last_marginal_error`` report the last
    solve. Small but not 0 when student == teacher.

    (Formerly ``sinkhorn``, which returned ⟨P, C⟩ after a fixed 50 iterations with the gradient of
    the objective above: value and gradient disagreed, and the plan had not converged.)
    """

    at_match = "min"
    COSTS = ("cosine", "sqeuclidean")

    def __init__(self, student_key: str = "hidden", teacher_key: str = "hidden", mask_key: str | None = "mask",
                 student_dim: int | None = None, teacher_dim: int | None = None, projector: bool | None = None,
                 cost: str = "cosine", epsilon: float = 0.1, tol: float = 1e-4, max_iter: int = 2000):
        super().__init__(student_key, teacher_key, mask_key, student_dim, teacher_dim, projector)
        if cost not in self.COSTS:
            raise ValueError(f"FeatureOTLoss: unknown cost {cost!r}; choose one of {self.COSTS}")
        if not epsilon > 0:
            raise ValueError(f"FeatureOTLoss: epsilon must be > 0, got {epsilon!r}")
        if not tol > 0:
            raise ValueError(f"FeatureOTLoss: tol must be > 0 (L1 error of the plan's marginals), got {tol!r}")
        if not (isinstance(max_iter, int) and max_iter >= 1):
            raise ValueError(f"FeatureOTLoss: max_iter must be a positive int, got {max_iter!r}")
        self.cost, self.epsilon, self.tol, self.max_iter = cost, float(epsilon), float(tol), max_iter
        self.last_iterations, self.last_marginal_error = 0, math.nan

    def cost_matrix(self, s: Tensor, t: Tensor) -> Tensor:  # (N, D), (M, D) -> (N, M)
        if self.cost == "cosine":
            return 1.0 - F.normalize(s, dim=-1, eps=1e-8) @ F.normalize(t, dim=-1, eps=1e-8).T
        sq = s.pow(2).sum(-1)[:, None] + t.pow(2).sum(-1)[None, :] - 2.0 * s @ t.T
        return sq.clamp_min(0.0)

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, t = self._pair(student, teacher, batch)  # (N, D)
        if s.shape[0] == 0:
            return s.sum()
        c = self.cost_matrix(s, t)  # (N, N)
        plan, kl, iters, err = entropic_ot(c.detach(), self.epsilon, self.tol, self.max_iter)
        self.last_iterations, self.last_marginal_error = iters, err
        if err > self.tol:
            warnings.warn(f"feature_ot: Sinkhorn did not converge in {self.max_iter} iterations (marginal error "
                          f"{err:.2e} > tol {self.tol:g}); the loss uses that plan. Raise max_iter, or epsilon "
                          f"(now {self.epsilon:g}) for a smoother, faster-converging plan", RuntimeWarning, stacklevel=2)
        return (plan * c).sum() + self.epsilon * kl

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        h_s = torch.randn(4, 8, generator=g)  # (B, D_s)
        if matched:
            return {}, {"hidden": h_s}, {"hidden": h_s.clone()}, None
        h_t = torch.randn(4, 6, generator=g)  # (B, D_t)
        return {"student_dim": 8, "teacher_dim": 6}, {"hidden": h_s}, {"hidden": h_t}, None

    def extra_repr(self) -> str:
        return f"cost={self.cost!r}, epsilon={self.epsilon}, tol={self.tol}, max_iter={self.max_iter}"


# ------------------------------------------------------------------------------------------ plain losses

@register_loss("mse")
class LogitMSELoss(_LogitLoss):
    """MSE on logits: mean over positions and vocabulary of (z_s − z_T)² (``F.mse_loss`` scale)."""

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, t = self._logits(student, teacher, batch)  # (N, V)
        return _mean((s - t).pow(2).mean(-1))


@register_loss("ce")
class CrossEntropyLoss(_LogitLoss):
    """Cross-entropy of ``student[key]`` (..., V) against hard labels ``batch[labels_key]`` (...);
    labels equal to ``ignore_index`` (and masked-out positions) are skipped, the rest averaged.
    The teacher is not read. 0 when no position counts."""

    at_match = None
    reads_teacher = False

    def __init__(self, key: str = "logits", mask_key: str | None = "mask", labels_key: str = "labels",
                 ignore_index: int = -100, label_smoothing: float = 0.0):
        super().__init__(key, mask_key)
        self.labels_key, self.ignore_index, self.label_smoothing = labels_key, int(ignore_index), float(label_smoothing)

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        z = _read(student, self.key, "student", self, "key")
        y = _read(batch, self.labels_key, "batch", self, "labels_key")
        if y.shape != z.shape[:-1]:
            raise ValueError(f"CrossEntropyLoss: labels {tuple(y.shape)} must have the logits' leading shape "
                             f"{tuple(z.shape[:-1])}")
        z, y = self._select(batch, z.shape[:-1], z, y.to(z.device))  # (N, V), (N,)
        n = (y != self.ignore_index).sum()
        if int(n) == 0:
            return z.sum() * 0.0
        total = F.cross_entropy(_f32(z), y.long(), ignore_index=self.ignore_index, reduction="sum",
                                label_smoothing=self.label_smoothing)
        return total / n

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        kwargs, s, t, _ = super().example_inputs(matched=matched, seed=seed)
        labels = torch.tensor([[0, 4, -100], [2, 1, 3]])  # (B, T)
        return kwargs, s, t, {"labels": labels}


# ------------------------------------------------------------------------------------------ structure

@register_loss("group_kl")
class GroupKLLoss(DistillLoss):
    """Soft-label KD on groups of positions — LightHGNN+'s high-order (hyperedge) term.

    ``batch[groups_key]`` is an (M, K) int64 tensor: row g lists the positions (rows of the
    flattened logits) of group g, padded with −1. Each group's soft label is the mean of its
    members' probabilities at temperature T, for the teacher p̄_g and the student q̄_g; the loss is
    ``T² · mean_g KL(p̄_g ‖ q̄_g)`` over groups with at least one member (0 when there is none).

    This is the textbook KL on log-probabilities (``log q̄_g`` by logsumexp over the members'
    log-probabilities). The LightHGNN reference passes probabilities to ``F.kl_div`` where it
    expects log-probabilities and divides probabilities (not logits) by τ; its values differ.
    Which groups to use each step (LightHGNN+ samples hyperedges by reliability) is the data's
    job; groups may repeat positions. Masks do not apply (``mask_key`` is None): positions are
    chosen by the groups.

    >>> kd = GroupKLLoss(temperature=2.0)
    >>> s = torch.randn(5, 3, requires_grad=True)
    >>> groups = torch.tensor([[0, 1, 2], [3, 4, -1]])
    >>> kd({"logits": s}, {"logits": torch.randn(5, 3)}, {"groups": groups}).backward()
    """

    def __init__(self, key: str = "logits", groups_key: str = "groups", temperature: float = 1.0):
        super().__init__(mask_key=None)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        self.key, self.groups_key, self.temperature = key, groups_key, float(temperature)

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s = _read(student, self.key, "student", self, "key")
        t = _read(teacher, self.key, "teacher", self, "key").detach()
        g = _read(batch, self.groups_key, "batch", self, "groups_key")
        if s.shape != t.shape or s.dim() < 1:
            raise ValueError(f"GroupKLLoss: student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} "
                             "must have the same shape (..., C)")
        if g.dim() != 2 or g.is_floating_point():
            raise ValueError(f"GroupKLLoss: batch[{self.groups_key!r}] must be an (M, K) integer tensor of positions "
                             f"padded with -1, got {tuple(g.shape)} {g.dtype}")
        s, t = _f32(s.reshape(-1, s.shape[-1])), _f32(t.reshape(-1, t.shape[-1]))  # (N, C)
        g = g.to(s.device).long()
        n = s.shape[0]
        if g.numel() and int(g.max()) >= n:
            raise ValueError(f"GroupKLLoss: group member {int(g.max())} is out of range for {n} positions")
        valid = g >= 0                                              # (M, K)
        count = valid.sum(1)                                        # (M,)
        keep = count > 0
        if not bool(keep.any()):
            return s.sum() * 0.0
        g, valid, count = g[keep], valid[keep], count[keep]
        T = self.temperature
        floor = torch.finfo(s.dtype).min

        def group_log_mean(log_prob: Tensor) -> Tensor:  # (N, C) -> (M, C): log of the members' mean
            members = log_prob[g.clamp(min=0)]                      # (M, K, C)
            members = members.masked_fill(~valid[..., None], floor)
            return torch.logsumexp(members, dim=1) - count.to(s.dtype).log()[:, None]

        log_p = group_log_mean(_log_softmax(t / T))
        log_q = group_log_mean(_log_softmax(s / T))
        return _kl(log_p, log_q).mean() * (T * T)

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        # reads "node_logits": the registry's per-position mask tests slice every batch tensor by a
        # position mask, and groups index positions rather than being per-position values
        g = torch.Generator().manual_seed(seed)
        s = 2 * torch.randn(6, 4, generator=g)                    # (N, C)
        t = s.clone() if matched else 2 * torch.randn(6, 4, generator=g)
        groups = torch.tensor([[0, 1, 2, -1], [2, 3, -1, -1], [4, 5, 0, 1], [-1, -1, -1, -1]])  # (M, K)
        return {"key": "node_logits", "temperature": 2.0}, {"node_logits": s}, {"node_logits": t}, {"groups": groups}

    def extra_repr(self) -> str:
        return f"key={self.key!r}, groups_key={self.groups_key!r}, temperature={self.temperature}"


@register_loss("relation_mse")
class RelationMSELoss(DistillLoss):
    """Relational KD on embeddings: the in-batch cosine-similarity matrices of student and
    teacher should agree. ``mean_{i≠j} (cos(s_i, s_j) − cos(t_i, t_j))²`` over the N vectors
    (leading dims flattened, masked positions only). Student and teacher widths may differ (no
    projector). 0 when fewer than two vectors count.

    >>> rel = RelationMSELoss()
    >>> s = torch.randn(8, 16, requires_grad=True)
    >>> rel({"hidden": s}, {"hidden": torch.randn(8, 384)}).backward()
    """

    def __init__(self, student_key: str = "hidden", teacher_key: str = "hidden", mask_key: str | None = "mask"):
        super().__init__(mask_key)
        self.student_key, self.teacher_key = student_key, teacher_key

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        h_s = _read(student, self.student_key, "student", self, "student_key")
        h_t = _read(teacher, self.teacher_key, "teacher", self, "teacher_key").detach()
        if h_s.shape[:-1] != h_t.shape[:-1]:
            raise ValueError(f"RelationMSELoss: student {tuple(h_s.shape)} and teacher {tuple(h_t.shape)} must share "
                             "every dim but the last")
        h_s, h_t = self._select(batch, h_s.shape[:-1], h_s, h_t)   # (N, D_s), (N, D_t)
        h_s, h_t = _f32(h_s), _f32(h_t)
        n = h_s.shape[0]
        if n < 2:
            return h_s.sum() * 0.0
        sim_s = F.normalize(h_s, dim=-1, eps=1e-8) @ F.normalize(h_s, dim=-1, eps=1e-8).T  # (N, N)
        sim_t = F.normalize(h_t, dim=-1, eps=1e-8) @ F.normalize(h_t, dim=-1, eps=1e-8).T
        off = ~torch.eye(n, dtype=torch.bool, device=h_s.device)
        return (sim_s - sim_t)[off].pow(2).mean()

    @classmethod
    def example_inputs(cls, *, matched: bool = False, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        h_s = torch.randn(5, 8, generator=g)   # (B, D_s)
        if matched:
            return {}, {"hidden": h_s}, {"hidden": h_s.clone()}, None
        h_t = torch.randn(5, 6, generator=g)   # (B, D_t): widths may differ
        return {}, {"hidden": h_s}, {"hidden": h_t}, None

    def extra_repr(self) -> str:
        return f"student_key={self.student_key!r}, teacher_key={self.teacher_key!r}"
