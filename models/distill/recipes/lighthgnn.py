"""Recipe ``lighthgnn``: LightHGNN / LightHGNN+ (Feng et al., ICLR 2024), a graph-free MLP student
from an HGNN teacher on a hypergraph (see `edgesdk.models.distill.recipes` for the details)."""

from __future__ import annotations

import copy
import time
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgesdk import models
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, distill, hash_int
from edgesdk.models.distill.recipes.base import BestState, num_threads, RecipeResult, register_recipe

def padded_hyperedges(hyperedges: list[torch.Tensor]) -> torch.Tensor:
    """Hyperedges as an (E, K) int64 matrix of member indices, padded with −1 (K = largest edge)."""
    k = max((int(e.numel()) for e in hyperedges), default=0)
    out = torch.full((len(hyperedges), max(k, 1)), -1, dtype=torch.long)
    for j, e in enumerate(hyperedges):
        out[j, :e.numel()] = e
    return out


class GraphTeacher(nn.Module):
    """An HGNN bound to its hypergraph: ``forward(x (N, F)) -> logits (N, C)``, so the trainer
    can call it with the node features alone. The incidence is kept as (node, edge, value)
    pairs; the last output is memoised (the trainer feeds the same full-graph ``x`` every step)."""

    def __init__(self, hgnn: nn.Module, hg):
        super().__init__()
        from edgesdk.models.teachers.hgnn import incidence_pairs
        self.hgnn = hgnn.eval()
        rows, cols, vals = incidence_pairs(hg.incidence(sparse=True))
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("vals", vals, persistent=False)
        self.num_edges = hg.num_edges
        self._memo: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._memo is not None and self._memo[0].shape == x.shape and torch.equal(self._memo[0], x):
            return self._memo[1]
        from edgesdk.models.teachers.hgnn import hgnn_propagate
        h = x
        pairs = (self.rows, self.cols, self.vals)
        for i, theta in enumerate(self.hgnn.thetas):  # HGNN.forward with num_edges passed explicitly
            h = hgnn_propagate(theta(self.hgnn.drop(h)), pairs, num_edges=self.num_edges)
            if i < len(self.hgnn.thetas) - 1:
                h = F.relu(h)
        if not torch.is_grad_enabled():
            self._memo = (x.detach().clone(), h.detach())
        return h


class HGNNFullGraph(nn.Module):
    """Export-clean HGNN over a fixed hypergraph: ``forward(x (N, F)) -> logits (N, C)``.

    ``Dv^-1/2 H W De^-1 Hᵀ Dv^-1/2`` is applied as two padded gathers (``index_select``) and
    weighted sums — O(nnz·F) like the sparse original, with no sparse tensors, scatter or N×N
    matrix, so it lowers to ONNX, ExecuTorch and LiteRT. The structure is baked in as constant
    buffers (the teacher needs the whole graph to predict any node)."""

    def __init__(self, hgnn: nn.Module, hg, edge_weight: torch.Tensor | None = None):
        super().__init__()
        from edgesdk.models.teachers.hgnn import incidence_pairs
        self.hgnn = copy.deepcopy(hgnn).eval()
        rows, cols, vals = incidence_pairs(hg.incidence(sparse=True))
        N, E = hg.num_nodes, hg.num_edges
        w = torch.ones(E) if edge_weight is None else edge_weight.float()
        dv = torch.zeros(N).index_add_(0, rows, vals * w[cols])
        de = torch.zeros(E).index_add_(0, cols, vals)
        dv_is = torch.where(dv > 0, dv.clamp(min=1e-12).rsqrt(), torch.zeros_like(dv))
        de_inv = torch.where(de > 0, de.clamp(min=1e-12).reciprocal(), torch.zeros_like(de))

        def padded(group: torch.Tensor, member: torch.Tensor, coef: torch.Tensor, n_groups: int, pad: int):
            order = torch.argsort(group * (member.max() + 1 if member.numel() else 1) + member)
            group, member, coef = group[order], member[order], coef[order]
            counts = torch.bincount(group, minlength=n_groups)
            k = max(int(counts.max()) if counts.numel() else 1, 1)
            start = torch.cumsum(counts, 0) - counts
            slot = torch.arange(group.numel()) - start[group]
            idx = torch.full((n_groups, k), pad, dtype=torch.long)
            cf = torch.zeros(n_groups, k)
            idx[group, slot] = member
            cf[group, slot] = coef
            return idx, cf

        # edges gather their members' (Dv^-1/2-scaled) features; nodes gather their edges' sums
        e_idx, e_cf = padded(cols, rows, vals * dv_is[rows], E, N)                  # (E, Ke)
        n_idx, n_cf = padded(rows, cols, vals * (w * de_inv)[cols] * dv_is[rows], N, E)  # (N, Kn)
        self.register_buffer("e_idx", e_idx.flatten())
        self.register_buffer("e_cf", e_cf.unsqueeze(-1))
        self.register_buffer("n_idx", n_idx.flatten())
        self.register_buffer("n_cf", n_cf.unsqueeze(-1))
        self.shape = (N, E, e_idx.shape[1], n_idx.shape[1])

    def propagate(self, z: torch.Tensor) -> torch.Tensor:  # (N, F) -> (N, F)
        N, E, ke, kn = self.shape
        zero = torch.zeros(1, z.shape[1], dtype=z.dtype)
        zp = torch.cat([z, zero], 0)                                                   # (N+1, F)
        edge = (zp.index_select(0, self.e_idx).view(E, ke, -1) * self.e_cf).sum(1)     # (E, F)
        ep = torch.cat([edge, zero], 0)                                                # (E+1, F)
        return (ep.index_select(0, self.n_idx).view(N, kn, -1) * self.n_cf).sum(1)     # (N, F)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        thetas = self.hgnn.thetas
        for i, theta in enumerate(thetas):
            h = self.propagate(theta(h))
            if i < len(thetas) - 1:
                h = torch.relu(h)
        return h


@torch.no_grad()
def hyperedge_reliability(teacher: nn.Module, x: torch.Tensor, hyperedges, noise: float = 1.0, draws: int = 5,
                          seed: int = 0) -> torch.Tensor:
    """LightHGNN+'s hyperedge reliability ρ_e in [0, 1]: (E,).

    ``teacher(x) -> logits`` over the whole graph. H_v is the entropy of the teacher's
    prediction for node v; each of ``draws`` draws perturbs the features multiplicatively,
    ``x ⊙ (1 + noise·ε)``, ε ~ N(0, 1) (the reference's perturbation), and
    Δ_e = mean over draws of |mean_{v∈e} H'_v − mean_{v∈e} H_v|. Then ρ_e = 1 − Δ_e / max_e Δ_e:
    hyperedges whose members' predictions stay as (un)certain under noise are reliable.
    """
    members = hyperedges if torch.is_tensor(hyperedges) else padded_hyperedges(hyperedges)  # (E, K)
    valid = (members >= 0).float()
    cnt = valid.sum(1).clamp(min=1)

    def edge_entropy(logits):  # (N, C) -> (E,)
        logp = torch.log_softmax(logits.float(), -1)
        ent = -(logp.exp() * logp).sum(-1)                                   # (N,)
        return (ent[members.clamp(min=0)] * valid).sum(1) / cnt

    was = teacher.training
    teacher.eval()
    clean = edge_entropy(teacher(x))
    g = torch.Generator().manual_seed(hash_int(seed, "reliability"))
    delta = torch.zeros_like(clean)
    for _ in range(draws):
        eps = torch.randn(x.shape, generator=g, dtype=x.dtype)
        delta += (edge_entropy(teacher(x * (1 + noise * eps))) - clean).abs()
    teacher.train(was)
    delta /= max(draws, 1)
    top = float(delta.max()) if delta.numel() else 0.0
    return torch.ones_like(delta) if top <= 0 else 1.0 - delta / top


class HypergraphNodes:
    """Full-batch node data for the trainer: every step returns all nodes.

    ``sample()`` -> ``{"x": (N, F), "labels": (N,) (−100 outside the labelled split)}`` plus,
    when ``reliability`` is given, ``"groups"``: the hyperedges kept this step, each one
    independently with probability ρ_e (Bernoulli, seeded by (seed, step)), as an (M, K)
    member matrix padded with −1 — what ``group_kl`` reads. With ``subsample`` = k, also
    ``"subsample"``: a bool (N,) mask of k nodes drawn each step (seeded by (seed, step)), for
    batch-wise losses such as ``sinkhorn_kd`` or ``feature_ot`` that their papers apply to
    mini-batches (``mask_key="subsample"``). ``batch_size`` is ignored (full batch). Single
    process: the trainer's data-parallel slicing would split nodes, not edges.
    """

    inputs = ("x",)

    def __init__(self, hg, label_split: str | None = "train", reliability: torch.Tensor | None = None,
                 subsample: int | None = None):
        self.x = hg.x
        self.labels = torch.full((hg.num_nodes,), -100, dtype=torch.long)
        idx = hg.splits[label_split] if label_split is not None else torch.arange(hg.num_nodes)
        self.labels[idx] = hg.y[idx]
        self.members = padded_hyperedges(hg.hyperedges)
        if reliability is not None and reliability.shape != (hg.num_edges,):
            raise ValueError(f"reliability must be ({hg.num_edges},), one per hyperedge, got {tuple(reliability.shape)}")
        self.reliability = None if reliability is None else reliability.float().clamp(0, 1)
        if subsample is not None and not (isinstance(subsample, int) and 1 <= subsample <= hg.num_nodes):
            raise ValueError(f"subsample must be an int in [1, {hg.num_nodes}] (nodes per step), got {subsample!r}")
        self.subsample = subsample

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        out = {"x": self.x, "labels": self.labels}
        if self.reliability is not None:
            g = torch.Generator().manual_seed(hash_int(seed, step, "hyperedges"))
            keep = torch.bernoulli(self.reliability, generator=g).bool()
            out["groups"] = self.members[keep]
        if self.subsample is not None:
            g = torch.Generator().manual_seed(hash_int(seed, step, "subsample"))
            mask = torch.zeros(len(self.x), dtype=torch.bool)
            mask[torch.randperm(len(self.x), generator=g)[:self.subsample]] = True
            out["subsample"] = mask
        return out


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(-1) == y).float().mean()) if len(y) else float("nan")


@register_recipe("lighthgnn")
def lighthgnn(hg, *, setting: str = "transductive", teacher: nn.Module | None = None, kd: bool = True,
              topology: bool = True, student: nn.Module | str = "mlp-small", student_cfg: dict | None = None,
              temperature: float = 1.0, ce_weight: float = 1.0, kl_weight: float = 1.0, topo_weight: float = 1.0,
              noise: float = 1.0, draws: int = 5, steps: int = 200, lr: float = 0.01, weight_decay: float = 5e-4,
              teacher_epochs: int = 200, label_split: str | None = "train", seed: int = 0,
              threads: int | None = None, progress: bool = False,
              extra_losses: Sequence[LossSpec] = (), subsample: int | None = None) -> RecipeResult:
    """Distil an HGNN into a graph-free MLP on the hypergraph ``hg``
    (`models.data.hypergraph.Hypergraph` with train/val/test/test_inductive splits).

    - ``setting="transductive"``: teacher and student see the whole graph (labels of ``train``
      only); scores on ``test`` ∪ ``test_inductive`` (every node whose label is never used).
    - ``setting="inductive"``: both are trained on ``hg.without_inductive()``; the teacher is
      scored on the full graph at the ``test_inductive`` nodes (it needs their hyperedges), the
      student from those nodes' features alone. ``metrics`` also holds the transductive score
      on the training graph's ``test`` split.
    - ``kd=False``: the plain student S₀ (CE on the train labels only); ``topology=False``:
      LightHGNN (no hyperedge term); default: LightHGNN+. ``label_split=None`` labels every node
      of the training graph (with ``kd=False``: the feature-only ceiling, an oracle that shows
      how much of the teacher's accuracy node features alone can carry).

    Training: full batch, ``steps`` Adam steps (lr ``lr``, L2 ``weight_decay``, constant
    schedule, as the reference), keeping the weights with the best ``val`` accuracy. The
    teacher (``train_hgnn``, ``teacher_epochs``) is trained here unless given; pass the same
    one to compare S₀ and S. ``threads`` sets torch's intra-op threads while training.
    ``extra_losses`` are added to the KD terms (the batch is every node: ``x``, ``labels``; with
    ``subsample`` = k also ``subsample``, k random nodes per step, see `HypergraphNodes`).
    """
    from edgesdk.models.teachers.hgnn import train_hgnn

    if setting not in ("transductive", "inductive"):
        raise ValueError(f"setting must be 'transductive' or 'inductive', got {setting!r}")
    t0 = time.perf_counter()
    timings = {}
    with num_threads(threads):
        g = hg.without_inductive() if setting == "inductive" else hg
        if teacher is None:
            teacher = train_hgnn(hg, epochs=teacher_epochs, seed=seed, inductive=setting == "inductive")
            timings["teacher_train_s"] = time.perf_counter() - t0
        teacher.eval()
        bound = GraphTeacher(teacher, g)
        full = GraphTeacher(teacher, hg)
        t1 = time.perf_counter()
        rel = hyperedge_reliability(bound, g.x, g.hyperedges, noise=noise, draws=draws, seed=seed) \
            if kd and topology else None
        timings["reliability_s"] = time.perf_counter() - t1
        data = HypergraphNodes(g, label_split, rel, subsample)

        if isinstance(student, str):
            student = models.create(student, **{"in_dim": hg.num_features, "out_dim": hg.num_classes,
                                                **(student_cfg or {})})
        losses = [LossSpec("ce", ce_weight)] if ce_weight else []
        if kd:
            losses.append(LossSpec("kl", kl_weight, {"temperature": temperature}))
            if topology:
                losses.append(LossSpec("group_kl", topo_weight, {"temperature": temperature}))
            losses += list(extra_losses)
        if not losses:
            raise ValueError("no loss: kd=False needs ce_weight > 0")
        cfg = DistillConfig(losses=losses, steps=steps, batch_size=1, optimizer="adam", lr=lr,
                            weight_decay=weight_decay, schedule="constant", grad_clip=None, eval_every=1,
                            seed=seed, progress=progress)
        va = g.splits["val"]
        best = BestState(lambda m: {"val_acc": _accuracy(m, g.x[va], g.y[va])}, "val_acc")
        torch.manual_seed(seed)
        t2 = time.perf_counter()
        distill(bound, student, data, cfg, eval_fn=best)
        timings["student_train_s"] = time.perf_counter() - t2
        history = student.distill_history
        best.restore(student)
        student.eval()

    # ---- scores
    with torch.no_grad():
        t_full = full(hg.x)
    metrics = {"setting": setting, "kd": kd, "topology": bool(kd and topology), "best_step": best.best_step,
               "val_acc": best.best}
    if setting == "transductive":
        idx = torch.cat([hg.splits["test"], hg.splits["test_inductive"]])
        metrics["teacher_acc"] = float((t_full[idx].argmax(-1) == hg.y[idx]).float().mean())
        metrics["student_acc"] = _accuracy(student, hg.x[idx], hg.y[idx])
        metrics["eval_nodes"] = int(idx.numel())
    else:
        idx = hg.splits["test_inductive"]
        metrics["teacher_acc"] = float((t_full[idx].argmax(-1) == hg.y[idx]).float().mean())
        metrics["student_acc"] = _accuracy(student, hg.x[idx], hg.y[idx])
        metrics["eval_nodes"] = int(idx.numel())
        ti = g.splits["test"]
        with torch.no_grad():
            t_g = bound(g.x)
        metrics["teacher_acc_observed_test"] = float((t_g[ti].argmax(-1) == g.y[ti]).float().mean())
        metrics["student_acc_observed_test"] = _accuracy(student, g.x[ti], g.y[ti])
    timings["total_s"] = time.perf_counter() - t0
    info = {"reliability": rel, "history": history, "graph": g.name, "train_nodes": g.num_nodes,
            "sampled_edges_mean": float(rel.sum()) if rel is not None else 0.0}
    return RecipeResult(student, teacher, metrics, cfg, timings, info)


