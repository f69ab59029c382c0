"""An encoder-decoder transformer student over the byte vocabulary.

"Return of the Encoder" (small seq2seq models at the edge): below ~1B parameters an
encoder-decoder that reads the prompt once with a bidirectional encoder and generates with a
shallow decoder beats a decoder-only model of the same size on first-token latency and decode
throughput. This module is that student:

- pre-norm blocks (LayerNorm without bias), rotary positions (RoPE, from a table buffer), optional
  grouped-query attention (``n_kv_heads`` < ``n_heads``), GELU MLPs, tied input/output
  embeddings; about 2/3 of the layers in the encoder (``n_enc_layers``);
- ``forward(src, src_len, tgt) -> logits`` — teacher-forced training (``tgt`` = ``bos name``);
- exported programs (:meth:`EncDec.edge_programs`), all with static shapes: one
  ``encode(src (1, P), src_len (1,)) -> cross_k_i, cross_v_i`` per prompt length class P
  (``cfg.prompt_lengths``), run once per prompt, and per class one ``decode_step(token (1, 1),
  pos (1,), self_k_i, self_v_i, cross_k_i, cross_v_i, src_len) -> logits (1, V), new_self_k_i,
  new_self_v_i`` whose cross inputs hold that class's P slots (``decode_step`` for one class, else
  ``decode_step_<P>``), run once per generated token (i over the decoder layers; keys are stored
  transposed, (H_kv, D_h, slots), values as (H_kv, slots, D_h): `models.generation`). The
  self-attention cache has a fixed capacity ``C = max_target``; the step attends to the
  positions before ``pos`` plus the fed token's own key/value and returns only those, which the
  runtime writes in place at slot ``pos`` (`models.generation`). The runtime runs the step of the
  class whose encode it ran, so a short prompt's steps attend over its own class's P slots, not
  the longest class's; ``src_len`` masks the padding.
- :meth:`EncDec.edge_generation` is the ``"generation"`` manifest entry `runtime.generate`
  follows (see its docstring): ``bos`` at position 0, then each generated token at the next.

>>> import torch
>>> from edgesdk.models.encdec import EncDec, EncDecConfig
>>> m = EncDec(EncDecConfig(d_model=64, n_layers=3, n_heads=4, n_kv_heads=2))
>>> src, src_len = torch.randint(0, 256, (2, 20)), torch.tensor([20, 11])
>>> tgt = torch.full((2, 5), 257)
>>> m(src, src_len, tgt).shape                          # (B, T, vocab)
torch.Size([2, 5, 260])
>>> m.generate(src[:1], src_len[:1], max_new_tokens=4).shape[0]
1
>>> sorted(m.edge_programs(prompt_lengths=[16, 32]))
['decode_step_16', 'decode_step_32', 'encode_16', 'encode_32']
>>> # import edgesdk; edgesdk.convert(m, None, "onnx-cpu", prompt_lengths=[64, 256])
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edgesdk.models.data.tokenizer import ByteTokenizer
from edgesdk.models.generation import (K_AXIS, V_AXIS, attention_kt, cache_layout, cached_attention, from_cache_layout,
                               length_classes, write_slot)
from edgesdk.models.registry import register_model

_TOK = ByteTokenizer()
# additive mask value. Finite in fp16 (max 65504: -1e9 became -inf on LiteRT's GPU in fp16 and
# the step's logits NaN); exp(NEG + s - max) is exactly 0 in fp32 and fp16 (underflow below ~-104),
# so softmax outputs are those of any larger magnitude; and at least the converters' MASK_RANGE
# (converters/calibration.py), so static int8 schemes still find the mask and keep it in float.
NEG = -3e4


@dataclass
class EncDecConfig:
    vocab_size: int = _TOK.vocab_size       # 260
    d_model: int = 128
    n_layers: int = 6                       # encoder + decoder
    n_enc_layers: int | None = None         # default: round(2/3 * n_layers), at least 1
    n_heads: int = 4
    n_kv_heads: int | None = None           # GQA; None = n_heads (plain multi-head attention)
    mlp_ratio: int = 4
    max_source: int = 2048                  # longest prompt (RoPE table length)
    max_target: int = 64                    # decoder positions = self-KV cache capacity (bos included)
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    bos_id: int = _TOK.bos_id
    eos_id: int = _TOK.eos_id
    pad_id: int = _TOK.pad_id
    prompt_lengths: tuple[int, ...] = (128,)  # export: one encode program per prompt capacity (<= max_source)

    def __post_init__(self):
        self.prompt_lengths = length_classes(self.prompt_lengths, "EncDecConfig.prompt_lengths")
        for k in ("vocab_size", "d_model", "n_layers", "n_heads", "mlp_ratio", "max_source", "max_target"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"EncDecConfig.{k} must be a positive int, got {v!r}")
        if self.n_layers < 2:
            raise ValueError(f"EncDecConfig.n_layers must be >= 2 (encoder + decoder), got {self.n_layers}")
        if self.n_enc_layers is None:
            self.n_enc_layers = min(max(1, round(2 * self.n_layers / 3)), self.n_layers - 1)
        if not isinstance(self.n_enc_layers, int) or not 1 <= self.n_enc_layers < self.n_layers:
            raise ValueError(f"EncDecConfig.n_enc_layers must be an int in [1, n_layers - 1] = "
                             f"[1, {self.n_layers - 1}], got {self.n_enc_layers!r}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if not isinstance(self.n_kv_heads, int) or self.n_kv_heads < 1 or self.n_heads % self.n_kv_heads:
            raise ValueError(f"EncDecConfig.n_kv_heads ({self.n_kv_heads!r}) must be a positive divisor of "
                             f"n_heads ({self.n_heads}), e.g. {self.n_heads} or 1")
        if self.d_model % self.n_heads:
            raise ValueError(f"EncDecConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads}); "
                             f"e.g. d_model={self.n_heads * (self.d_model // self.n_heads + 1)}")
        if (self.d_model // self.n_heads) % 2:
            raise ValueError(f"EncDecConfig: the head size d_model / n_heads = {self.d_model // self.n_heads} must "
                             f"be even for rotary positions; change d_model or n_heads")
        for k in ("bos_id", "eos_id", "pad_id"):
            if not 0 <= getattr(self, k) < self.vocab_size:
                raise ValueError(f"EncDecConfig.{k} = {getattr(self, k)} is outside the vocabulary "
                                 f"(0..{self.vocab_size - 1})")
        if not self.rope_base > 1 or not self.norm_eps > 0:
            raise ValueError(f"EncDecConfig: rope_base must be > 1 and norm_eps > 0, got {self.rope_base!r}, "
                             f"{self.norm_eps!r}")

    @property
    def n_dec_layers(self) -> int:
        return self.n_layers - self.n_enc_layers

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        d = asdict(self)
        d["prompt_lengths"] = list(self.prompt_lengths)
        return d


# ------------------------------------------------------------------------------------ layers

def norm(cfg: "EncDecConfig") -> nn.LayerNorm:
    """Pre-norm: LayerNorm without bias (XNNPACK delegates it whole; an RMSNorm written as
    mean/rsqrt left its mean to ExecuTorch's portable kernels and split the delegated graph)."""
    return nn.LayerNorm(cfg.d_model, eps=cfg.norm_eps, bias=False)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, swap: torch.Tensor) -> torch.Tensor:
    """Rotary positions on x (B, H, T, Dh): ``x * cos + (x @ swap) * sin`` where ``swap`` exchanges
    the two halves of a head and ``cos``/``sin`` are the full-width tables (``sin`` carries the
    sign: -sin on the first half) broadcasting to (B, H, T, Dh). The half swap is a constant
    matmul rather than a split + concat, so it stays inside the XNNPACK delegate.

    The swap runs on a (rows, Dh) view and is reshaped back before the multiply: written as
    ``x @ swap`` LiteRT's converter emits a rank-3 FULLY_CONNECTED output multiplied by the
    rank-4 table, and LiteRT's GPU delegate broadcasts that mixed-rank MUL wrongly (every head
    but the first came out wrong on the GPU, in fp32 too)."""
    return x * cos + (x.reshape(-1, x.shape[-1]) @ swap).reshape(x.shape) * sin


# Training runs attention through PyTorch's fused kernel (`attend(fused=True)`): a training step's
# forward + backward of the demo's student (16 bodies, one thread) took 0.88x the explicit product's
# (benchmarks/encdec_fused_attention.py --steps-only). Exports, generation and every eval-mode call
# keep the explicit graph below, which each target's converter was fitted to.
FUSED_TRAINING_ATTENTION = True


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """q (B, H, T, Dh), k/v (B, Hkv, S, Dh), bias (T, S) or (B, 1, T|1, S) -> (B, H, T, Dh).

    GQA without copying keys: the H / Hkv query heads that share a key/value head are stacked
    along the query axis, (B, Hkv, rep·T, Dh), so K and V are used as they are. ``fused``: the
    same attention through ``F.scaled_dot_product_attention`` (training; see above)."""
    if fused and FUSED_TRAINING_ATTENTION:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    B, H, T, Dh = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    rep = H // Hkv
    if bias.dim() == 2:
        bias = bias[None, None]                                           # (1, 1, T, S)
    if rep > 1 and bias.shape[-2] > 1:
        bias = bias.repeat(1, 1, rep, 1)                                  # rows follow the stacked queries
    q = q.reshape(B, Hkv, rep * T, Dh)
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(Dh)) + bias       # (B, Hkv, rep·T, S)
    return (torch.softmax(att, dim=-1) @ v).reshape(B, H, T, Dh)


class MLP(nn.Module):
    def __init__(self, cfg: EncDecConfig):
        super().__init__()
        self.up = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.down = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))


class _Attention(nn.Module):
    """Query, fused key/value (GQA: ``n_kv_heads``) and output projections, shared by both kinds."""

    def __init__(self, cfg: EncDecConfig):
        super().__init__()
        self.h, self.hkv, self.dh = cfg.n_heads, cfg.n_kv_heads, cfg.d_head
        self.q = nn.Linear(cfg.d_model, self.h * self.dh, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * self.hkv * self.dh, bias=False)
        self.o = nn.Linear(self.h * self.dh, cfg.d_model, bias=False)

    def split_kv(self, x):  # x (B, T, D) -> k, v (B, Hkv, T, Dh)
        # slice heads before the transpose, rank 4 throughout, so no slice of a transposed activation
        # reaches a matmul: the HTP cannot finalize such a graph (QNN_COMMON_ERROR_MEM_ALLOC), and
        # LiteRT's converter mis-ranks the batch matmul behind it ("tfl.batch_matmul ... expected 3
        # but got 4"). Same maths as splitting the transposed (B, 2·Hkv, T, Dh) projection.
        B, T, _ = x.shape
        kv = self.kv(x).view(B, T, 2 * self.hkv, self.dh)                      # (B, T, 2·Hkv, Dh)
        return kv[:, :, :self.hkv].transpose(1, 2), kv[:, :, self.hkv:].transpose(1, 2)

    def out(self, y):  # (B, H, T, Dh) -> (B, T, D)
        B, H, T, Dh = y.shape
        return self.o(y.transpose(1, 2).reshape(B, T, H * Dh))


class SelfAttention(_Attention):
    def qkv(self, x, rot):  # x (B, T, D) -> q (B, H, T, Dh), k/v (B, Hkv, T, Dh); rot = (cos, sin, swap)
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.dh).transpose(1, 2)
        k, v = self.split_kv(x)
        return rope(q, *rot), rope(k, *rot), v

    def forward(self, x, rot, bias):
        q, k, v = self.qkv(x, rot)
        return self.out(attend(q, k, v, bias, fused=self.training))


class CrossAttention(_Attention):
    def memory_kv(self, mem: torch.Tensor) -> torch.Tensor:  # (B, P, D) -> (2, B, Hkv, P, Dh)
        return torch.stack(self.split_kv(mem))

    def forward(self, x, k, v, bias):  # x (B, T, D); k/v (B, Hkv, P, Dh); bias (B, 1, 1, P)
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.dh).transpose(1, 2)
        return self.out(attend(q, k, v, bias, fused=self.training))

    def step(self, x, kt, v, bias):  # one token over K/V in the cached layout, kt (B·Hkv, Dh, P)
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.h, self.dh).transpose(1, 2)
        return self.out(attention_kt(q, kt, v, bias))


class EncoderLayer(nn.Module):
    def __init__(self, cfg: EncDecConfig):
        super().__init__()
        self.n1, self.n2 = norm(cfg), norm(cfg)
        self.attn, self.mlp = SelfAttention(cfg), MLP(cfg)

    def forward(self, x, rot, bias):  # (B, P, D) -> (B, P, D)
        x = x + self.attn(self.n1(x), rot, bias)
        return x + self.mlp(self.n2(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: EncDecConfig):
        super().__init__()
        self.n1, self.n2, self.n3 = norm(cfg), norm(cfg), norm(cfg)
        self.attn, self.cross, self.mlp = SelfAttention(cfg), CrossAttention(cfg), MLP(cfg)

    def forward(self, x, rot, self_bias, ck, cv, src_bias):  # teacher-forced: (B, T, D)
        x = x + self.attn(self.n1(x), rot, self_bias)
        x = x + self.cross(self.n2(x), ck, cv, src_bias)
        return x + self.mlp(self.n3(x))

    def step(self, x, rot, self_bias, kt, vc, ckt, cv, src_bias):
        """One token: x (B, 1, D); the self cache in its layout (`models.generation`: keys kt
        (B·Hkv, Dh, C), values vc (B·Hkv, C, Dh)) holding the positions before the token's (by
        ``self_bias``); the cross K/V likewise (ckt (B·Hkv, Dh, P), cv) -> x, and the token's own
        key (B·Hkv, Dh, 1) and value (B·Hkv, 1, Dh) to write."""
        q, k, v = self.attn.qkv(self.n1(x), rot)                  # k/v (B, Hkv, 1, Dh)
        x = x + self.attn.out(cached_attention(q, kt, vc, k, v, self_bias))
        x = x + self.cross.step(self.n2(x), ckt, cv, src_bias)
        return (x + self.mlp(self.n3(x)), *cache_layout(k, v))


# ------------------------------------------------------------------------------------ model

class EncDec(nn.Module):
    """Byte-level encoder-decoder: ``forward(src (B, P), src_len (B,), tgt (B, T)) -> (B, T, V)``."""

    def __init__(self, cfg: EncDecConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or EncDecConfig()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.enc = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_enc_layers))
        self.enc_norm = norm(cfg)
        self.dec = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_dec_layers))
        self.dec_norm = norm(cfg)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        n = max(cfg.max_source, cfg.max_target)
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, cfg.d_head, 2, dtype=torch.float64) / cfg.d_head))
        ang = torch.arange(n, dtype=torch.float64)[:, None] * inv[None, :]        # (n, Dh/2)
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1).float(), persistent=False)  # (n, Dh)
        self.register_buffer("sin", torch.cat([-ang.sin(), ang.sin()], -1).float(), persistent=False)
        h = cfg.d_head // 2
        swap = torch.zeros(cfg.d_head, cfg.d_head)                                # x @ swap = [x2, x1]
        swap[h:, :h] = torch.eye(h)
        swap[:h, h:] = torch.eye(h)
        self.register_buffer("swap", swap, persistent=False)
        causal = torch.full((cfg.max_target, cfg.max_target), NEG).triu(1)       # 0 on/below diagonal
        self.register_buffer("causal", causal, persistent=False)
        self.register_buffer("src_pos", torch.arange(cfg.max_source), persistent=False)
        self.register_buffer("tgt_pos", torch.arange(cfg.max_target), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # scale residual projections by depth (GPT-2)
            if name.endswith(("o.weight", "down.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    # ---------------------------------------------------------------- pieces
    def src_bias(self, src_len: torch.Tensor, P: int) -> torch.Tensor:
        """(B,) true lengths -> additive key mask (B, 1, 1, P): 0 on real tokens, NEG on padding."""
        n = torch.clamp(src_len, min=1)[:, None]                                  # (B, 1)
        keep = self.src_pos[:P][None, :] < n                                      # (B, P)
        return torch.where(keep, 0.0, NEG)[:, None, None, :]

    def encode(self, src: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:
        """src (B, P) ids, src_len (B,) -> memory (B, P, D) (bidirectional, padding masked)."""
        P = src.shape[1]
        bias = self.src_bias(src_len, P)
        rot = (self.cos[:P], self.sin[:P], self.swap)                            # (P, Dh) tables
        x = self.wte(src)
        for layer in self.enc:
            x = layer(x, rot, bias)
        return self.enc_norm(x)

    def cross_kv(self, mem: torch.Tensor) -> torch.Tensor:
        """memory (B, P, D) -> cross K/V of every decoder layer (2·L_dec, B, Hkv, P, Dh): rows 2i
        and 2i + 1 are layer i's keys and values (rank 5: Core ML takes no higher rank)."""
        return torch.cat([layer.cross.memory_kv(mem) for layer in self.dec])

    def decode(self, tgt: torch.Tensor, cross_kv: torch.Tensor, src_len: torch.Tensor) -> torch.Tensor:
        """Teacher-forced decoder: tgt (B, T) (``bos ...``) -> logits (B, T, V)."""
        T, P = tgt.shape[1], cross_kv.shape[-2]
        rot = (self.cos[:T], self.sin[:T], self.swap)
        self_bias = self.causal[:T, :T]
        src_bias = self.src_bias(src_len, P)
        x = self.wte(tgt)
        for i, layer in enumerate(self.dec):
            x = layer(x, rot, self_bias, cross_kv[2 * i], cross_kv[2 * i + 1], src_bias)
        return self.lm_head(self.dec_norm(x))

    def forward(self, src: torch.Tensor, src_len: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        if tgt.shape[1] > self.cfg.max_target:
            raise ValueError(f"target of {tgt.shape[1]} tokens is longer than max_target={self.cfg.max_target}")
        return self.decode(tgt, self.cross_kv(self.encode(src, src_len)), src_len)

    def empty_cache(self, batch: int = 1) -> torch.Tensor:
        """Zeros of the self-attention cache: (2·L_dec, B, Hkv, C, Dh), laid out as ``cross_kv``."""
        c = self.cfg
        return torch.zeros(2 * c.n_dec_layers, batch, c.n_kv_heads, c.max_target, c.d_head)

    def step(self, token: torch.Tensor, pos: torch.Tensor, self_kv: torch.Tensor, cross_kv: torch.Tensor,
             src_len: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One decoder token: token (B, 1), pos (B,) int64, the self cache (2·L_dec, B, Hkv, C, Dh)
        holding the positions before ``pos`` -> logits (B, V) and the token's keys/values
        (2·L_dec, B, Hkv, 1, Dh), to be written at slot ``pos`` (`models.generation.write_slot`)."""
        L, B = self.cfg.n_dec_layers, token.shape[0]

        def layout(kv):  # the exported cache layout (keys transposed)
            return [t for i in range(L) for t in cache_layout(kv[2 * i], kv[2 * i + 1])]
        logits, *new = self.step_layers(token, pos, layout(self_kv), layout(cross_kv), src_len)
        return logits, torch.stack([t for i in range(L) for t in from_cache_layout(new[2 * i], new[2 * i + 1], B)])

    def step_layers(self, token, pos, self_kv: list, cross_kv: list, src_len) -> tuple:
        """`step` over per-layer tensors (what ``decode_step`` exports): self_kv and cross_kv are
        lists [k_0, v_0, k_1, ...] in the cache layout (keys (B·Hkv, Dh, S), values (B·Hkv, S, Dh))
        -> (logits (B, V), new_k_0 (B·Hkv, Dh, 1), new_v_0 (B·Hkv, 1, Dh), ...)."""
        B, C, P = token.shape[0], self_kv[0].shape[-1], cross_kv[0].shape[-1]
        rot = (self.cos.index_select(0, pos).view(B, 1, 1, -1),                   # (B, 1, 1, Dh)
               self.sin.index_select(0, pos).view(B, 1, 1, -1), self.swap)
        seen = self.tgt_pos[:C][None, :] < pos[:, None]                           # (B, C): written slots
        self_bias = torch.where(seen, 0.0, NEG).view(B, 1, 1, C)
        src_bias = self.src_bias(src_len, P)
        x = self.wte(token)                                                       # (B, 1, D)
        new = []
        for i, layer in enumerate(self.dec):
            x, k, v = layer.step(x, rot, self_bias, self_kv[2 * i], self_kv[2 * i + 1],
                                 cross_kv[2 * i], cross_kv[2 * i + 1], src_bias)
            new += [k, v]
        return (self.lm_head(self.dec_norm(x))[:, 0], *new)                       # (B, V), 2L x (B, Hkv, 1, Dh)

    # ---------------------------------------------------------------- generation (PyTorch reference)
    @torch.no_grad()
    def generate(self, src: torch.Tensor, src_len: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, generator: torch.Generator | None = None,
                 stop_at_eos: bool = True) -> torch.Tensor:
        """Tokens after ``bos`` through the cached step (the exported programs' computation):
        greedy at temperature 0, else sampled (top-k). Returns (B, n) ids, n <= min(max_new_tokens,
        max_target); rows that ended are filled with ``eos`` after their first one; with
        ``stop_at_eos`` generation stops once every row has produced ``eos``."""
        B = src.shape[0]
        ckv = self.cross_kv(self.encode(src, src_len))
        cache = self.empty_cache(B).to(ckv.dtype)
        tok = torch.full((B, 1), self.cfg.bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(B, dtype=torch.bool, device=src.device)
        out = []
        for p in range(min(max_new_tokens, self.cfg.max_target)):
            pos = torch.full((B,), p, dtype=torch.long, device=src.device)
            logits, new = self.step(tok, pos, cache, ckv, src_len)
            write_slot(cache, new, p)                                             # in place, at slot p
            if temperature <= 0:
                nxt = logits.argmax(-1)
            else:
                z = logits / temperature
                if top_k:
                    kth = z.topk(min(top_k, z.shape[-1]), dim=-1).values[:, -1:]
                    z = z.masked_fill(z < kth, float("-inf"))
                nxt = torch.multinomial(torch.softmax(z, -1), 1, generator=generator)[:, 0]
            nxt = torch.where(done, torch.full_like(nxt, self.cfg.eos_id), nxt)
            out.append(nxt)
            done = done | (nxt == self.cfg.eos_id)
            tok = nxt[:, None]
            if stop_at_eos and bool(done.all()):
                break
        return torch.stack(out, 1) if out else torch.zeros(B, 0, dtype=torch.long)

    # ---------------------------------------------------------------- export protocol
    def edge_programs(self, prompt_lengths: list[int] | None = None) -> dict:
        """Per prompt length class P (default ``cfg.prompt_lengths``) one ``encode`` and one
        ``decode_step`` whose cross inputs hold P slots (named ``encode`` / ``decode_step`` for one
        class, else ``encode_<P>`` / ``decode_step_<P>``): prompts are right-padded to their class
        and masked by ``src_len``, and every step attends over its own class's cross K/V only."""
        c = self.cfg
        Ps = self._classes(prompt_lengths)
        g = torch.Generator().manual_seed(0)
        L2 = 2 * c.n_dec_layers

        def layout(kv):  # the cache layout (keys transposed)
            return tuple(t.contiguous().clone() for i in range(0, L2, 2) for t in cache_layout(kv[i], kv[i + 1]))
        programs = {}
        for P in Ps:
            src = torch.randint(0, 256, (1, P), generator=g)
            programs[self._name("encode", P, Ps)] = (EncodeProgram(self), (src, torch.tensor([max(1, (3 * P) // 4)])))
        for P in Ps:
            n = torch.tensor([max(1, (3 * P) // 4)])
            with torch.no_grad():
                ckv = self.cross_kv(self.encode(torch.randint(0, 256, (1, P), generator=g), n))
                cache = self.empty_cache(1)
                for p, t in enumerate((c.bos_id, 65)):                         # two tokens already cached
                    _, new = self.step(torch.tensor([[t]]), torch.tensor([p]), cache, ckv, n)
                    write_slot(cache, new, p)
            step_inputs = (torch.tensor([[66]]), torch.tensor([2])) + layout(cache) + layout(ckv) + (n.clone(),)
            programs[self._name("decode_step", P, Ps)] = (DecodeStepProgram(self), step_inputs)
        return programs

    @staticmethod
    def _name(program: str, P: int, Ps: tuple) -> str:
        return program if len(Ps) == 1 else f"{program}_{P}"

    def edge_generation(self, prompt_lengths: list[int] | None = None) -> dict:
        """The ``"generation"`` manifest entry (see `runtime.generate`): the self cache is written
        in place at slot ``pos``; each class's encode feeds the cross K/V of that class's step."""
        c = self.cfg
        Ps = self._classes(prompt_lengths)
        names = [f"{kv}_{i}" for i in range(c.n_dec_layers) for kv in ("k", "v")]
        def axis(n):  # the cache layout: keys (Hkv, Dh, slots), values (Hkv, slots, Dh)
            return K_AXIS if n.startswith("k") else V_AXIS
        state = ([{"input": f"self_{n}", "init": None, "update": f"new_self_{n}",
                   "write": {"index": "pos", "axis": axis(n)}} for n in names]
                 + [{"input": f"cross_{n}", "init": f"cross_{n}", "update": None,
                     "write": {"index": None, "axis": axis(n)}} for n in names]
                 + [{"input": "src_len", "init": "@prompt_length", "update": None}])
        return {
            "prefill": [self._name("encode", P, Ps) for P in Ps],
            "step": [self._name("decode_step", P, Ps) for P in Ps],
            "prompt": "src", "prompt_length": "src_len",
            "token": "token", "position": "pos", "logits": "logits",
            "prefill_logits": None, "start_token": c.bos_id, "state": state,
            "eos": c.eos_id, "pad": c.pad_id, "max_position": c.max_target, "tokenizer": "bytes",
        }

    def _classes(self, prompt_lengths) -> tuple[int, ...]:
        Ps = length_classes(self.cfg.prompt_lengths if prompt_lengths is None else prompt_lengths)
        if Ps[-1] > self.cfg.max_source:
            raise ValueError(f"prompt_lengths {list(Ps)}: a prompt capacity exceeds max_source={self.cfg.max_source} "
                             f"(the RoPE table); lower it or build the model with max_source >= {Ps[-1]}")
        return Ps


class EncodeProgram(nn.Module):
    """``encode(src (1, P), src_len (1,)) -> cross_k_i (Hkv, Dh, P), cross_v_i (Hkv, P, Dh)`` per
    decoder layer (the cache layout, keys transposed: `models.generation`)."""

    def __init__(self, model: EncDec):
        super().__init__()
        self.model = model
        self.output_names = tuple(f"cross_{kv}_{i}" for i in range(model.cfg.n_dec_layers) for kv in ("k", "v"))

    def forward(self, src: torch.Tensor, src_len: torch.Tensor) -> tuple:
        mem = self.model.encode(src, src_len)
        out = []
        for layer in self.model.dec:
            out += cache_layout(*layer.cross.split_kv(mem))
        return tuple(out)


class DecodeStepProgram(nn.Module):
    """``decode_step(token (1, 1), pos (1,), self_k_i, self_v_i..., cross_k_i, cross_v_i..., src_len)
    -> logits (1, V), new_self_k_i, new_self_v_i...`` (see `EncDec.step_layers`)."""

    def __init__(self, model: EncDec):
        super().__init__()
        self.model = model
        names = tuple(f"{kv}_{i}" for i in range(model.cfg.n_dec_layers) for kv in ("k", "v"))
        self.input_names = (("token", "pos") + tuple(f"self_{n}" for n in names) + tuple(f"cross_{n}" for n in names)
                            + ("src_len",))
        self.output_names = ("logits",) + tuple(f"new_self_{n}" for n in names)

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *caches_and_len: torch.Tensor) -> tuple:
        L2 = 2 * self.model.cfg.n_dec_layers
        return self.model.step_layers(token, pos, list(caches_and_len[:L2]), list(caches_and_len[L2:2 * L2]),
                                      caches_and_len[2 * L2])


@register_model("encdec")
def encdec(**cfg) -> EncDec:
    """An untrained encoder-decoder; see `models.distill.recipes.encdec` to distil one."""
    return EncDec(EncDecConfig(**cfg))
