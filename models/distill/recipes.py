"""Distillation recipes by name: each builds the `DistillConfig`, the data object and the
teacher wrapper for one student family, runs `models.distill.distill`, and evaluates.

``register_recipe(name)`` / ``get_recipe(name)`` / ``list_recipes()`` work like the loss and
model registries (duplicates rejected, unknown names list the registered ones). A recipe is a
function returning a `RecipeResult` (student, teacher, metrics, timings, the config it used).

- ``lighthgnn`` — LightHGNN / LightHGNN+ (Feng et al., ICLR 2024): a graph-free MLP student
  from an HGNN teacher on a hypergraph. CE on the train labels + T²·KL(teacher ‖ student) on
  the soft labels of *all* nodes of the training graph + (LightHGNN+) the hyperedge term
  ``group_kl``, on hyperedges sampled each step with probability equal to their reliability
  (`hyperedge_reliability`: stability of the teacher's prediction entropy under feature noise).
  ``setting="transductive"`` distils on the whole graph; ``"inductive"`` trains teacher and
  student without the ``test_inductive`` nodes and evaluates the student on those nodes from
  their features alone. ``kd=False`` gives the plain student S₀ (CE only, same steps and seed).
- ``tokenbag`` — a model2vec-like token-bag sentence encoder (`models.mlp.TokenBagEncoder`)
  from all-MiniLM-L6-v2: one teacher pass (`teacher_pass`) gives the sentence embeddings and
  the teacher's contextual vector of every word; each embedding row starts as the mean
  contextual vector of the words its token comes from (`init_from_contexts`; or, without
  them, the model2vec-style single-word embeddings, `init_from_teacher_words`), then
  ``hidden_cosine`` to the teacher's sentence embedding + ``relation_mse`` (in-batch
  similarity matrices). Evaluated by the Spearman correlation of teacher vs student pairwise
  similarities on held-out sentences and top-10 retrieval overlap (`embedding_agreement`).

``encdec-from-decoder`` (:mod:`models.distill.recipe_encdec`), ``mohawk``
(:mod:`models.distill.recipe_mohawk`) and ``sinkd`` (:mod:`models.distill.recipe_sinkd`, SinKD's
CE/KL/Sinkhorn weighting for any teacher and student) live in their own files and register here
on import. ``lighthgnn``, ``tokenbag`` and ``encdec-from-decoder`` take ``extra_losses``: more
`LossSpec` terms added to their distillation losses (e.g. ``recipe_sinkd.sinkd_term()``).

Example::

    from edgesdk.models.distill.recipes import get_recipe
    from edgesdk.models.data import synthetic_hypergraph
    res = get_recipe("lighthgnn")(synthetic_hypergraph(homophily=0.8, noise=2.0), setting="inductive")
    print(res.metrics)          # teacher / student accuracies on the held-out nodes
    student = res.student       # an `MLP`: node features -> logits, no graph needed

Plain PyTorch (imports nothing of the SDK beyond `models`).
"""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from edgesdk import models
from edgesdk.models.distill.trainer import DistillConfig, LossSpec, distill, hash_int
from edgesdk.runtime.registry import Registry, RegistryError

__all__ = ["RecipeResult", "register_recipe", "get_recipe", "list_recipes", "UnknownRecipeError",
           "HypergraphNodes", "GraphTeacher", "HGNNFullGraph", "hyperedge_reliability", "padded_hyperedges",
           "SentencePairs", "TargetLookup", "embedding_agreement", "spearman", "init_from_teacher_words",
           "init_from_contexts", "teacher_pass",
           "lighthgnn", "tokenbag"]

# ------------------------------------------------------------------------------------------ registry

def _check_recipe(name, fn) -> None:
    if not callable(fn):
        raise TypeError(f"@register_recipe({name!r}) decorates functions, got {fn!r}")


RECIPES: Registry[Callable] = Registry("recipe", check=_check_recipe)
UnknownRecipeError = RegistryError  # an unregistered recipe name (a KeyError, ValueError and ConfigError)


def register_recipe(name: str):
    """Decorator: ``@register_recipe("lighthgnn")`` on a function returning a `RecipeResult`.
    A name taken by another function is rejected."""
    def deco(fn):
        RECIPES.register(name, fn)
        fn.recipe_name = name
        return fn
    return deco


def list_recipes() -> list[str]:
    """Registered recipe names, sorted."""
    return RECIPES.names()


def get_recipe(name: str) -> Callable:
    """The recipe function registered under ``name``."""
    return RECIPES.get(name)


@dataclass
class RecipeResult:
    """What a recipe returns: the trained ``student`` (eval mode), the ``teacher`` it used,
    ``metrics`` (teacher and student scores), ``timings`` (seconds per phase), the
    ``config`` (DistillConfig) and ``info`` (recipe-specific extras)."""

    student: nn.Module
    teacher: nn.Module | None
    metrics: dict
    config: DistillConfig
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)


def num_threads(threads: int | None):
    """Context: torch intra-op threads for training (restored afterwards)."""
    class _Ctx:
        def __enter__(self):
            self.before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)

        def __exit__(self, *exc):
            torch.set_num_threads(self.before)
    return _Ctx()


class _BestState:
    """``eval_fn`` for the trainer that keeps the student's weights at its best ``metric``."""

    def __init__(self, score: Callable[[nn.Module], dict], metric: str):
        self.score, self.metric = score, metric
        self.best, self.best_step, self.state, self.calls = -math.inf, 0, None, 0

    def __call__(self, student: nn.Module) -> dict:
        self.calls += 1
        m = self.score(student)
        if m[self.metric] > self.best:
            self.best, self.best_step = m[self.metric], self.calls
            self.state = copy.deepcopy(student.state_dict())
        return m

    def restore(self, student: nn.Module) -> None:
        if self.state is not None:
            student.load_state_dict(self.state)


# ------------------------------------------------------------------------------------------ hypergraphs

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
        best = _BestState(lambda m: {"val_acc": _accuracy(m, g.x[va], g.y[va])}, "val_acc")
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


# ------------------------------------------------------------------------------------------ sentences

class TargetLookup(nn.Module):
    """A teacher made of precomputed outputs: ``forward(ids, mask) -> targets`` for exactly the
    rows given, found by the content of each ``ids`` row (the mask is not part of the key, so
    token dropout on the mask still finds the sentence's target). Lets the trainer distil from
    embeddings computed once (the teacher is the slow part) while batches carry only the
    student's inputs. Rows with identical ids share the mean of their targets."""

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor):
        super().__init__()
        keys = [self._key(i, m) for i, m in zip(ids, mask)]
        index: dict[bytes, int] = {}
        rows: list[list[int]] = []
        for n, k in enumerate(keys):
            if k not in index:
                index[k] = len(rows)
                rows.append([])
            rows[index[k]].append(n)
        self.index = index
        self.register_buffer("targets", torch.stack([targets[r].mean(0) for r in rows]), persistent=False)

    @staticmethod
    def _key(ids: torch.Tensor, mask: torch.Tensor) -> bytes:
        return ids.numpy().tobytes()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        try:
            rows = [self.index[self._key(i, m)] for i, m in zip(ids, mask)]
        except KeyError:
            raise KeyError("TargetLookup: an input row has no precomputed target; the lookup only answers for "
                           "the rows it was built from") from None
        return self.targets[torch.tensor(rows, dtype=torch.long)]


class SentencePairs:
    """Trainer data for the token-bag student: ``ids``/``mask`` (student inputs) of the training
    sentences; ``sample`` draws ``batch_size`` distinct sentences per step (seeded) and, with
    ``token_dropout`` p, hides each token with probability p (a row keeps at least its first
    token): the student learns to reach the teacher's embedding from partial bags."""

    inputs = ("ids", "mask")

    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, token_dropout: float = 0.0):
        if not 0.0 <= token_dropout < 1.0:
            raise ValueError(f"token_dropout must be in [0, 1), got {token_dropout!r}")
        self.ids, self.mask, self.n, self.token_dropout = ids, mask, len(ids), float(token_dropout)

    def sample(self, step: int, batch_size: int, seed: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(hash_int(seed, step))
        idx = torch.randperm(self.n, generator=g)[:batch_size]
        ids, mask = self.ids[idx], self.mask[idx]
        if self.token_dropout:
            keep = torch.rand(mask.shape, generator=g) >= self.token_dropout
            keep[:, 0] = True
            mask = mask & keep
        return {"ids": ids, "mask": mask}


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors (ties broken by position; continuous
    similarities rarely tie)."""
    def ranks(v):
        r = torch.empty_like(v, dtype=torch.float64)
        r[torch.argsort(v)] = torch.arange(v.numel(), dtype=torch.float64)
        return r
    ra, rb = ranks(a.double()), ranks(b.double())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()).clamp(min=1e-12))


def embedding_agreement(student_emb: torch.Tensor, teacher_emb: torch.Tensor, k: int = 10) -> dict:
    """How well student embeddings reproduce the teacher's geometry on the same N texts:

    - ``spearman``: Spearman correlation between the teacher's and the student's cosine
      similarities over all N(N−1)/2 pairs;
    - ``top{k}_overlap``: mean over texts of |top-k neighbours by teacher ∩ by student| / k
      (the text itself excluded).
    """
    s = F.normalize(student_emb.float(), dim=-1)
    t = F.normalize(teacher_emb.float(), dim=-1)
    n = len(s)
    sim_s, sim_t = s @ s.T, t @ t.T
    iu = torch.triu_indices(n, n, offset=1)
    rho = spearman(sim_s[iu[0], iu[1]], sim_t[iu[0], iu[1]])
    eye = torch.eye(n, dtype=torch.bool)
    k = min(k, n - 1)
    nn_s = sim_s.masked_fill(eye, -2).topk(k, dim=1).indices
    nn_t = sim_t.masked_fill(eye, -2).topk(k, dim=1).indices
    overlap = (nn_s[:, :, None] == nn_t[:, None, :]).any(-1).float().sum(1) / k
    return {"spearman": rho, f"top{k}_overlap": float(overlap.mean()), "texts": n}


@torch.no_grad()
def teacher_pass(encoder, texts: list[str], word_spans: Callable[[str], list] | None = None,
                 batch_size: int = 64) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """One pass of a Hugging Face sentence encoder (`models.teachers.hf.HFEncoder`, e.g. MiniLM)
    over ``texts``: their sentence embeddings (N, D) — identical to ``encoder.encode`` (same
    length-sorted batches) — and, with ``word_spans(text) -> [(start, end, word), ...]``, the
    teacher's *contextual* vector of every word: the mean of the last hidden states of the
    word pieces overlapping the word's characters (float16, one (n_words, D) tensor per text;
    a word the teacher truncated away gets no vector, marked by NaN)."""
    was = encoder.training
    encoder.eval()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    emb = torch.empty(len(texts), encoder.dim)
    words: list[torch.Tensor | None] = [None] * len(texts)
    for b in range(0, len(order), batch_size):
        idx = order[b:b + batch_size]
        batch = [texts[i] for i in idx]
        tok = dict(encoder.tokenizer(batch, padding=True, truncation=True, max_length=encoder.max_length,
                                     return_tensors="pt", return_offsets_mapping=word_spans is not None))
        offsets = tok.pop("offset_mapping", None)
        hidden = encoder.model(**tok).last_hidden_state                          # (B, T, D)
        emb[idx] = encoder.pool(hidden, tok["attention_mask"]).float()
        if word_spans is None:
            continue
        for r, i in enumerate(idx):
            o = offsets[r]
            real = tok["attention_mask"][r].bool() & (o[:, 1] > o[:, 0])          # word pieces, no specials
            pos = real.nonzero().flatten()
            st, en = o[pos, 0], o[pos, 1]
            spans = word_spans(texts[i])
            vec = torch.full((len(spans), hidden.shape[-1]), float("nan"))
            for j, (a, z, _) in enumerate(spans):
                sel = pos[(st < z) & (en > a)]
                if sel.numel():
                    vec[j] = hidden[r, sel].mean(0)
            words[i] = vec.half()
    encoder.train(was)
    return emb, (words if word_spans is not None else None)


@torch.no_grad()
def init_from_contexts(student: nn.Module, texts: list[str], word_vectors: list[torch.Tensor]) -> dict:
    """Contextual initialisation of a `TokenBagEncoder` (a static-embedding reduction of the
    teacher): every token row starts as the mean, over its occurrences in ``texts``, of the
    teacher's contextual vectors of the words it comes from (a word's own vector; a bigram's,
    the mean of both words'; an n-gram's, its word's) — so the student's masked mean
    approximates the teacher's mean pooling. ``word_vectors`` come from `teacher_pass`. Rows
    never seen start at zero. With ``emb_dim`` below the teacher's width the rows are reduced
    by PCA and the projection starts as the inverse map."""
    tok = student.tokenizer
    d_t = word_vectors[0].shape[1] if word_vectors else student.cfg.out_dim
    sums = torch.zeros(student.cfg.buckets, d_t, dtype=torch.float64)
    hits = torch.zeros(student.cfg.buckets, dtype=torch.float64)
    for text, wv in zip(texts, word_vectors):
        toks = tok.tokens_with_sources(text)[:student.cfg.max_tokens]
        if not toks:
            continue
        wv = wv.double()
        rows, vecs = [], []
        for t, src in toks:
            v = wv[list(src)].mean(0)
            if torch.isfinite(v).all():
                rows.append(tok.bucket(t))
                vecs.append(v)
        if rows:
            r = torch.tensor(rows)
            sums.index_add_(0, r, torch.stack(vecs))
            hits.index_add_(0, r, torch.ones(len(rows), dtype=torch.float64))
    table = (sums / hits.clamp(min=1)[:, None]).float()
    _set_table(student, table)
    return {"buckets_used": int((hits > 0).sum()), "token_occurrences": int(hits.sum())}


def _set_table(student: nn.Module, table: torch.Tensor) -> None:
    """Write a (buckets, D_teacher) table into the student, by PCA when emb_dim < D_teacher."""
    d_t, d_s = table.shape[1], student.cfg.emb_dim
    if d_s > d_t or student.cfg.out_dim != d_t:
        raise ValueError(f"teacher vectors are {d_t}-d; the student needs emb_dim <= {d_t} and out_dim == {d_t} "
                         f"(got emb_dim={d_s}, out_dim={student.cfg.out_dim})")
    if d_s < d_t:  # PCA (as model2vec); the projection maps back to the teacher's space
        used = table[table.abs().sum(1) > 0]
        _, _, v = torch.linalg.svd(used, full_matrices=False)
        comps = v[:d_s]                                                    # (d_s, d_t)
        table = table @ comps.T
        student.proj.weight.copy_(comps.T)
    else:
        student.proj.weight.copy_(torch.eye(d_t))
    student.proj.bias.zero_()
    student.embed.weight.copy_(table)


@torch.no_grad()
def init_from_teacher_words(student: nn.Module, texts, encode: Callable, max_words: int = 20000,
                            sif: float = 1e-3, center: bool = True, batch_size: int = 512) -> dict:
    """model2vec-style initialisation of a `TokenBagEncoder`: the embedding row of each of the
    ``max_words`` most frequent words of ``texts`` becomes ``encode([word])`` (the teacher's
    embedding of the word alone, minus the frequency-weighted mean word vector when ``center``)
    times the SIF weight ``sif / (sif + p(word))``; every other row
    (bigrams, n-grams, rare words) starts at zero. With ``emb_dim`` below the teacher's width
    the vectors are reduced by PCA and the student's projection starts as the inverse map (needs
    ``out_dim`` = the teacher's width). Returns counts and the seconds spent in the teacher."""
    tok = student.tokenizer
    freq = Counter(w for t in texts for w in tok.words(t))
    total = sum(freq.values()) or 1
    words = [w for w, _ in freq.most_common(max_words)]
    t0 = time.perf_counter()
    vecs = torch.cat([encode(words[i:i + batch_size]) for i in range(0, len(words), batch_size)]) if words \
        else torch.zeros(0, student.cfg.emb_dim)
    secs = time.perf_counter() - t0
    p = torch.tensor([freq[w] / total for w in words])
    if center and len(words):
        vecs = vecs - (p[:, None] * vecs).sum(0) / p.sum()  # remove the common direction (PCA centres too)
    table = torch.zeros(student.cfg.buckets, vecs.shape[1])
    hits = torch.zeros(student.cfg.buckets)
    for w, v, pw in zip(words, vecs, p.tolist()):
        b = tok.bucket(f"w:{w}")
        table[b] += v * (sif / (sif + pw))
        hits[b] += 1
    _set_table(student, table / hits.clamp(min=1)[:, None])
    return {"words": len(words), "buckets_used": int((hits > 0).sum()), "collisions": int((hits > 1).sum()),
            "teacher_s": secs}


@register_recipe("tokenbag")
def tokenbag(texts: list[str], teacher_emb: torch.Tensor, *, val_texts: list[str] | None = None,
             val_emb: torch.Tensor | None = None, eval_texts: list[str] | None = None,
             eval_emb: torch.Tensor | None = None, student: nn.Module | str = "tokenbag",
             student_cfg: dict | None = None, word_vectors: list[torch.Tensor] | None = None,
             word_encoder: Callable | None = None, init_words: int = 20000, train: bool = True,
             steps: int = 400, batch_size: int = 128, lr: float = 3e-3,
             weight_decay: float = 0.0, token_dropout: float = 0.0, cosine_weight: float = 1.0,
             relation_weight: float = 1.0, eval_every: int = 50, seed: int = 0, threads: int | None = None,
             progress: bool = False, extra_losses: Sequence[LossSpec] = ()) -> RecipeResult:
    """Distil sentence embeddings ``teacher_emb`` (N, D) of ``texts`` into a token-bag encoder.

    Initialisation: ``word_vectors`` (the teacher's contextual word vectors of ``texts`` from
    `teacher_pass`) -> `init_from_contexts`; else ``word_encoder(list[str]) -> (n, D)`` (e.g.
    MiniLM's ``encode``) -> the model2vec-style `init_from_teacher_words`; else random.
    ``train=False`` skips training (the initialised — or random — encoder is returned: the
    random one is the S₀ baseline). Loss: ``cosine_weight``·(1 − cos) to the teacher embedding
    + ``relation_weight``·``relation_mse`` on the in-batch similarity matrices; AdamW, cosine
    schedule, optional ``token_dropout`` (see `SentencePairs`). With ``val_texts``/``val_emb``
    the weights with the best validation Spearman (checked every ``eval_every`` steps) are
    kept. Scores (`embedding_agreement`) on ``eval_texts``/``eval_emb`` when given.
    ``extra_losses`` are added to those two terms (student and teacher embeddings are ``logits``).
    """
    t0 = time.perf_counter()
    timings, info = {}, {}
    with num_threads(threads):
        torch.manual_seed(seed)
        if isinstance(student, str):
            student = models.create(student, **{"out_dim": teacher_emb.shape[1], **(student_cfg or {})})
        init = "random"
        if word_vectors is not None:
            info["init"], init = init_from_contexts(student, texts, word_vectors), "teacher-contexts"
        elif word_encoder is not None:
            info["init"] = init_from_teacher_words(student, texts, word_encoder, max_words=init_words)
            init = "teacher-words"
        timings["init_s"] = time.perf_counter() - t0
        ids, mask = student.tokenizer.encode(texts)
        losses = []
        if cosine_weight:
            losses.append(LossSpec("hidden_cosine", cosine_weight, {"student_key": "logits", "teacher_key": "logits",
                                                                    "mask_key": None}))
        if relation_weight:
            losses.append(LossSpec("relation_mse", relation_weight, {"student_key": "logits", "teacher_key": "logits",
                                                                   "mask_key": None}))
        losses += list(extra_losses)
        cfg = DistillConfig(losses=losses or [LossSpec("hidden_cosine")], steps=steps, batch_size=batch_size,
                            optimizer="adamw", lr=lr, weight_decay=weight_decay, schedule="cosine",
                            warmup_steps=min(50, steps // 10), grad_clip=1.0, eval_every=max(1, eval_every),
                            seed=seed, progress=progress)
        if train:
            teacher = TargetLookup(ids, mask, teacher_emb)
            best = None
            if val_texts is not None and val_emb is not None:
                v_ids, v_mask = student.tokenizer.encode(val_texts)
                best = _BestState(lambda m: {"val_spearman": embedding_agreement(m(v_ids, v_mask), val_emb)["spearman"]},
                                  "val_spearman")
            t1 = time.perf_counter()
            distill(teacher, student, SentencePairs(ids, mask, token_dropout), cfg, eval_fn=best)
            timings["student_train_s"] = time.perf_counter() - t1
            info["history"] = student.distill_history
            if best is not None:
                best.restore(student)
                info.update(best_eval=best.best_step, val_spearman=best.best)
        student.eval()
    metrics = {"train_texts": len(texts), "trained": train, "init": init}
    if eval_texts is not None and eval_emb is not None:
        metrics.update(embedding_agreement(student.encode_texts(eval_texts), eval_emb))
    timings["total_s"] = time.perf_counter() - t0
    return RecipeResult(student, None, metrics, cfg, timings, info)


# Recipes of the other student families live beside their models' needs; importing them here
# registers them with this registry (they import `register_recipe` from this module).
from edgesdk.models.distill import recipe_encdec  # noqa: E402,F401  (registers "encdec-from-decoder")
from edgesdk.models.distill import recipe_mohawk  # noqa: E402,F401  (registers "mohawk" and loss "matrix_frobenius")
from edgesdk.models.distill import recipe_sinkd  # noqa: E402,F401  (registers "sinkd")
