"""HGNN teacher (Feng et al., 2019) for hypergraph node classification — what LightHGNN
students distil from.

One HGNN convolution: ``X' = σ(Dv^-1/2 H W De^-1 Hᵀ Dv^-1/2 X Θ)`` with incidence ``H`` (N, E),
hyperedge weights ``W`` (E,), node degrees ``Dv = H W 1`` and edge degrees ``De = Hᵀ 1``.
The product is applied as gathers and ``index_add`` over the incidences (never forming an
N×N matrix), with ``H`` dense or sparse. Plain PyTorch; trains in a second or two on the digits hypergraph.

>>> from edgesdk.models.data.hypergraph import digits_hypergraph
>>> hg = digits_hypergraph()
>>> model = train_hgnn(hg, epochs=200, seed=0)
>>> accuracy(model, hg, "test") > 0.9
True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


def incidence_pairs(H: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(node index, edge index, value) of every non-zero of ``H`` (N, E), dense or sparse."""
    if H.is_sparse:
        H = H.coalesce()
        (rows, cols), vals = H.indices(), H.values()
    else:
        rows, cols = H.nonzero(as_tuple=True)
        vals = H[rows, cols]
    return rows, cols, vals


def hgnn_propagate(x: torch.Tensor, H: torch.Tensor | tuple, edge_weight: torch.Tensor | None = None,
                   num_edges: int | None = None) -> torch.Tensor:
    """``Dv^-1/2 H W De^-1 Hᵀ Dv^-1/2 x`` for x (N, F) -> (N, F).

    ``H`` is the (N, E) incidence, dense or sparse, or its :func:`incidence_pairs` (then pass
    ``num_edges``). Applied as gather / ``index_add`` over the incidences (O(nnz·F), no N×N
    matrix). Nodes in no hyperedge and empty hyperedges contribute zero (no inf).
    """
    if isinstance(H, tuple):
        rows, cols, vals = H
        E = int(num_edges) if num_edges is not None else int(cols.max()) + 1
    else:
        (rows, cols, vals), E = incidence_pairs(H), H.shape[1]
    N = x.shape[0]
    vals = vals.to(x.dtype)
    w = torch.ones(E, dtype=x.dtype) if edge_weight is None else edge_weight.to(x.dtype)
    dv = torch.zeros(N, dtype=x.dtype).index_add_(0, rows, vals * w[cols])            # (N,)
    de = torch.zeros(E, dtype=x.dtype).index_add_(0, cols, vals)                       # (E,)
    dv_is = torch.where(dv > 0, dv.clamp(min=1e-12).rsqrt(), torch.zeros_like(dv))
    de_inv = torch.where(de > 0, de.clamp(min=1e-12).reciprocal(), torch.zeros_like(de))
    z = dv_is[:, None] * x                                                             # (N, F)
    z = torch.zeros(E, x.shape[1], dtype=x.dtype).index_add_(0, cols, vals[:, None] * z[rows])  # (E, F)
    z = (w * de_inv)[:, None] * z
    z = torch.zeros(N, x.shape[1], dtype=x.dtype).index_add_(0, rows, vals[:, None] * z[cols])  # (N, F)
    return dv_is[:, None] * z


@dataclass
class HGNNConfig:
    in_dim: int
    out_dim: int
    hidden: int = 64
    n_layers: int = 2
    dropout: float = 0.5

    def __post_init__(self):
        for k in ("in_dim", "out_dim", "hidden", "n_layers"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"HGNNConfig.{k} must be a positive int, got {getattr(self, k)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"HGNNConfig.dropout must be in [0, 1), got {self.dropout!r}")


class HGNN(nn.Module):
    """``forward(x (N, F), H (N, E)) -> logits (N, C)``; ``embed`` gives the last hidden layer."""

    def __init__(self, cfg: HGNNConfig):
        super().__init__()
        self.cfg = cfg
        dims = [cfg.in_dim] + [cfg.hidden] * (cfg.n_layers - 1) + [cfg.out_dim]
        self.thetas = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.drop = nn.Dropout(cfg.dropout)

    def embed(self, x: torch.Tensor, H: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        for theta in self.thetas[:-1]:
            x = F.relu(hgnn_propagate(theta(self.drop(x)), H, edge_weight))  # (N, hidden)
        return x

    def forward(self, x: torch.Tensor, H: torch.Tensor, edge_weight: torch.Tensor | None = None) -> torch.Tensor:
        h = self.embed(x, H, edge_weight)
        return hgnn_propagate(self.thetas[-1](self.drop(h)), H, edge_weight)  # (N, C)


@torch.no_grad()
def predict(model: HGNN, hg) -> torch.Tensor:
    """Logits (N, C) for every node of a :class:`~models.data.hypergraph.Hypergraph`."""
    was = model.training
    model.eval()
    out = model(hg.x, hg.incidence(sparse=True))  # (N, C)
    model.train(was)
    return out


def accuracy(model: HGNN, hg, split: str = "test") -> float:
    """Accuracy on ``hg.splits[split]`` (the whole graph is propagated)."""
    idx = hg.splits[split]
    return float((predict(model, hg)[idx].argmax(-1) == hg.y[idx]).float().mean())


def train_hgnn(hg, epochs: int = 200, seed: int = 0, hidden: int = 64, lr: float = 0.01,
               weight_decay: float = 5e-4, dropout: float = 0.5, inductive: bool = False,
               threads: int | None = 1) -> HGNN:
    """Train an HGNN on ``hg.splits["train"]``, full batch, keeping the weights of the epoch
    with the best ``val`` accuracy. ``inductive=True`` trains on ``hg.without_inductive()`` (the
    held-out ``test_inductive`` nodes never seen); evaluate it on the full graph.

    ``threads`` sets torch's intra-op threads while training (restored after): these ops are
    tiny, and one thread is as fast on an idle machine and several times faster on a busy one
    (OpenMP threads spin-waiting for a core). ``None`` leaves the setting alone.

    Returns the model in eval mode; ``model.log`` holds the best epoch and its accuracies.
    """
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _train_hgnn(hg, epochs, seed, hidden, lr, weight_decay, dropout, inductive)
    finally:
        torch.set_num_threads(before)


def _train_hgnn(hg, epochs, seed, hidden, lr, weight_decay, dropout, inductive) -> HGNN:
    torch.manual_seed(seed)
    g = hg.without_inductive() if inductive else hg
    H = g.incidence(sparse=True)
    model = HGNN(HGNNConfig(in_dim=g.num_features, out_dim=g.num_classes, hidden=hidden, dropout=dropout))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    tr, va = g.splits["train"], g.splits["val"]
    best = (-1.0, 0, None)
    for epoch in range(epochs):
        model.train()
        loss = F.cross_entropy(model(g.x, H)[tr], g.y[tr])
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = float((model(g.x, H)[va].argmax(-1) == g.y[va]).float().mean())
        if val > best[0]:
            best = (val, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    model.eval()
    model.log = {"best_epoch": best[1], "val_acc": best[0], "epochs": epochs, "seed": seed,
                 "inductive": inductive, "graph": g.name}
    return model
