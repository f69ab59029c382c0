"""Offline hypergraph datasets for hypergraph neural networks and their MLP students.

- :func:`digits_hypergraph` — scikit-learn's bundled handwritten digits (1797 nodes, 64
  features, 10 classes); each node and its ``k`` nearest neighbours form one hyperedge.
- :func:`synthetic_hypergraph` — a seeded contextual hypergraph (contextual stochastic block
  model style) whose homophily and feature noise are parameters.

Splits are deterministic by content hash: node ``i`` falls in the split that
``sha256(salt | i | float32 feature bytes)`` maps it to (see :func:`hash_splits`), so they are
the same on every machine and run. ``test_inductive`` (20% by default) is held out of the graph
entirely for inductive evaluation: :meth:`Hypergraph.without_inductive` gives the training graph
(the induced sub-hypergraph of the other nodes); the full hypergraph is the evaluation graph.

>>> hg = digits_hypergraph(k=10)
>>> hg.x.shape, hg.num_edges, sorted(hg.splits)
(torch.Size([1797, 64]), 1797, ['test', 'test_inductive', 'train', 'val'])
>>> train_graph = hg.without_inductive()    # nodes relabelled; train_graph.node_ids maps back
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

DEFAULT_SPLITS = {"train": 0.4, "val": 0.2, "test": 0.2, "test_inductive": 0.2}


@dataclass
class Hypergraph:
    """Node features, labels and hyperedges (each a 1-D tensor of node indices).

    ``x`` (N, F) float32, ``y`` (N,) int64, ``hyperedges`` list of E int64 tensors,
    ``splits`` name -> sorted int64 node indices, ``node_ids`` (N,) the nodes' indices in the
    graph this one was cut from (``arange(N)`` for a full graph).
    """

    x: Tensor
    y: Tensor
    hyperedges: list[Tensor]
    num_classes: int
    splits: dict[str, Tensor] = field(default_factory=dict)
    node_ids: Tensor | None = None
    name: str = "hypergraph"

    def __post_init__(self):
        if self.x.dim() != 2 or self.y.shape != (self.x.shape[0],):
            raise ValueError(f"x must be (N, F) and y (N,), got {tuple(self.x.shape)} and {tuple(self.y.shape)}")
        n = self.num_nodes
        for e in self.hyperedges:
            if e.numel() and (int(e.min()) < 0 or int(e.max()) >= n):
                raise ValueError(f"hyperedge {e.tolist()} has node ids outside 0..{n - 1}")
        if self.node_ids is None:
            self.node_ids = torch.arange(n)

    @property
    def num_nodes(self) -> int:
        return self.x.shape[0]

    @property
    def num_edges(self) -> int:
        return len(self.hyperedges)

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    @property
    def edges(self) -> list[Tensor]:
        """The hyperedges as a list of node-index tensors (same as ``hyperedges``)."""
        return self.hyperedges

    def incidence(self, sparse: bool = False) -> Tensor:
        """The (N, E) incidence matrix H (float32; ``H[v, e] = 1`` when node v is in edge e),
        dense or sparse COO."""
        rows = torch.cat([e for e in self.hyperedges]) if self.hyperedges else torch.zeros(0, dtype=torch.long)
        cols = torch.cat([torch.full((e.numel(),), j, dtype=torch.long) for j, e in enumerate(self.hyperedges)]) \
            if self.hyperedges else torch.zeros(0, dtype=torch.long)
        vals = torch.ones(rows.numel(), dtype=torch.float32)
        h = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (self.num_nodes, self.num_edges),
                                    check_invariants=True).coalesce()
        if sparse:
            return torch.sparse_coo_tensor(h.indices(), torch.ones_like(h.values()), h.shape, check_invariants=True,
                                           is_coalesced=True)
        return (h.to_dense() > 0).float()

    def node_degrees(self) -> Tensor:
        """How many hyperedges each node is in: (N,) int64."""
        deg = torch.zeros(self.num_nodes, dtype=torch.long)
        for e in self.hyperedges:
            deg[e.unique()] += 1
        return deg

    def induced(self, keep: Tensor) -> "Hypergraph":
        """The sub-hypergraph on nodes ``keep`` (indices or bool mask): nodes relabelled
        0..len(keep)-1 in ascending order, each hyperedge cut to its kept members (edges left
        with no member are dropped), splits remapped, ``node_ids`` pointing back to the
        original graph."""
        keep = torch.as_tensor(keep)
        if keep.dtype == torch.bool:
            keep = keep.nonzero().flatten()
        keep = keep.long().unique(sorted=True)
        new_id = torch.full((self.num_nodes,), -1, dtype=torch.long)
        new_id[keep] = torch.arange(keep.numel())
        edges = []
        for e in self.hyperedges:
            m = new_id[e]
            m = m[m >= 0]
            if m.numel():
                edges.append(m)
        splits = {}
        for k, idx in self.splits.items():
            m = new_id[idx]
            splits[k] = m[m >= 0]
        return replace(self, x=self.x[keep], y=self.y[keep], hyperedges=edges, splits=splits,
                       node_ids=self.node_ids[keep])

    def without(self, nodes: Tensor) -> "Hypergraph":
        """The induced sub-hypergraph with ``nodes`` removed."""
        mask = torch.ones(self.num_nodes, dtype=torch.bool)
        mask[torch.as_tensor(nodes, dtype=torch.long)] = False
        return self.induced(mask)

    def without_inductive(self) -> "Hypergraph":
        """The training graph for inductive evaluation: ``test_inductive`` nodes removed."""
        if "test_inductive" not in self.splits:
            raise KeyError("this hypergraph has no 'test_inductive' split; build it with one")
        return self.without(self.splits["test_inductive"])

    def edge_homophily(self) -> float:
        """Mean over hyperedges (≥ 2 members) of the fraction of members in the edge's
        majority class: 1 for pure edges, about 1/num_classes for random ones."""
        fr = []
        for e in self.hyperedges:
            if e.numel() >= 2:
                fr.append(torch.bincount(self.y[e], minlength=self.num_classes).max().item() / e.numel())
        return float(np.mean(fr)) if fr else float("nan")

    def summary(self) -> dict:
        sizes = [e.numel() for e in self.hyperedges]
        return {"name": self.name, "nodes": self.num_nodes, "edges": self.num_edges,
                "features": self.num_features, "classes": self.num_classes,
                "edge_size_mean": float(np.mean(sizes)) if sizes else 0.0,
                "edge_homophily": self.edge_homophily(),
                "splits": {k: int(v.numel()) for k, v in self.splits.items()}}


def hash_splits(x: Tensor, fractions: dict[str, float] | None = None, salt: str = "") -> dict[str, Tensor]:
    """Assign each node to a split by ``sha256(salt | index | float32 little-endian feature
    bytes)`` mapped to [0, 1) and cut at the cumulative ``fractions`` (in their order).

    Depends only on each node's own content, so it is the same across runs and machines.
    Fractions are expected values: counts vary by a few nodes around them.
    """
    fractions = dict(fractions or DEFAULT_SPLITS)
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"fractions must be non-negative and sum to > 0, got {fractions!r}")
    feats = x.detach().cpu().numpy().astype("<f4")
    bounds = np.cumsum(list(fractions.values())) / total
    u = np.empty(len(feats))
    for i, row in enumerate(feats):
        d = hashlib.sha256(f"{salt}|{i}|".encode() + row.tobytes()).digest()
        u[i] = int.from_bytes(d[:8], "big") / 2.0**64
    which = np.minimum(np.searchsorted(bounds, u, side="right"), len(bounds) - 1)
    return {name: torch.from_numpy(np.nonzero(which == j)[0]).long() for j, name in enumerate(fractions)}


def _knn_edges(x: np.ndarray, k: int) -> list[Tensor]:
    from sklearn.neighbors import NearestNeighbors

    nn_ = NearestNeighbors(n_neighbors=k + 1).fit(x)
    _, idx = nn_.kneighbors(x)  # (N, k+1); ties broken by sklearn deterministically
    edges = []
    for i, row in enumerate(idx):
        members = [i] + [int(j) for j in row if j != i][:k]  # the centre node first, always in
        edges.append(torch.tensor(members, dtype=torch.long))
    return edges


def digits_hypergraph(k: int = 10, seed: int = 0, fractions: dict[str, float] | None = None) -> Hypergraph:
    """scikit-learn's digits as a k-NN hypergraph: 1797 nodes (8×8 images, features scaled to
    [0, 1]), 10 classes, one hyperedge per node made of the node and its ``k`` nearest
    neighbours (Euclidean) — so every node is in at least one hyperedge.

    ``seed`` salts the split hash (the graph itself has no randomness): seed 0 is the
    reference split; other seeds give other, equally deterministic, splits.
    """
    from sklearn.datasets import load_digits

    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    xt = torch.from_numpy(x)
    return Hypergraph(x=xt, y=torch.from_numpy(d.target).long(), hyperedges=_knn_edges(x, k),
                      num_classes=10, splits=hash_splits(xt, fractions, salt=f"digits:{seed}"),
                      name=f"digits-knn{k}")


def synthetic_hypergraph(n_nodes: int = 1000, n_classes: int = 5, n_features: int = 32,
                         homophily: float = 0.8, noise: float = 1.0,
                         edge_size: tuple[int, int] = (3, 8), n_edges: int | None = None,
                         seed: int = 0, fractions: dict[str, float] | None = None) -> Hypergraph:
    """A seeded contextual hypergraph.

    Labels are balanced over ``n_classes``; class means are N(0, 1) vectors; features are the
    class mean plus ``noise``·N(0, 1). Each of ``n_edges`` hyperedges (default ``n_nodes``) has a
    size drawn uniformly from ``edge_size`` (inclusive) and a class drawn uniformly; each member
    comes from that class with probability ``homophily``, else from all nodes. Nodes left in
    no hyperedge are then added to one random edge of their own class, so every node has
    degree ≥ 1 (this nudges measured homophily up a little). Uses numpy's PCG64 generator.
    """
    if not 0.0 <= homophily <= 1.0:
        raise ValueError(f"homophily must be in [0, 1], got {homophily}")
    lo, hi = edge_size
    if not 1 <= lo <= hi <= n_nodes:
        raise ValueError(f"edge_size must be (lo, hi) with 1 <= lo <= hi <= n_nodes, got {edge_size}")
    if n_classes < 2 or n_nodes < n_classes:
        raise ValueError(f"need n_classes >= 2 and n_nodes >= n_classes, got {n_classes}, {n_nodes}")
    rng = np.random.default_rng(seed)
    n_edges = n_nodes if n_edges is None else n_edges
    y = rng.permutation(np.arange(n_nodes) % n_classes)
    means = rng.standard_normal((n_classes, n_features))
    x = (means[y] + noise * rng.standard_normal((n_nodes, n_features))).astype(np.float32)
    by_class = [np.nonzero(y == c)[0] for c in range(n_classes)]
    edges: list[list[int]] = []
    for _ in range(n_edges):
        size, c = int(rng.integers(lo, hi + 1)), int(rng.integers(n_classes))
        members: list[int] = []
        seen: set[int] = set()
        tries = 0
        while len(members) < size and tries < 20 * size:
            tries += 1
            pool = by_class[c] if rng.random() < homophily else None
            v = int(rng.choice(pool)) if pool is not None else int(rng.integers(n_nodes))
            if v not in seen:
                seen.add(v)
                members.append(v)
        edges.append(members)
    covered = np.zeros(n_nodes, dtype=bool)
    for e in edges:
        covered[e] = True
    edge_class = [int(np.bincount(y[e], minlength=n_classes).argmax()) for e in edges]
    same_class = [[j for j, c in enumerate(edge_class) if c == k] for k in range(n_classes)]
    for v in np.nonzero(~covered)[0]:
        cands = same_class[y[v]] or list(range(len(edges)))
        edges[cands[int(rng.integers(len(cands)))]].append(int(v))
    xt = torch.from_numpy(x)
    return Hypergraph(x=xt, y=torch.from_numpy(y).long(),
                      hyperedges=[torch.tensor(e, dtype=torch.long) for e in edges],
                      num_classes=n_classes, splits=hash_splits(xt, fractions, salt=f"synthetic:{seed}"),
                      name=f"synthetic-h{homophily:g}-n{noise:g}-s{seed}")
