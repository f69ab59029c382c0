"""MLP students (the simplest family).

`MLP` maps features to logits: Linear -> norm -> GELU -> dropout, repeated, then a head.
It exports cleanly to every target (no data-dependent control flow). Registered as ``mlp``,
with the named variants ``mlp-small`` (one hidden layer of 128, LightHGNN's student) and
``mlp-wide``.

`TokenBagEncoder` (``tokenbag``, ``tokenbag-small``) is a model2vec-like sentence encoder: hashed
words, word bigrams and character trigrams (`TokenBagTokenizer`, pure Python) -> embedding table
-> masked mean -> linear + residual MLP -> L2-normalised vector; distilled from MiniLM by the
``tokenbag`` recipe in `models.distill.recipes`.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import torch
from torch import nn

from edgesdk.models.registry import register_model


@dataclass
class MLPConfig:
    in_dim: int = 64
    hidden: int = 256
    depth: int = 2
    out_dim: int = 10
    dropout: float = 0.0
    norm: bool = True

    def __post_init__(self):
        for k in ("in_dim", "hidden", "depth", "out_dim"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"MLPConfig.{k} must be a positive int, got {getattr(self, k)!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"MLPConfig.dropout must be in [0, 1), got {self.dropout!r}")


class MLP(nn.Module):
    def __init__(self, cfg: MLPConfig):
        super().__init__()
        self.cfg = cfg
        layers, d = [], cfg.in_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(d, cfg.hidden), nn.LayerNorm(cfg.hidden) if cfg.norm else nn.Identity(),
                       nn.GELU(), nn.Dropout(cfg.dropout)]
            d = cfg.hidden
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(d, cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, in_dim) -> (B, out_dim)
        return self.head(self.body(x))

    def example_inputs(self, batch: int = 1) -> tuple[torch.Tensor]:
        return (torch.randn(batch, self.cfg.in_dim),)


@register_model("mlp")
def mlp(**cfg) -> MLP:
    return MLP(MLPConfig(**cfg))


# ------------------------------------------------------------------------------ named MLP variants

@register_model("mlp-small")
def mlp_small(**cfg) -> MLP:
    """LightHGNN's student: one hidden layer of 128, dropout 0.5, no LayerNorm (as the reference
    student, and LayerNorm is not delegated to XNNPACK: 2.8x slower there on 1797 nodes),
    ``MLP(hidden=128, depth=1, dropout=0.5, norm=False)``."""
    return MLP(MLPConfig(**{"hidden": 128, "depth": 1, "dropout": 0.5, "norm": False, **cfg}))


@register_model("mlp-wide")
def mlp_wide(**cfg) -> MLP:
    """Two hidden layers of 512 with dropout 0.1: ``MLP(hidden=512, depth=2, dropout=0.1)``."""
    return MLP(MLPConfig(**{"hidden": 512, "depth": 2, "dropout": 0.1, **cfg}))


# ------------------------------------------------------------------------------ token-bag sentence encoder

_WORD_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")


@dataclass
class TokenBagConfig:
    """A model2vec-like static sentence encoder: hashed tokens -> embedding table -> masked mean
    -> (linear + residual MLP) -> L2-normalised ``out_dim`` vector.

    Tokens (see `TokenBagTokenizer`): lower-cased words (letter runs split at camelCase, digit
    runs; ``snake_case`` and ``camelCase`` identifiers split), word bigrams (``word_bigrams``) and
    character n-grams of ``<word>`` (``char_ngram``; 0 disables), hashed into ``buckets`` rows
    with a stable hash (crc32) — words into the first ``word_share`` of the rows, the other
    tokens into the rest — at most ``max_tokens`` per text (words first, then bigrams, then
    n-grams)."""

    buckets: int = 2 ** 15
    max_tokens: int = 128
    emb_dim: int = 256
    hidden: int = 512
    depth: int = 1            # hidden layers of the residual MLP; 0 = linear projection only
    out_dim: int = 384
    char_ngram: int = 3
    word_bigrams: bool = True
    normalize: bool = True
    word_share: float = 0.5   # fraction of the buckets reserved for whole words

    @property
    def word_buckets(self) -> int:
        if not (self.char_ngram or self.word_bigrams):
            return self.buckets
        return max(1, min(self.buckets - 1, int(self.buckets * self.word_share)))

    def __post_init__(self):
        if not 0.0 < self.word_share <= 1.0:
            raise ValueError(f"TokenBagConfig.word_share must be in (0, 1], got {self.word_share!r}")
        for k in ("buckets", "max_tokens", "emb_dim", "hidden", "out_dim"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"TokenBagConfig.{k} must be a positive int, got {getattr(self, k)!r}")
        for k in ("depth", "char_ngram"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 0:
                raise ValueError(f"TokenBagConfig.{k} must be a non-negative int, got {getattr(self, k)!r}")


class TokenBagTokenizer:
    """Text -> hashed token ids (pure Python, deterministic across processes and machines).

    >>> tok = TokenBagTokenizer(TokenBagConfig(max_tokens=16))
    >>> ids, mask = tok.encode(["Parse a config file"])
    >>> ids.shape, ids.dtype, mask.dtype
    (torch.Size([1, 16]), torch.int64, torch.bool)
    """

    def __init__(self, cfg: TokenBagConfig):
        self.cfg = cfg

    def word_spans(self, text: str) -> list[tuple[int, int, str]]:
        """``(start, end, word)`` of every word: ASCII letter runs split at camelCase and
        acronym boundaries (``HTTPServer`` -> http, server; ``snake_case`` -> snake, case) and
        digit runs, lower-cased."""
        return [(m.start(), m.end(), m.group().lower()) for m in _WORD_RE.finditer(text)]

    def words(self, text: str) -> list[str]:
        return [w for _, _, w in self.word_spans(text)]

    def tokens_with_sources(self, text: str) -> list[tuple[str, tuple[int, ...]]]:
        """Every token with the indices of the words it comes from, in priority order (words,
        then bigrams, then n-grams), before truncation to ``max_tokens``."""
        ws = self.words(text)
        out = [(f"w:{w}", (i,)) for i, w in enumerate(ws)]
        if self.cfg.word_bigrams:
            out += [(f"b:{a} {b}", (i, i + 1)) for i, (a, b) in enumerate(zip(ws, ws[1:]))]
        n = self.cfg.char_ngram
        if n:
            for i, w in enumerate(ws):
                s = f"<{w}>"
                if len(w) > 1:
                    out += [(f"c:{s[j:j + n]}", (i,)) for j in range(max(1, len(s) - n + 1))]
        return out

    def tokens(self, text: str) -> list[str]:
        """The token strings of ``text`` in priority order, before truncation to ``max_tokens``."""
        return [t for t, _ in self.tokens_with_sources(text)]

    def bucket(self, token: str) -> int:
        """Words hash into rows [0, word_buckets), bigrams and n-grams into the rest, so that
        sub-word tokens never share a row with a word."""
        h = zlib.crc32(token.encode("utf-8"))
        wb = self.cfg.word_buckets
        if token.startswith("w:") or wb == self.cfg.buckets:
            return h % wb
        return wb + h % (self.cfg.buckets - wb)

    def ids(self, text: str) -> list[int]:
        return [self.bucket(t) for t in self.tokens(text)[:self.cfg.max_tokens]]

    def encode(self, texts) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, max_tokens) int64 (0 where padded) and mask (B, max_tokens) bool."""
        if isinstance(texts, str):
            texts = [texts]
        T = self.cfg.max_tokens
        ids = torch.zeros(len(texts), T, dtype=torch.long)
        mask = torch.zeros(len(texts), T, dtype=torch.bool)
        for i, text in enumerate(texts):
            row = self.ids(text)
            if row:
                ids[i, :len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, :len(row)] = True
        return ids, mask


class TokenBagEncoder(nn.Module):
    """``forward(ids (B, T) int64, mask (B, T) bool) -> (B, out_dim)`` sentence embeddings.

    Export-clean: an ``Embedding`` lookup, a masked mean (empty rows give the zero vector before
    the head), a linear projection plus a residual GELU MLP whose last layer starts at zero, and
    L2 normalisation written as ``y * rsqrt(max(|y|², eps))``. With ``emb_dim == out_dim`` the
    projection starts as the identity, so a fresh encoder (random embeddings, no training) is
    the normalised mean of random token vectors — a lexical-overlap baseline.

    >>> enc = TokenBagEncoder(TokenBagConfig(buckets=1024, emb_dim=32, hidden=64, out_dim=32))
    >>> enc.encode_texts(["read a file", "write a file"]).shape
    torch.Size([2, 32])
    """

    def __init__(self, cfg: TokenBagConfig):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = TokenBagTokenizer(cfg)
        self.embed = nn.Embedding(cfg.buckets, cfg.emb_dim)
        nn.init.normal_(self.embed.weight, std=cfg.emb_dim ** -0.5)
        self.proj = nn.Linear(cfg.emb_dim, cfg.out_dim)
        if cfg.emb_dim == cfg.out_dim:
            with torch.no_grad():
                self.proj.weight.copy_(torch.eye(cfg.out_dim))
                self.proj.bias.zero_()
        layers, d = [], cfg.emb_dim
        for _ in range(cfg.depth):
            layers += [nn.Linear(d, cfg.hidden), nn.GELU()]
            d = cfg.hidden
        last = nn.Linear(d, cfg.out_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.mlp = nn.Sequential(*layers, last) if cfg.depth else None

    def pool(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # -> (B, emb_dim)
        m = mask.to(self.embed.weight.dtype).unsqueeze(-1)                    # (B, T, 1)
        total = (self.embed(ids) * m).sum(1)                                   # (B, E)
        return total / m.sum(1).clamp(min=1.0)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.pool(ids, mask)                                               # (B, E)
        y = self.proj(h)                                                       # (B, D)
        if self.mlp is not None:
            y = y + self.mlp(h)
        if self.cfg.normalize:
            y = y * torch.rsqrt((y * y).sum(-1, keepdim=True).clamp(min=1e-12))
        return y

    def example_inputs(self, batch: int = 1, texts=None) -> tuple[torch.Tensor, torch.Tensor]:
        texts = texts or ["Return the size of the current chunk."] * batch
        return self.tokenizer.encode(list(texts)[:batch])

    @torch.no_grad()
    def encode_texts(self, texts, batch_size: int = 256) -> torch.Tensor:
        """Embed texts (eval mode, no grad): (N, out_dim)."""
        was = self.training
        self.eval()
        outs = [self(*self.tokenizer.encode(list(texts[i:i + batch_size]))) for i in range(0, len(texts), batch_size)]
        self.train(was)
        return torch.cat(outs) if outs else torch.zeros(0, self.cfg.out_dim)


@register_model("tokenbag")
def tokenbag(**cfg) -> TokenBagEncoder:
    """Token-bag sentence encoder: 32768 buckets x 256, 128 tokens, linear + residual MLP (512) to 384-d."""
    return TokenBagEncoder(TokenBagConfig(**cfg))


@register_model("tokenbag-small")
def tokenbag_small(**cfg) -> TokenBagEncoder:
    """Smaller token bag: 8192 buckets x 128, linear head to 384 (no hidden layer), 64 tokens."""
    return TokenBagEncoder(TokenBagConfig(**{"buckets": 2 ** 13, "emb_dim": 128, "depth": 0, "max_tokens": 64,
                                             **cfg}))
