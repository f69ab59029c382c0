"""Multi-query associative recall (MQAR, Zoology: Arora et al., 2023) rendered as bytes.

A sample binds ``n_pairs`` distinct keys to values, then asks for ``n_queries`` of them again
(random order, each key at most once); the model must recall each value from context. Attention
looks the binding up directly; a fixed-size recurrent state has to have stored it, so accuracy
drops as the number of pairs grows — the probe shows where a Mamba student loses to its teacher.

Bytes, so any byte-level LM (the stdlib-trained teacher and its students) reads it zero-shot as
code-like lines::

    qd=4\\nbe=7\\nzk=1\\n ... \\nbe=7\\nqd=4\\n          (pairs, then queries)

``labels`` are next-token targets aligned with ``tokens``: ``labels[t]`` is the value byte that
follows position ``t`` when ``t + 1`` is a queried value, −100 elsewhere — so
``logits[:, t].argmax() == labels[:, t]`` at the labelled positions is the recall accuracy.

>>> from edgesdk.models.data.mqar import mqar
>>> d = mqar(64, n_pairs=8, seed=0)
>>> d.tokens.shape, int((d.labels >= 0).sum(1)[0])        # (N, T), queries per sample
(torch.Size([64, 80]), 8)
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass

import torch

IGNORE = -100


@dataclass
class MQAR:
    tokens: torch.Tensor   # (N, T) int64 byte ids
    labels: torch.Tensor   # (N, T) int64: the value byte to predict after position t, else -100
    n_pairs: int
    n_queries: int

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def text(self) -> list[str]:
        return [bytes(row.tolist()).decode("ascii") for row in self.tokens]


def mqar(n: int, n_pairs: int = 8, n_queries: int | None = None, *, key_len: int = 2, seed: int = 0,
         key_alphabet: str = string.ascii_lowercase, value_alphabet: str = string.digits,
         sep: str = "=", end: str = "\n") -> MQAR:
    """``n`` samples of ``n_pairs`` key=value lines followed by ``n_queries`` (default all)
    queried lines. Keys are ``key_len`` characters of ``key_alphabet``, distinct within a sample;
    values one character of ``value_alphabet`` (chance accuracy 1/len(value_alphabet)).
    Deterministic in ``seed``."""
    n_queries = n_pairs if n_queries is None else n_queries
    if n < 1 or n_pairs < 1 or key_len < 1:
        raise ValueError(f"mqar needs n >= 1, n_pairs >= 1 and key_len >= 1, got {n}, {n_pairs}, {key_len}")
    if not 1 <= n_queries <= n_pairs:
        raise ValueError(f"n_queries must be in 1..n_pairs ({n_pairs}), got {n_queries}")
    if len(key_alphabet) ** key_len < n_pairs:
        raise ValueError(f"{len(key_alphabet)}^{key_len} possible keys < n_pairs={n_pairs}; raise key_len")
    if len(set(value_alphabet)) != len(value_alphabet) or not value_alphabet:
        raise ValueError("value_alphabet must be non-empty with distinct characters")
    for s in (key_alphabet, value_alphabet, sep, end):
        if not s.isascii():
            raise ValueError("mqar renders ASCII only (one byte per character)")
    if set(key_alphabet) & (set(value_alphabet) | set(sep + end)) or set(value_alphabet) & set(sep + end):
        raise ValueError("key_alphabet, value_alphabet, sep and end must not share characters")
    rng = random.Random(seed)
    line = key_len + len(sep) + 1 + len(end)
    T = (n_pairs + n_queries) * line
    tokens = torch.empty(n, T, dtype=torch.long)
    labels = torch.full((n, T), IGNORE, dtype=torch.long)
    for i in range(n):
        keys: set[str] = set()
        while len(keys) < n_pairs:
            keys.add("".join(rng.choice(key_alphabet) for _ in range(key_len)))
        keys_l = sorted(keys)
        rng.shuffle(keys_l)
        vals = {k: rng.choice(value_alphabet) for k in keys_l}
        queried = rng.sample(keys_l, n_queries)
        text = "".join(f"{k}{sep}{vals[k]}{end}" for k in keys_l)
        pos = len(text)
        for k in queried:
            v_at = pos + key_len + len(sep)              # index of the value byte
            labels[i, v_at - 1] = ord(vals[k])
            text += f"{k}{sep}{vals[k]}{end}"
            pos += line
        tokens[i] = torch.tensor(list(text.encode("ascii")))
    return MQAR(tokens, labels, n_pairs, n_queries)


@torch.no_grad()
def mqar_accuracy(model, data: MQAR, batch_size: int = 64) -> float:
    """Fraction of queried values a causal LM ``model(tokens) -> logits (B, T, V)`` predicts
    (argmax) at the labelled positions."""
    was = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    hit = tot = 0
    for i in range(0, len(data), batch_size):
        x, y = data.tokens[i:i + batch_size], data.labels[i:i + batch_size]
        pred = model(x).argmax(-1)
        m = y != IGNORE
        hit += int((pred[m] == y[m]).sum())
        tot += int(m.sum())
    if was and hasattr(model, "train"):
        model.train()
    return hit / max(tot, 1)
