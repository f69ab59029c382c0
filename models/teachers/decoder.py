"""A small decoder-only transformer (nanoGPT-style) over the byte vocabulary.

Pre-norm causal blocks, learned positions, tied input/output embeddings, vocabulary from
:class:`models.data.tokenizer.ByteTokenizer` (256 bytes + 4 specials). Written export-clean: no
data-dependent control flow, the causal mask is a buffer sliced by the (static) sequence
length. The teacher shipped in the repo is trained by ``python -m models.teachers.train_decoder``
and loaded with ``load_teacher("decoder")``.

>>> from models.teachers.decoder import Decoder, DecoderConfig
>>> m = Decoder(DecoderConfig(n_layers=2, d_model=64))
>>> tokens = torch.randint(0, 256, (2, 16))
>>> m(tokens).shape                                   # (B, T, vocab)
torch.Size([2, 16, 260])
>>> logits, attn = m(tokens, return_attn=True)        # attn: n_layers x (B, H, T, T)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from models.data.tokenizer import ByteTokenizer
from models.registry import register_model


@dataclass
class DecoderConfig:
    vocab_size: int = ByteTokenizer().vocab_size  # 260
    context: int = 256          # longest sequence (learned positions)
    d_model: int = 128
    n_layers: int = 4
    n_heads: int = 4
    mlp_ratio: int = 4
    dropout: float = 0.0
    bias: bool = True

    def __post_init__(self):
        for k in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "mlp_ratio"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DecoderConfig.{k} must be a positive int, got {v!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"DecoderConfig.d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads}); e.g. d_model={self.n_heads * (self.d_model // self.n_heads + 1)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DecoderConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_model // cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=cfg.bias)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)
        mask = torch.full((cfg.context, cfg.context), float("-inf")).triu(1)  # 0 on/below diagonal
        self.register_buffer("mask", mask, persistent=False)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) -> q, k, v, each (B, H, T, Dh)."""
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)                                # 3 x (B, T, C)
        return tuple(t.view(B, T, self.n_heads, self.d_head).transpose(1, 2) for t in (q, k, v))

    def attend(self, q, k, v, mask: torch.Tensor, return_attn: bool = False):
        """q (B, H, Tq, Dh) over k, v (B, H, Tk, Dh) with an additive mask -> (B, Tq, C)."""
        B, _, Tq, _ = q.shape
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(self.d_head))    # (B, H, Tq, Tk)
        att = torch.softmax(att + mask, dim=-1)
        y = self.drop(att) @ v                                               # (B, H, Tq, Dh)
        y = self.proj(y.transpose(1, 2).reshape(B, Tq, self.n_heads * self.d_head))
        return (y, att) if return_attn else y

    def forward(self, x: torch.Tensor, return_attn: bool = False):
        T = x.shape[1]
        q, k, v = self.heads(x)
        return self.attend(q, k, v, self.mask[:T, :T], return_attn)


class Block(nn.Module):
    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(cfg.d_model, bias=cfg.bias), nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        hidden = cfg.mlp_ratio * cfg.d_model
        self.mlp = nn.Sequential(nn.Linear(cfg.d_model, hidden, bias=cfg.bias), nn.GELU(),
                                 nn.Linear(hidden, cfg.d_model, bias=cfg.bias), nn.Dropout(cfg.dropout))

    def forward(self, x: torch.Tensor, return_attn: bool = False):  # (B, T, C) -> (B, T, C)
        if return_attn:
            a, att = self.attn(self.ln1(x), return_attn=True)
            x = x + a
            return x + self.mlp(self.ln2(x)), att
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Decoder(nn.Module):
    """Byte-level causal LM: ``forward(tokens (B, T) int64) -> logits (B, T, vocab)``."""

    def __init__(self, cfg: DecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or DecoderConfig()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.context, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, bias=cfg.bias)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.register_buffer("pos", torch.arange(cfg.context), persistent=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        T = tokens.shape[1]
        return self.drop(self.wte(tokens) + self.wpe(self.pos[:T]))

    def forward(self, tokens: torch.Tensor, return_attn: bool = False):
        """``tokens`` (B, T) int64, T <= context -> logits (B, T, vocab); with ``return_attn``
        also the attention probabilities of every layer, a list of (B, H, T, T)."""
        x = self.embed(tokens)
        attns = []
        for blk in self.blocks:
            if return_attn:
                x, att = blk(x, return_attn=True)
                attns.append(att)
            else:
                x = blk(x)
        logits = self.lm_head(self.ln_f(x))                                  # (B, T, V)
        return (logits, attns) if return_attn else logits

    def hidden_states(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        """The residual stream after the embedding and after each block: n_layers + 1 x (B, T, C)."""
        x = self.embed(tokens)
        out = [x]
        for blk in self.blocks:
            x = blk(x)
            out.append(x)
        return out

    def example_inputs(self, batch: int = 1, seq: int | None = None) -> tuple[torch.Tensor]:
        return (torch.randint(0, 256, (batch, seq or min(64, self.cfg.context))),)

    # ------------------------------------------------------------------ export with a KV cache
    # Fixed capacity: a prompt of up to `export_prompt_len` tokens and `export_new_tokens` more;
    # `edge_programs()` / `edge_generation()` (converters/programs.py, runtime/generate.py) read
    # these, so set them before `sdk.convert(model, None, target)` to export another capacity.
    export_prompt_len: int = 64
    export_new_tokens: int = 32

    def edge_programs(self, prompt_len: int | None = None, max_new_tokens: int | None = None) -> dict:
        """``prefill(tokens (1, P), length (1,)) -> logits (1, V), kv`` and
        ``step(token (1, 1), pos (1,), kv) -> logits (1, V), new_kv`` with
        ``kv`` (2·n_layers, 1, H, P + N, Dh) a fixed-capacity cache (rows 2i, 2i + 1: layer i's
        keys and values; rank 5, the most Core ML takes)."""
        if prompt_len is not None:
            self.export_prompt_len = prompt_len
        if max_new_tokens is not None:
            self.export_new_tokens = max_new_tokens
        P, cap = self._capacity()
        tokens = torch.randint(0, 256, (1, P))
        length = torch.tensor([max(1, P - 3)])
        prefill = _Prefill(self, cap)
        with torch.no_grad():
            _, kv = prefill(tokens, length)
        return {"prefill": (prefill, (tokens, length)),
                "step": (_Step(self), (tokens[:, :1], length.clone(), kv))}

    def edge_generation(self) -> dict:
        tok = ByteTokenizer()
        _, cap = self._capacity()
        return {"prefill": "prefill", "step": "step", "prompt": "tokens", "prompt_length": "length",
                "token": "token", "position": "pos", "logits": "logits", "prefill_logits": "logits",
                "state": [{"input": "kv", "init": "kv", "update": "new_kv"}],
                "eos": tok.eos_id, "pad": tok.pad_id, "max_position": cap, "tokenizer": "bytes"}

    def _capacity(self) -> tuple[int, int]:
        P, N = self.export_prompt_len, self.export_new_tokens
        if not (isinstance(P, int) and isinstance(N, int) and P >= 1 and N >= 1):
            raise ValueError(f"export_prompt_len and export_new_tokens must be positive ints, got {P!r}, {N!r}")
        if P + N > self.cfg.context:
            raise ValueError(f"a prompt of {P} plus {N} new tokens exceeds the context of {self.cfg.context} "
                             f"learned positions: lower them or build the Decoder with context >= {P + N}")
        return P, P + N

    @torch.no_grad()
    def generate(self, tokens: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Extend ``tokens`` (B, T): greedy at temperature 0, else sampled (not for export)."""
        for _ in range(max_new_tokens):
            logits = self(tokens[:, -self.cfg.context:])[:, -1]              # (B, V)
            if temperature <= 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                nxt = torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator)
            tokens = torch.cat([tokens, nxt], dim=1)
        return tokens


class _Prefill(nn.Module):
    """Prompt -> logits after its last real token and the KV cache of every layer."""

    output_names = ("logits", "kv")

    def __init__(self, dec: Decoder, capacity: int):
        super().__init__()
        self.dec, self.capacity = dec, capacity

    def forward(self, tokens: torch.Tensor, length: torch.Tensor):
        dec, (B, P) = self.dec, tokens.shape                                 # tokens (1, P), length (1,)
        x = dec.embed(tokens)                                                # (1, P, C)
        pad = torch.zeros(2, B, dec.cfg.n_heads, self.capacity - P, dec.cfg.d_model // dec.cfg.n_heads)
        kvs = []
        for blk in dec.blocks:
            q, k, v = blk.attn.heads(blk.ln1(x))                             # (1, H, P, Dh)
            x = x + blk.attn.attend(q, k, v, blk.attn.mask[:P, :P])
            x = x + blk.mlp(blk.ln2(x))
            kvs.append(torch.cat([torch.stack([k, v]), pad], dim=3))         # (2, 1, H, cap, Dh)
        last = dec.ln_f(x).index_select(1, length - 1)                       # (1, 1, C)
        return dec.lm_head(last).reshape(B, -1), torch.cat(kvs)              # (1, V), (2L, 1, H, cap, Dh)


class _Step(nn.Module):
    """One token at position ``pos`` against the cache; writes its K/V at ``pos``."""

    output_names = ("logits", "new_kv")

    def __init__(self, dec: Decoder):
        super().__init__()
        self.dec = dec

    def forward(self, token: torch.Tensor, pos: torch.Tensor, kv: torch.Tensor):
        dec = self.dec                                                       # token (1, 1), pos (1,)
        cap = kv.shape[3]
        x = dec.wte(token) + dec.wpe(pos).unsqueeze(0)                       # (1, 1, C)
        slots = torch.arange(cap)
        write = (slots == pos).to(x.dtype).view(1, 1, cap, 1)                # one-hot over the cache
        mask = torch.where(slots <= pos, 0.0, float("-inf")).view(1, 1, 1, cap)
        new = []
        for i, blk in enumerate(dec.blocks):
            q, k, v = blk.attn.heads(blk.ln1(x))                             # (1, H, 1, Dh)
            kc = kv[2 * i] * (1 - write) + k * write                         # (1, H, cap, Dh)
            vc = kv[2 * i + 1] * (1 - write) + v * write
            x = x + blk.attn.attend(q, kc, vc, mask)
            x = x + blk.mlp(blk.ln2(x))
            new += [kc, vc]
        return dec.lm_head(dec.ln_f(x)).reshape(1, -1), torch.stack(new)     # (1, V), (2L, 1, H, cap, Dh)


@register_model("decoder")
def decoder(**cfg) -> Decoder:
    """An untrained decoder; ``load_teacher("decoder")`` gives the trained one shipped in the repo."""
    return Decoder(DecoderConfig(**cfg))
