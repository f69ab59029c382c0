"""Function body -> function name, from the standard library, as byte-token tensors.

The seq2seq task: given the (start of the) body of a stdlib function, produce its
name. Pairs come from :func:`models.data.stdlib.function_pairs` with its deterministic hash
split (train 80% / val 10% / test 10%); bodies are cut to ``max_src`` UTF-8 bytes (the start of
the body), names longer than ``max_name`` bytes are dropped. Token ids are those of
:class:`models.data.tokenizer.ByteTokenizer` (bytes 0..255, pad 256, bos 257, eos 258, sep 259)
so a decoder-only model and an encoder-decoder share one vocabulary:

- encoder-decoder: ``src`` = body bytes (right-padded with pad), ``src_len``; decoder input
  ``tgt`` = ``bos name``; labels ``name eos`` (``-100`` on padding).
- decoder-only: ``bos body sep name eos``; labels only on ``name eos`` (the prediction made at
  ``sep`` and after it), ``-100`` elsewhere. With the defaults (200 + 40 bytes + 3 specials)
  a sequence fits the 256-token context of the shipped byte LM.

Scores: :func:`exact_match` and :func:`char_f1` (multiset overlap of characters, SQuAD-style
F1 at the character level), averaged over pairs.

>>> from edgesdk.models.data.funcname import funcname_pairs, encdec_batch
>>> pairs = funcname_pairs("test")[:4]          # [(body_ids, name_ids), ...]
>>> b = encdec_batch(pairs)                      # src, src_len, tgt, labels
>>> b["src"].shape[0], b["tgt"][0, 0].item()
(4, 257)
"""

from __future__ import annotations

import functools
from collections import Counter
from typing import Sequence

import torch

from edgesdk.models.data.stdlib import function_pairs
from edgesdk.models.data.tokenizer import ByteTokenizer

TOK = ByteTokenizer()
MAX_SRC = 200    # body bytes kept (the start of the body)
MAX_NAME = 40    # longest name kept, in bytes (stdlib names are <= 38)

Pair = tuple[tuple[int, ...], tuple[int, ...]]


@functools.lru_cache(maxsize=None)
def _pairs(split: str, max_src: int, max_name: int) -> tuple[Pair, ...]:
    out = []
    for body, name in function_pairs(split=split):
        n = name.encode("utf-8")
        if len(n) > max_name:
            continue
        out.append((tuple(body.encode("utf-8")[:max_src]), tuple(n)))
    return tuple(out)


def funcname_pairs(split: str, max_src: int = MAX_SRC, max_name: int = MAX_NAME) -> list[Pair]:
    """``(body_ids, name_ids)`` tuples of byte ids for ``split`` ("train", "val", "test")."""
    return list(_pairs(split, max_src, max_name))


def encdec_batch(pairs: Sequence[Pair], src_capacity: int | None = None,
                 tgt_capacity: int | None = None) -> dict[str, torch.Tensor]:
    """Encoder-decoder tensors: ``src`` (B, P) right-padded, ``src_len`` (B,), ``tgt`` (B, T) =
    ``bos name`` padded, ``labels`` (B, T) = ``name eos`` with -100 on padding. P and T default to
    the longest in the batch."""
    P = src_capacity or max(max(len(s) for s, _ in pairs), 1)
    T = tgt_capacity or max(len(n) for _, n in pairs) + 1
    B = len(pairs)
    src = torch.full((B, P), TOK.pad_id, dtype=torch.long)
    tgt = torch.full((B, T), TOK.pad_id, dtype=torch.long)
    labels = torch.full((B, T), -100, dtype=torch.long)
    src_len = torch.zeros(B, dtype=torch.long)
    for i, (s, n) in enumerate(pairs):
        s = s[:P]
        src[i, :len(s)] = torch.tensor(s, dtype=torch.long) if s else src[i, :0]
        src_len[i] = max(len(s), 1)  # an empty body still has one (pad) position to attend to
        t = [TOK.bos_id, *n][:T]
        y = [*n, TOK.eos_id][:T]
        tgt[i, :len(t)] = torch.tensor(t)
        labels[i, :len(y)] = torch.tensor(y)
    return {"src": src, "src_len": src_len, "tgt": tgt, "labels": labels}


def decoder_sequence(src: Sequence[int], name: Sequence[int] = ()) -> list[int]:
    """``bos src sep name`` (the prompt when ``name`` is empty)."""
    return [TOK.bos_id, *src, TOK.sep_id, *name]


def decoder_batch(pairs: Sequence[Pair]) -> dict[str, torch.Tensor]:
    """Decoder-only tensors: ``tokens`` (B, L) = ``bos body sep name`` (right-padded) and
    ``labels`` (B, L): ``name eos`` at the positions that predict them, -100 elsewhere."""
    seqs = [decoder_sequence(s, n) for s, n in pairs]
    L = max(len(q) for q in seqs)
    B = len(pairs)
    tokens = torch.full((B, L), TOK.pad_id, dtype=torch.long)
    labels = torch.full((B, L), -100, dtype=torch.long)
    for i, ((s, n), q) in enumerate(zip(pairs, seqs)):
        tokens[i, :len(q)] = torch.tensor(q)
        start = len(s) + 1                       # the sep position predicts name[0]
        y = [*n, TOK.eos_id]
        labels[i, start:start + len(y)] = torch.tensor(y)
    return {"tokens": tokens, "labels": labels}


def decode_name(ids: Sequence[int]) -> str:
    """Generated ids -> name text (stops at eos, drops other specials)."""
    return TOK.decode([int(i) for i in ids], stop_at_eos=True)


def exact_match(preds: Sequence[str], refs: Sequence[str]) -> float:
    return sum(p == r for p, r in zip(preds, refs)) / max(len(refs), 1)


def char_f1(preds: Sequence[str], refs: Sequence[str]) -> float:
    """Mean over pairs of the F1 of the character multisets (1.0 when both are empty)."""
    total = 0.0
    for p, r in zip(preds, refs):
        if not p and not r:
            total += 1.0
            continue
        common = sum((Counter(p) & Counter(r)).values())
        if common == 0:
            continue
        prec, rec = common / len(p), common / len(r)
        total += 2 * prec * rec / (prec + rec)
    return total / max(len(refs), 1)


def scores(preds: Sequence[str], refs: Sequence[str]) -> dict:
    return {"exact_match": exact_match(preds, refs), "char_f1": char_f1(preds, refs), "n": len(refs)}


def majority_name(split: str = "train") -> str:
    """The most frequent name of a split: the trivial baseline's answer to every body."""
    return bytes(Counter(n for _, n in funcname_pairs(split)).most_common(1)[0][0]).decode("utf-8")
