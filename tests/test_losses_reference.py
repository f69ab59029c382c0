"""Every registered distillation loss against our own transcription of its paper's formula.

Each entry of ``REFERENCES`` cites the paper, the authors' repository and the function whose
formula it transcribes (in plain torch, written here, not copied), or says explicitly that there
is no published reference and what the transcription follows instead. Every case compares value
and gradient (w.r.t. every floating student tensor) in float64, on unmasked and on masked /
padded batches, at several temperatures where the loss has one. Padded positions hold large
garbage, so a loss that forgot the mask fails. A loss registered without an entry fails
`test_every_registered_loss_has_a_reference_entry`.

Repositories read for the transcriptions (fetched as snapshots; none is imported here):
- SinKD: github.com/2018cx/SinKD (commit eb4b3da), ``loss.py`` ``Sinkhorn``, ``DistillKL``;
  ``glue_train.py`` ``distill_train`` for the weighting.
- DistiLLM: github.com/jongwooko/distillm, ``distillm/losses.py``.
- TAID: github.com/SakanaAI/TAID, ``src/distil_losses/taid.py`` and ``fkl.py``.
- torchdistill: github.com/yoshitomo-matsubara/torchdistill, ``torchdistill/losses/mid_level.py``.
- MiniLM: github.com/microsoft/unilm ships no MiniLM training code (``minilm/`` has a README and
  an XNLI fine-tuning example); v1's losses are transcribed from the paper, the batched
  per-sequence form from MiniLMv2's Bloomberg reproduction github.com/bloomberg/minilmv2.bb,
  ``minilmv2/minilmv2.py`` ``MiniLM._get_kl_loss``.
- TinyBERT: github.com/huawei-noah/Pretrained-Language-Model, ``TinyBERT/task_distill.py``.
- DistilBERT: github.com/huggingface/transformers, ``examples/research_projects/distillation/
  distiller.py`` ``Distiller.step``.
- LightHGNN: github.com/iMoonLab/LightHGNN, ``trans_train.py`` ``HighOrderConstraint``.
- MOHAWK: github.com/goombalab/phi-mamba, ``assets/mohawk_stage1.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
import torch.nn.functional as F

import edgesdk.models.distill.recipes  # noqa: F401  (registers the recipes' losses, e.g. matrix_frobenius)
from edgesdk.models.distill import losses as L
from edgesdk.models.distill.losses import get_loss, list_losses

DT = torch.float64
TEMPS = (0.5, 1.0, 2.0, 4.0)


# ======================================================================================= transcriptions
# Conventions: z_s, z_t are (N, V) logits of the positions that count (the references select or
# weight positions by their mask); every function returns a scalar.

def masked_rows(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T, ...) -> (N, ...) rows where mask is True (all rows without a mask)."""
    return x.reshape(-1, *x.shape[2:]) if mask is None else x[mask]


def mask_weighted_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """DistiLLM's reduction (distillm/losses.py, every function): Σ x·m / Σ m over positions."""
    if mask is None:
        return x.mean()
    m = mask.reshape(-1).to(x.dtype)
    return (x.reshape(-1) * m).sum() / m.sum()


# --- Hinton KD as torchdistill writes it -------------------------------------------------------
# Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network" (2015), soft-target term
# scaled by T². torchdistill, torchdistill/losses/mid_level.py, KDLoss.forward: the soft loss is
# KLDivLoss(reduction="batchmean")(log_softmax(z_s/T), softmax(z_t/T)), multiplied by T² in the
# combined loss. Rows = positions.
def torchdistill_kd(z_s, z_t, T):
    log_q = torch.log_softmax(z_s / T, dim=1)
    p = torch.softmax(z_t / T, dim=1)
    pointwise = torch.where(p > 0, p * (torch.log(p) - log_q), torch.zeros_like(p))  # kl_div's 0·log 0 = 0
    return T * T * pointwise.sum() / z_s.shape[0]


# --- DistiLLM (Ko et al., ICML 2024, arXiv 2402.03898), distillm/losses.py ----------------------
# The reference has no temperature; at T != 1 we apply each formula to z/T and scale by T²
# (the Hinton convention above), which is what our losses document.
def distillm_forward_kl(z_s, z_t, mask):  # forward_kl: −Σ p log q (a cross-entropy)
    p = torch.softmax(z_t, -1)
    log_q = torch.log_softmax(z_s, -1)
    return mask_weighted_mean(-(p * log_q).sum(-1), mask)


def distillm_reverse_kl(z_s, z_t, mask):  # reverse_kl: Σ q (log q − log p)
    q = torch.softmax(z_s, -1)
    per = (q * (torch.log_softmax(z_s, -1) - torch.log_softmax(z_t, -1))).sum(-1)
    return mask_weighted_mean(per, mask)


def distillm_js(z_s, z_t, mask, lam):  # js_distance(lam): m = (1−λ)p + λq; λ·KL(q‖m) + (1−λ)·KL(p‖m)
    p, q = torch.softmax(z_t, -1), torch.softmax(z_s, -1)
    log_m = torch.log((1 - lam) * p + lam * q)
    kl_qm = (q * (torch.log(q) - log_m)).sum(-1)
    kl_pm = (p * (torch.log(p) - log_m)).sum(-1)
    return lam * mask_weighted_mean(kl_qm, mask) + (1 - lam) * mask_weighted_mean(kl_pm, mask)


def distillm_skewed_forward_kl(z_s, z_t, mask, lam):  # skewed_forward_kl: −Σ p log(λp + (1−λ)q)
    p, q = torch.softmax(z_t, -1), torch.softmax(z_s, -1)
    return mask_weighted_mean(-(p * torch.log(lam * p + (1 - lam) * q)).sum(-1), mask)


def distillm_skewed_reverse_kl(z_s, z_t, mask, lam):  # skewed_reverse_kl: Σ q (log q − log((1−λ)p + λq))
    p, q = torch.softmax(z_t, -1), torch.softmax(z_s, -1)
    per = (q * (torch.log_softmax(z_s, -1) - torch.log((1 - lam) * p + lam * q))).sum(-1)
    return mask_weighted_mean(per, mask)


def entropy_mean(z_t, mask):
    """Mean teacher entropy H(p): what separates a cross-entropy value from its KL."""
    p = torch.softmax(z_t, -1)
    return mask_weighted_mean(-(p * torch.log(p)).sum(-1), mask)


# --- SinKD (Cui et al., LREC-COLING 2024, arXiv 2402.17110), 2018cx/SinKD loss.py ---------------
# DistillKL.forward: −Σ softmax(z_t/T) · log_softmax(z_s/T), mean over rows (no T²).
def sinkd_distill_kl(z_s, z_t, T):
    return -(torch.softmax(z_t / T, -1) * torch.log_softmax(z_s / T, -1)).sum(-1).mean()


# Sinkhorn.forward / sinkhorn_loss / sinkhorn_normalized, without the constant 0.001 of forward:
# probabilities at temperature T (softmax over the class dim), cost = pairwise L1 distance between
# student row i and teacher row j, K = exp(−cost/ε), n_iter times: divide rows by their sums, then
# columns by theirs; loss = Σ P ⊙ cost. Plain (not log) domain, exactly as the reference.
def sinkd_sinkhorn(z_s, z_t, T=2.0, epsilon=0.1, n_iter=20):
    q, p = torch.softmax(z_s / T, dim=1), torch.softmax(z_t / T, dim=1)
    cost = (q[:, None, :] - p[None, :, :]).abs().sum(-1)          # (N, N), what torch.cdist(p=1) gives
    plan = torch.exp(-cost / epsilon)
    for _ in range(n_iter):
        plan = plan / plan.sum(dim=1, keepdim=True)
        plan = plan / plan.sum(dim=0, keepdim=True)
    return (plan * cost).sum()


# --- TAID (Shing et al., ICLR 2025, arXiv 2501.16937), SakanaAI/TAID src/distil_losses ----------
# taid.py TAID.compute_loss: p_t = softmax((1 − t)·detach(z_s) + t·z_T); fkl.py forward_kl with
# teacher_probs = p_t: −Σ p_t log softmax(z_s), mask-weighted mean.
def taid_compute_loss(z_s, z_t, mask, t):
    p_t = torch.softmax((1 - t) * z_s.detach() + t * z_t, -1)
    return mask_weighted_mean(-(p_t * torch.log_softmax(z_s, -1)).sum(-1), mask)


def taid_target_entropy(z_s, z_t, mask, t):
    p_t = torch.softmax((1 - t) * z_s.detach() + t * z_t, -1)
    return mask_weighted_mean(-(p_t * torch.log(p_t)).sum(-1), mask)


# --- MiniLM ----------------------------------------------------------------------------------------
# MiniLM v1 (Wang et al., NeurIPS 2020, arXiv 2002.10957) §3.1: for one sequence of |x| tokens and
# A_h heads, L_AT = 1/(A_h|x|) Σ_a Σ_t KL(A_T,a,t ‖ A_S,a,t) and L_VR = 1/(A_h|x|) Σ_a Σ_t
# KL(VR_T,a,t ‖ VR_S,a,t) with VR = softmax(V Vᵀ/√d_k). The batched form follows MiniLMv2's
# reproduction (bloomberg/minilmv2.bb, MiniLM._get_kl_loss): each sequence cut to its length
# [:len, :len], its KL sum divided by (heads · len), then the batch averaged (MiniLMv2, Eq. 6).
def minilm_sequence(a_s, v_s, a_t, v_t, lengths, attn_weight=1.0, value_weight=1.0):
    total = 0.0
    for b, n in enumerate(lengths):
        heads = a_s.shape[1]

        def kl_rows(p, log_q):  # (H, n, n) -> Σ over heads and rows
            return (p * (torch.log(p) - log_q)).sum()

        at_s, at_t = a_s[b, :, :n, :n], a_t[b, :, :n, :n]
        l_at = kl_rows(at_t, torch.log(at_s)) / (heads * n)
        rel = lambda v: (v[b, :, :n] @ v[b, :, :n].transpose(-1, -2)) / math.sqrt(v.shape[-1])  # noqa: E731
        l_vr = kl_rows(torch.softmax(rel(v_t), -1), torch.log_softmax(rel(v_s), -1)) / (heads * n)
        total = total + attn_weight * l_at + value_weight * l_vr
    return total / len(lengths)


def minilm_token(a_s, v_s, a_t, v_t, lengths):
    """The token-weighted form (``reduction="token"``; no published reference: our earlier
    default): every real (sequence, head, position) KL averaged at once."""
    num, den = 0.0, 0
    for b, n in enumerate(lengths):
        heads = a_s.shape[1]
        at_s, at_t = a_s[b, :, :n, :n], a_t[b, :, :n, :n]
        rel = lambda v: (v[b, :, :n] @ v[b, :, :n].transpose(-1, -2)) / math.sqrt(v.shape[-1])  # noqa: E731
        vr_t, log_vr_s = torch.softmax(rel(v_t), -1), torch.log_softmax(rel(v_s), -1)
        num = num + (at_t * (torch.log(at_t) - torch.log(at_s))).sum() + (vr_t * (torch.log(vr_t) - log_vr_s)).sum()
        den += heads * n
    return num / den


# --- hidden states -----------------------------------------------------------------------------------
# TinyBERT (Jiao et al., Findings of EMNLP 2020) Eq. 8: L_hidn = MSE(H_S W_h, H_T); code:
# huawei-noah/Pretrained-Language-Model TinyBERT/task_distill.py, loss_mse = MSELoss() applied to
# the projected student rep and the teacher rep (mean over every element). Rows = real positions.
def tinybert_hidden_mse(h_s_proj, h_t):
    return ((h_s_proj - h_t) ** 2).mean()


# DistilBERT (Sanh et al., 2019): transformers examples/research_projects/distillation/distiller.py,
# Distiller.step, alpha_cos term: CosineEmbeddingLoss(reduction="mean") with target +1 on the hidden
# states of the attention-masked tokens = mean over tokens of 1 − cos.
def distilbert_cosine(h_s, h_t):
    cos = (h_s * h_t).sum(-1) / (h_s.norm(dim=-1) * h_t.norm(dim=-1))
    return (1 - cos).mean()


# --- entropic OT (feature_ot) ----------------------------------------------------------------------
# No distillation paper defines this loss (batch-wise entropic OT between feature batches with a
# cosine or squared-Euclidean cost). The transcription follows the textbook: Cuturi, "Sinkhorn
# Distances" (NeurIPS 2013), Algorithm 1 (u = a / K v, v = b / Kᵀ u, K = exp(−C/ε)) for the plan,
# and the entropic objective ⟨P, C⟩ + ε·KL(P ‖ a bᵀ) (Peyré & Cuturi, "Computational Optimal
# Transport", 2019, §4.1). Iterated far past convergence; the gradient is autograd through the
# iterations, an independent route to the envelope-theorem gradient the loss uses.
def cuturi_entropic_ot(cost, epsilon, n_iter=3000):
    n, m = cost.shape
    a = torch.full((n,), 1.0 / n, dtype=cost.dtype)
    b = torch.full((m,), 1.0 / m, dtype=cost.dtype)
    K = torch.exp(-cost / epsilon)
    v = torch.ones(m, dtype=cost.dtype)
    for _ in range(n_iter):
        u = a / (K @ v)
        v = b / (K.T @ u)
    plan = u[:, None] * K * v[None, :]
    return (plan * cost).sum() + epsilon * (plan * torch.log(plan / (a[:, None] * b[None, :]))).sum()


def cosine_cost(s, t):
    s_n, t_n = s / s.norm(dim=-1, keepdim=True), t / t.norm(dim=-1, keepdim=True)
    return 1 - s_n @ t_n.T


def sq_euclidean_cost(s, t):
    return ((s[:, None, :] - t[None, :, :]) ** 2).sum(-1)


# --- LightHGNN+ (Feng et al., ICLR 2024, arXiv 2402.04296), high-order soft-label constraint ---------
# For each sampled hyperedge e: the mean of its members' softened probabilities, teacher p̄_e and
# student q̄_e, and KL(p̄_e ‖ q̄_e), averaged over hyperedges; × T² (Hinton). The authors' code
# (trans_train.py, HighOrderConstraint.forward) feeds probabilities to F.kl_div as log-targets and
# divides probabilities by τ, so its values differ; we transcribe the paper's definition.
def lighthgnn_high_order(z_s, z_t, groups, T):
    q, p = torch.softmax(z_s / T, -1), torch.softmax(z_t / T, -1)
    total, count = 0.0, 0
    for row in groups.tolist():
        members = [i for i in row if i >= 0]
        if not members:
            continue
        p_e, q_e = p[members].mean(0), q[members].mean(0)
        total = total + (p_e * (torch.log(p_e) - torch.log(q_e))).sum()
        count += 1
    return T * T * total / count


# --- MOHAWK (Bick et al., 2024, arXiv 2408.10189), stage 1 "matrix orientation" -------------------
# goombalab/phi-mamba assets/mohawk_stage1.py: torch.linalg.matrix_norm(transfer − attn, "fro").mean().
def mohawk_matrix_orientation(m_s, m_t):
    return torch.sqrt(((m_s - m_t) ** 2).sum((-2, -1))).mean()


# ======================================================================================= cases

@dataclass
class Case:
    label: str
    kwargs: dict
    student: dict
    teacher: dict
    batch: dict | None
    reference: Callable[[torch.nn.Module, dict, dict, dict | None], torch.Tensor]
    rtol: float = 1e-6
    check_dtype: bool = True


@dataclass
class Reference:
    source: str                          # paper, repository and function transcribed; or why there is none
    cases: Callable[[], list[Case]]
    published: bool = True               # False: "no published reference", the transcription follows `source`


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


LENGTHS = (4, 2, 1)  # a padded batch: B = 3 sequences of T = 4 slots


def padded_mask(lengths=LENGTHS, T: int = 4) -> torch.Tensor:
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)


def logit_pairs(seed: int = 0, V: int = 6):
    """(label, z_s (B, T, V), z_t, batch) for an unmasked batch and a padded one whose padding
    holds large garbage."""
    g = _g(seed)
    B, T = len(LENGTHS), max(LENGTHS)
    z_s = 2 * torch.randn(B, T, V, generator=g, dtype=DT)
    z_t = 2 * torch.randn(B, T, V, generator=g, dtype=DT)
    m = padded_mask()
    z_s2, z_t2 = z_s.clone(), z_t.clone()
    z_s2[~m] = 40 * torch.randn(int((~m).sum()), V, generator=g, dtype=DT)
    z_t2[~m] = -40 * torch.randn(int((~m).sum()), V, generator=g, dtype=DT)
    return [("full", z_s, z_t, None), ("padded", z_s2, z_t2, {"mask": m})]


def logit_cases(ref, temps=TEMPS, kw_grid=({},), rtol=1e-6) -> list[Case]:
    """``ref(z_s (N, V), z_t, mask (N,) | None, T, **kw)``; masks are passed flattened so that
    DistiLLM-style references can weight positions as their code does."""
    cases = []
    for label, z_s, z_t, batch in logit_pairs():
        mask = None if batch is None else batch["mask"].reshape(-1)
        for T in temps:
            for kw in kw_grid:
                args = {"temperature": T, **kw} if T is not None else dict(kw)

                def reference(loss, s, t, b, kw=kw, T=T, mask=mask):
                    V = s["logits"].shape[-1]
                    return ref(s["logits"].reshape(-1, V), t["logits"].reshape(-1, V), mask, T, **kw)
                cases.append(Case(f"{label}-T{T}-{kw}", args, {"logits": z_s}, {"logits": z_t}, batch, reference,
                                  rtol))
    return cases


def scaled(fn):
    """Apply a temperature-free reference to z/T and scale by T² (the Hinton convention)."""
    def ref(z_s, z_t, mask, T, **kw):
        return T * T * fn(z_s / T, z_t / T, mask, **kw)
    return ref


def _rows(fn):
    """A reference on the masked rows (the reference code has no mask: its batch is the real rows)."""
    def ref(z_s, z_t, mask, T, **kw):
        if mask is not None:
            z_s, z_t = z_s[mask], z_t[mask]
        return fn(z_s, z_t, T, **kw)
    return ref


def kl_cases():
    def sinkd_form(zs, zt, m, T, value):  # SinKD's DistillKL has no T²: ours is T² × it
        return T * T * _rows(lambda a, b, T: sinkd_distill_kl(a, b, T))(zs, zt, m, T)

    def distillm_form(zs, zt, m, T, value):
        return distillm_forward_kl(zs, zt, m)
    ce = {"value": "cross_entropy"}
    return (logit_cases(_rows(torchdistill_kd)) + logit_cases(sinkd_form, kw_grid=(ce,))
            + logit_cases(distillm_form, temps=(1.0,), kw_grid=(ce,)))


def skew_kl_cases():
    def kl_form(zs, zt, m, T, skew):
        zs, zt = zs / T, zt / T
        return T * T * (distillm_skewed_forward_kl(zs, zt, m, skew) - entropy_mean(zt, m))

    def ce_form(zs, zt, m, T, skew, value):
        return T * T * distillm_skewed_forward_kl(zs / T, zt / T, m, skew)
    return (logit_cases(kl_form, kw_grid=({"skew": 0.1}, {"skew": 0.5}, {"skew": 0.0}))
            + logit_cases(ce_form, kw_grid=({"skew": 0.1, "value": "cross_entropy"},)))


def taid_cases():
    cases = []
    for label, z_s, z_t, batch in logit_pairs():
        mask = None if batch is None else batch["mask"].reshape(-1)
        for t in (0.4, 0.7, 1.0):
            for value in ("kl", "cross_entropy"):
                def reference(loss, s, tt, b, t=t, value=value, mask=mask):
                    V = s["logits"].shape[-1]
                    zs, zt = s["logits"].reshape(-1, V), tt["logits"].reshape(-1, V)
                    ce = taid_compute_loss(zs, zt, mask, t)
                    return ce if value == "cross_entropy" else ce - taid_target_entropy(zs, zt, mask, t)
                cases.append(Case(f"{label}-t{t}-{value}", {"value": value, "_t": t}, {"logits": z_s},
                                  {"logits": z_t}, batch, reference))
    return cases


def sinkhorn_kd_cases():
    cases = []
    grid = [{"temperature": T, "epsilon": e, "n_iter": n} for T in (1.0, 2.0, 4.0) for e, n in ((0.1, 20), (0.05, 5))]
    for label, z_s, z_t, batch in logit_pairs(V=5):
        mask = None if batch is None else batch["mask"].reshape(-1)
        for kw in grid:
            def reference(loss, s, t, b, kw=kw, mask=mask):
                V = s["logits"].shape[-1]
                zs, zt = s["logits"].reshape(-1, V), t["logits"].reshape(-1, V)
                if mask is not None:
                    zs, zt = zs[mask], zt[mask]
                return sinkd_sinkhorn(zs, zt, kw["temperature"], kw["epsilon"], kw["n_iter"])
            cases.append(Case(f"{label}-{kw}", kw, {"logits": z_s}, {"logits": z_t}, batch, reference))
    return cases


def minilm_inputs(seed=0, H=2, T=5, d_s=3, d_t=4, lengths=(5, 3, 2)):
    g = _g(seed)
    B = len(lengths)
    m = torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]  # (B, T)

    def attn():
        scores = torch.randn(B, H, T, T, generator=g, dtype=DT).masked_fill(~m[:, None, None, :], float("-inf"))
        a = torch.softmax(scores, -1)
        return torch.where(m[:, None, :, None], a, torch.full_like(a, 0.3))  # padded queries: garbage rows
    a_s, a_t = attn(), attn()
    v_s, v_t = torch.randn(B, H, T, d_s, generator=g, dtype=DT), torch.randn(B, H, T, d_t, generator=g, dtype=DT)
    return a_s, v_s, a_t, v_t, m, lengths


def minilm_cases():
    cases = []
    for lengths in ((5, 3, 2), (5, 5, 5)):
        a_s, v_s, a_t, v_t, m, lens = minilm_inputs(lengths=lengths)
        full = all(n == 5 for n in lengths)
        batch = None if full else {"mask": m}
        for kw in ({}, {"attn_weight": 0.5, "value_weight": 2.0}):
            def ref_seq(loss, s, t, b, kw=kw, lens=lens):
                return minilm_sequence(s["attn"], s["values"], t["attn"], t["values"], lens, **kw)
            cases.append(Case(f"sequence-{lengths}-{kw}", kw, {"attn": a_s, "values": v_s},
                              {"attn": a_t, "values": v_t}, batch, ref_seq))

        def ref_tok(loss, s, t, b, lens=lens):
            return minilm_token(s["attn"], s["values"], t["attn"], t["values"], lens)
        cases.append(Case(f"token-{lengths}", {"reduction": "token"}, {"attn": a_s, "values": v_s},
                          {"attn": a_t, "values": v_t}, batch, ref_tok))
    return cases


def feature_pairs(d_s=4, d_t=6, seed=1):
    g = _g(seed)
    B, T = len(LENGTHS), max(LENGTHS)
    h_s, h_t = torch.randn(B, T, d_s, generator=g, dtype=DT), torch.randn(B, T, d_t, generator=g, dtype=DT)
    m = padded_mask()
    h_s2, h_t2 = h_s.clone(), h_t.clone()
    h_s2[~m], h_t2[~m] = 50.0, -70.0
    return [("full", h_s, h_t, None), ("padded", h_s2, h_t2, {"mask": m})]


def projected_cases(ref, kw_grid=({},), rtol=1e-6, same_dim=False):
    cases = []
    for label, h_s, h_t, batch in feature_pairs(d_t=4 if same_dim else 6):
        for kw in kw_grid:
            def reference(loss, s, t, b, kw=kw):
                mask = None if b is None else b["mask"]
                hs, ht = masked_rows(s["hidden"], mask), masked_rows(t["hidden"], mask)
                if loss.projector is not None:
                    hs = hs @ loss.projector.weight.T.to(DT) + loss.projector.bias.to(DT)
                return ref(hs, ht, **kw)
            dims = {} if same_dim else {"student_dim": 4, "teacher_dim": 6}
            cases.append(Case(f"{label}-{kw}", {**dims, **kw}, {"hidden": h_s}, {"hidden": h_t}, batch, reference,
                              rtol))
    return cases


def feature_ot_cases():
    def ref(hs, ht, cost="cosine", epsilon=0.1, **_):
        c = cosine_cost(hs, ht) if cost == "cosine" else sq_euclidean_cost(hs, ht)
        return cuturi_entropic_ot(c, epsilon)
    grid = ({"cost": "cosine", "epsilon": 0.1}, {"cost": "cosine", "epsilon": 0.3},
            {"cost": "sqeuclidean", "epsilon": 2.0})
    tight = {"tol": 1e-12, "max_iter": 100000}
    return projected_cases(ref, [{**kw, **tight} for kw in grid], rtol=1e-6)


def mse_cases():
    # Ba & Caruana, "Do Deep Nets Really Need to be Deep?" (NeurIPS 2014), §2.2: the student regresses
    # the teacher's logits with L = 1/(2N) Σ_n ‖g(x_n) − z_n‖². Ours is F.mse_loss's mean over
    # positions and logits, i.e. that loss × 2/V.
    def ref(zs, zt, mask, T):
        if mask is not None:
            zs, zt = zs[mask], zt[mask]
        paper = ((zs - zt) ** 2).sum(-1).sum() / (2 * zs.shape[0])
        return paper * 2 / zs.shape[-1]
    return logit_cases(ref, temps=(None,))


def ce_cases():
    # The definition of cross-entropy with an ignore index: mean over counted positions of
    # −log softmax(z)_y; with label smoothing ε_ls: (1 − ε_ls)·that + ε_ls·mean_c(−log softmax(z)_c).
    cases = []
    for label, z_s, z_t, batch in logit_pairs():
        labels = torch.tensor([[0, 5, -100, 2], [1, 3, 4, 4], [2, 0, 1, 5]])
        b = {"labels": labels, **(batch or {})}
        for ls in (0.0, 0.1):
            def reference(loss, s, t, bb, ls=ls):
                z, y = s["logits"], bb["labels"]
                keep = (y != -100) & (bb["mask"] if "mask" in bb else torch.ones_like(y, dtype=torch.bool))
                log_q = torch.log_softmax(z[keep], -1)
                nll = -log_q.gather(1, y[keep][:, None]).squeeze(1)
                return ((1 - ls) * nll + ls * (-log_q.mean(-1))).mean()
            cases.append(Case(f"{label}-ls{ls}", {"label_smoothing": ls}, {"logits": z_s}, {"logits": z_t}, b,
                              reference))
    return cases


def group_kl_cases():
    g = _g(3)
    z_s, z_t = 2 * torch.randn(7, 4, generator=g, dtype=DT), 2 * torch.randn(7, 4, generator=g, dtype=DT)
    groups = torch.tensor([[0, 1, 2, -1], [2, 3, -1, -1], [4, 5, 6, 0], [-1, -1, -1, -1], [6, -1, -1, -1]])
    cases = []
    for T in TEMPS:
        def reference(loss, s, t, b, T=T):
            return lighthgnn_high_order(s["logits"], t["logits"], b["groups"], T)
        cases.append(Case(f"T{T}", {"temperature": T}, {"logits": z_s}, {"logits": z_t}, {"groups": groups}, reference))
    return cases


def relation_cases():
    # No published reference: the formula as documented, mean over i ≠ j of (cos(s_i, s_j) − cos(t_i, t_j))².
    # (The closest published loss, SPKD — Tung & Mori, ICCV 2019; torchdistill SPKDLoss — row-normalises
    # the raw Gram matrix and sums over every pair / B²: a different loss.)
    cases = []
    for label, h_s, h_t, batch in feature_pairs():
        def reference(loss, s, t, b):
            mask = None if b is None else b["mask"]
            hs, ht = masked_rows(s["hidden"], mask), masked_rows(t["hidden"], mask)
            sim = lambda h: 1 - cosine_cost(h, h)  # noqa: E731
            n = hs.shape[0]
            off = ~torch.eye(n, dtype=torch.bool)
            return ((sim(hs) - sim(ht))[off] ** 2).sum() / (n * (n - 1))
        cases.append(Case(label, {}, {"hidden": h_s}, {"hidden": h_t}, batch, reference))
    return cases


def matrix_frobenius_cases():
    g = _g(4)
    m_s = torch.randn(2, 3, 4, 4, generator=g, dtype=DT).tril()
    m_t = torch.softmax(torch.randn(2, 3, 4, 4, generator=g, dtype=DT), -1).tril()
    keep = torch.tensor([[True, False, True], [True, True, False]])

    def ref_all(loss, s, t, b):
        return mohawk_matrix_orientation(s["mix"], t["attn"])

    def ref_masked(loss, s, t, b):
        return mohawk_matrix_orientation(s["mix"][b["m"]], t["attn"][b["m"]])
    # matrix_frobenius computes in float32 whatever the input dtype (s.float()): compare at float32 precision
    return [Case("all", {}, {"mix": m_s}, {"attn": m_t}, None, ref_all, rtol=1e-5, check_dtype=False),
            Case("masked", {"mask_key": "m"}, {"mix": m_s}, {"attn": m_t}, {"m": keep}, ref_masked, rtol=1e-5,
                 check_dtype=False)]


REFERENCES: dict[str, Reference] = {
    "kl": Reference("Hinton et al. 2015 soft-target term; torchdistill mid_level.py KDLoss.forward (T² · batchmean "
                    "KL). value='cross_entropy': SinKD loss.py DistillKL.forward (× T²) and DistiLLM losses.py "
                    "forward_kl", kl_cases),
    "reverse_kl": Reference("DistiLLM (Ko et al. 2024) distillm/losses.py reverse_kl (at z/T, × T²)",
                            lambda: logit_cases(scaled(distillm_reverse_kl))),
    "js": Reference("DistiLLM distillm/losses.py js_distance(lam) (at z/T, × T²)",
                    lambda: logit_cases(scaled(distillm_js), kw_grid=({"lam": 0.5}, {"lam": 0.9}, {"lam": 0.1}))),
    "skew_kl": Reference("DistiLLM distillm/losses.py skewed_forward_kl (a cross-entropy; minus H(p) for "
                         "value='kl'); at z/T, × T²", skew_kl_cases),
    "skew_reverse_kl": Reference("DistiLLM distillm/losses.py skewed_reverse_kl (at z/T, × T²)",
                                 lambda: logit_cases(lambda zs, zt, m, T, skew: scaled(distillm_skewed_reverse_kl)(
                                     zs, zt, m, T, lam=skew), kw_grid=({"skew": 0.1}, {"skew": 0.5}))),
    "taid": Reference("TAID (Shing et al. 2025) SakanaAI/TAID src/distil_losses/taid.py TAID.compute_loss with "
                      "fkl.py forward_kl (cross-entropy; minus H(p_t) for value='kl')", taid_cases),
    "minilm": Reference("MiniLM v1 (Wang et al. 2020) §3.1 L_AT + L_VR per sequence; batched as "
                        "bloomberg/minilmv2.bb minilmv2.py MiniLM._get_kl_loss (MiniLMv2 Eq. 6). reduction='token' "
                        "has no published reference (our earlier token-weighted average)", minilm_cases),
    "hidden_mse": Reference("TinyBERT (Jiao et al. 2020) Eq. 8, MSE(H_S W_h, H_T); huawei-noah/Pretrained-Language-"
                            "Model TinyBERT/task_distill.py loss_mse(student_rep, teacher_rep)",
                            lambda: projected_cases(tinybert_hidden_mse)),
    "hidden_cosine": Reference("DistilBERT (Sanh et al. 2019) transformers examples/research_projects/distillation/"
                               "distiller.py Distiller.step, CosineEmbeddingLoss(mean) with target 1",
                               lambda: projected_cases(distilbert_cosine)),
    "sinkhorn_kd": Reference("SinKD (Cui et al. 2024) 2018cx/SinKD loss.py Sinkhorn.sinkhorn_loss / "
                             "sinkhorn_normalized, without forward's constant 0.001", sinkhorn_kd_cases),
    "feature_ot": Reference("no published reference: no KD paper defines batch-wise entropic OT on feature batches "
                            "with these costs; transcribed from Cuturi 2013 (Algorithm 1) and the entropic objective "
                            "of Peyré & Cuturi 2019 §4.1", feature_ot_cases, published=False),
    "mse": Reference("Ba & Caruana 2014 §2.2 logit regression, 1/(2N) Σ ‖g − z‖², rescaled by 2/V to F.mse_loss's "
                     "mean", mse_cases),
    "ce": Reference("no published reference: the standard cross-entropy with ignore_index and label smoothing, "
                    "transcribed from its definition", ce_cases, published=False),
    "group_kl": Reference("LightHGNN+ (Feng et al. 2024) high-order soft-label constraint, from the paper's "
                          "definition × T²; iMoonLab/LightHGNN trans_train.py HighOrderConstraint differs (kl_div "
                          "on probabilities as log-targets)", group_kl_cases),
    "relation_mse": Reference("no published reference: our in-batch cosine-relation MSE as documented (SPKD, Tung & "
                              "Mori 2019, is a different normalisation)", relation_cases, published=False),
    "matrix_frobenius": Reference("MOHAWK (Bick et al. 2024) stage 1; goombalab/phi-mamba assets/mohawk_stage1.py "
                                  "torch.linalg.matrix_norm(transfer - attn, 'fro').mean()", matrix_frobenius_cases),
}


def missing_references(names=None) -> list[str]:
    """Registered losses with no entry (or an entry that neither cites nor says why it cannot)."""
    names = list_losses() if names is None else names
    return [n for n in names if n not in REFERENCES or not REFERENCES[n].source.strip()]


# ======================================================================================= tests

def test_every_registered_loss_has_a_reference_entry():
    assert missing_references() == [], (
        f"losses registered without a reference entry: {missing_references()}; add a transcription of the "
        "paper's formula to REFERENCES, or an entry with published=False that says why there is none")
    for name, ref in REFERENCES.items():
        assert name in list_losses(), f"REFERENCES lists {name!r}, which is not registered"
        assert ref.published or ref.source.startswith("no published reference"), name


def test_a_new_loss_without_reference_is_caught():
    @L.register_loss("_unreferenced_for_test")
    class Unreferenced(L.DistillLoss):
        def forward(self, student, teacher, batch=None):
            return torch.zeros(())
    try:
        assert missing_references() == ["_unreferenced_for_test"]
    finally:
        L.LOSSES.unregister("_unreferenced_for_test")


CASES = [(name, case) for name, ref in REFERENCES.items() for case in ref.cases()]


@pytest.mark.parametrize("name,case", CASES, ids=[f"{n}:{c.label}" for n, c in CASES])
def test_value_and_gradient_match_reference(name, case):
    kwargs = dict(case.kwargs)
    t_state = kwargs.pop("_t", None)
    loss = get_loss(name, **kwargs).to(DT)
    if t_state is not None:  # TAID: evaluate at a given point of the schedule
        loss.load_extra_state({"t": t_state, "momentum": 0.0, "prev_loss": None})

    def leaves():
        s = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in case.student.items()}
        t = {k: v.clone() for k, v in case.teacher.items()}
        return s, t
    s1, t1 = leaves()
    ours = loss(s1, t1, case.batch)
    ours.backward()
    s2, t2 = leaves()
    ref = case.reference(loss, s2, t2, case.batch)
    ref.backward()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=case.rtol, atol=1e-10, check_dtype=case.check_dtype)
    for k in s1:
        if s1[k].grad is not None or s2[k].grad is not None:
            torch.testing.assert_close(s1[k].grad, s2[k].grad, rtol=case.rtol, atol=1e-10,
                                       check_dtype=case.check_dtype, msg=lambda m: f"grad {k}: {m}")


# ---------------------------------------------------------------- the three findings, pinned

def test_sinkhorn_kd_matches_sinkd_to_1e6_float32_and_float64():
    g = _g(7)
    for dtype, rtol, atol in ((torch.float64, 1e-6, 1e-12), (torch.float32, 1e-5, 1e-6)):
        z_s = (3 * torch.randn(16, 10, generator=g)).to(dtype).requires_grad_(True)
        z_t = (3 * torch.randn(16, 10, generator=g)).to(dtype)
        ours = get_loss("sinkhorn_kd")({"logits": z_s}, {"logits": z_t})
        (g_ours,) = torch.autograd.grad(ours, z_s)
        ref = sinkd_sinkhorn(z_s, z_t)  # T = 2, ε = 0.1, 20 rounds: the reference's defaults
        (g_ref,) = torch.autograd.grad(ref, z_s)
        torch.testing.assert_close(ours, ref, rtol=rtol, atol=atol)
        torch.testing.assert_close(g_ours, g_ref, rtol=rtol, atol=atol)
    # the plan is normalised to the batch: P sums to N (its columns to 1)
    log_p = L.sinkhorn_normalize(-torch.rand(5, 5, dtype=DT) / 0.1, 20)
    assert log_p.exp().sum().item() == pytest.approx(5.0, rel=1e-12)
    assert torch.allclose(log_p.exp().sum(0), torch.ones(5, dtype=DT))


def test_sinkhorn_kd_large_costs_stay_finite():
    # one-hot distributions: L1 costs of 2, exp(−2/ε) underflows in float32 at small ε
    z_s = torch.tensor([[80.0, 0, 0], [0, 80.0, 0]], requires_grad=True)
    z_t = torch.tensor([[0, 0, 80.0], [0, 80.0, 0]])
    out = get_loss("sinkhorn_kd", epsilon=0.001, temperature=1.0)({"logits": z_s}, {"logits": z_t})
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z_s.grad).all()


def test_minilm_sequence_vs_token_on_padded_batch():
    a_s, v_s, a_t, v_t, m, lens = minilm_inputs(lengths=(5, 3, 2))
    s, t, b = {"attn": a_s, "values": v_s}, {"attn": a_t, "values": v_t}, {"mask": m}
    seq = get_loss("minilm")(s, t, b).item()
    tok = get_loss("minilm", reduction="token")(s, t, b).item()
    assert seq == pytest.approx(minilm_sequence(a_s, v_s, a_t, v_t, lens).item(), rel=1e-9)
    assert abs(seq - tok) / seq > 0.01  # the two weightings differ on padded batches
    a, v, at, vt, _, _ = minilm_inputs(lengths=(5, 5, 5))
    full_s, full_t = {"attn": a, "values": v}, {"attn": at, "values": vt}
    assert get_loss("minilm")(full_s, full_t).item() == pytest.approx(
        get_loss("minilm", reduction="token")(full_s, full_t).item(), rel=1e-12)
    with pytest.raises(ValueError, match="reduction must be one of"):
        get_loss("minilm", reduction="mean")


def test_js_lambda_defaults_and_bounds():
    assert get_loss("js").lam == 0.5
    s, t = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    for lam in (0.1, 0.5, 0.9):  # disjoint supports: λ KL(q ‖ m) + (1−λ) KL(p ‖ m) = −λ ln λ − (1−λ) ln(1−λ)
        got = get_loss("js", lam=lam)({"logits": s}, {"logits": t}).item()
        assert got == pytest.approx(-lam * math.log(lam) - (1 - lam) * math.log(1 - lam), rel=1e-6)
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="lam"):
            get_loss("js", lam=bad)


@pytest.mark.parametrize("name", ["kl", "skew_kl", "taid"])
def test_cross_entropy_value_same_gradient(name):
    g = _g(11)
    z_t = torch.randn(6, 7, generator=g, dtype=DT)
    z_s = torch.randn(6, 7, generator=g, dtype=DT)
    out = {}
    for value in ("kl", "cross_entropy"):
        s = z_s.clone().requires_grad_(True)
        v = get_loss(name, value=value)({"logits": s}, {"logits": z_t})
        v.backward()
        out[value] = (v.item(), s.grad)
    assert out["cross_entropy"][0] > out["kl"][0] + 1e-3  # differs by the target's entropy
    torch.testing.assert_close(out["kl"][1], out["cross_entropy"][1], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="value must be one of"):
        get_loss(name, value="ce")


def test_taid_cross_entropy_schedule_follows_the_reference_number():
    # with value="cross_entropy" the J_n that drives t is the reference's −Σ p_t log q_s
    g = _g(12)
    taid = get_loss("taid", value="cross_entropy", alpha=0.5)
    z_s, z_t = torch.randn(4, 5, generator=g, dtype=DT), torch.randn(4, 5, generator=g, dtype=DT)
    v = taid({"logits": z_s}, {"logits": z_t})
    assert v.item() == pytest.approx(taid_compute_loss(z_s, z_t, None, 0.4).item(), rel=1e-12)
    taid.update(0.0)
    assert taid.extra_state()["prev_loss"] == pytest.approx(v.item())


@pytest.mark.parametrize("tol,h,rel", [(1e-4, 1e-3, 1e-4), (1e-10, 1e-4, 1e-6)])
def test_feature_ot_value_and_gradient_agree(tol, h, rel):
    # the returned value's own finite-difference slope equals the gradient applied (the old
    # `sinkhorn` returned ⟨P, C⟩, whose slope was ~17% off its gradient). At the default tol the
    # solver's stopping point moves with the input, so the step h must stay well above tol.
    g = _g(13)
    h_s, h_t = torch.randn(6, 5, generator=g, dtype=DT), torch.randn(6, 5, generator=g, dtype=DT)
    loss = get_loss("feature_ot", tol=tol, max_iter=100000)
    x = h_s.clone().requires_grad_(True)
    loss({"hidden": x}, {"hidden": h_t}).backward()
    direction = torch.randn(6, 5, generator=g, dtype=DT)
    f = lambda y: loss({"hidden": y}, {"hidden": h_t}).item()  # noqa: E731
    numeric = (f(h_s + h * direction) - f(h_s - h * direction)) / (2 * h)
    assert (x.grad * direction).sum().item() == pytest.approx(numeric, rel=rel)
    assert loss.last_marginal_error <= loss.tol and loss.last_iterations >= 1


def test_feature_ot_warns_when_not_converged():
    g = _g(14)
    h_s = torch.randn(8, 4, generator=g)
    with pytest.warns(RuntimeWarning, match="did not converge in 2 iterations"):
        get_loss("feature_ot", epsilon=0.01, max_iter=2)({"hidden": h_s}, {"hidden": 0.9 * h_s + 0.1})


def test_sinkhorn_is_a_deprecated_alias_of_feature_ot():
    with pytest.warns(FutureWarning, match="use 'feature_ot'.*'sinkhorn_kd'"):
        loss = get_loss("sinkhorn", n_iter=300, epsilon=0.2)
    assert isinstance(loss, L.FeatureOTLoss) and loss.max_iter == 300 and loss.epsilon == 0.2
    with pytest.warns(FutureWarning):
        assert L.get_loss_class("sinkhorn") is L.FeatureOTLoss
    assert "sinkhorn" not in list_losses()


# ---------------------------------------------------------------- SinKD's weighting, as a recipe

def test_sinkd_losses_sum_to_the_reference_objective():
    # 2018cx/SinKD glue_train.py distill_train: loss = α·DistillKL(T) + (1 − α)·CE + β·Sinkhorn, where
    # Sinkhorn.forward = 0.001 · sinkhorn_loss at T = 2 (loss.py). Transcribed on the real rows.
    from edgesdk.models.distill.recipes.sinkd import sinkd_losses
    alpha, beta, T = 0.9, 0.8, 3.5
    g = _g(21)
    z_s = 2 * torch.randn(3, 4, 5, generator=g, dtype=DT)
    z_t = 2 * torch.randn(3, 4, 5, generator=g, dtype=DT)
    labels = torch.randint(0, 5, (3, 4), generator=g)
    mask = padded_mask()
    batch = {"labels": labels, "mask": mask}
    terms = sinkd_losses(alpha, beta, kd_temperature=T)
    s1 = z_s.clone().requires_grad_(True)
    ours = sum(t.weight * get_loss(t.name, **t.kwargs).to(DT)({"logits": s1}, {"logits": z_t}, batch) for t in terms)
    ours.backward()
    s2 = z_s.clone().requires_grad_(True)
    rs, rt, ry = s2[mask], z_t[mask], labels[mask]
    ce = -torch.log_softmax(rs, -1).gather(1, ry[:, None]).mean()
    ref = alpha * sinkd_distill_kl(rs, rt, T) + (1 - alpha) * ce + beta * 0.001 * sinkd_sinkhorn(rs, rt)
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(s1.grad, s2.grad, rtol=1e-9, atol=1e-12)


def test_sinkd_recipe_trains_and_other_recipes_take_the_term():
    from edgesdk.models.data.hypergraph import synthetic_hypergraph
    from edgesdk.models.distill import TensorData
    from edgesdk.models.distill.recipes.sinkd import sinkd_term
    from edgesdk.models.distill.recipes import HypergraphNodes, get_recipe
    torch.manual_seed(0)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    teacher, student = torch.nn.Linear(6, 3), torch.nn.Linear(6, 3)
    res = get_recipe("sinkd")(teacher, student, TensorData({"x": x, "labels": y}), steps=4, batch_size=16)
    assert [(t.name, round(t.weight, 6)) for t in res.config.losses] == [("kl", 0.225), ("ce", 0.1),
                                                                          ("sinkhorn_kd", 0.0008)]
    hist = res.info["history"]
    assert len(hist) == 4 and all(math.isfinite(h["terms"]["sinkhorn_kd"]) for h in hist)
    # a full-batch recipe gives batch-wise losses a per-step node sample
    fr = {"train": 0.3, "val": 0.2, "test": 0.3, "test_inductive": 0.2}
    hg = synthetic_hypergraph(n_nodes=60, n_classes=3, n_features=8, seed=0, fractions=fr)
    data = HypergraphNodes(hg, "train", None, subsample=16)
    m0, m1 = data.sample(0, 1, 0)["subsample"], data.sample(1, 1, 0)["subsample"]
    assert int(m0.sum()) == 16 and not torch.equal(m0, m1) and torch.equal(m0, data.sample(0, 1, 0)["subsample"])
    with pytest.raises(ValueError, match="subsample must be an int"):
        HypergraphNodes(hg, "train", None, subsample=0)
    r = get_recipe("lighthgnn")(hg, steps=3, teacher_epochs=3, subsample=16,
                                extra_losses=[sinkd_term(mask_key="subsample")])
    assert [t.name for t in r.config.losses][-1] == "sinkhorn_kd"
    assert all(math.isfinite(h["terms"]["sinkhorn_kd"]) for h in r.info["history"])
