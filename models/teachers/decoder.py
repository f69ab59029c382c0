"""A small decoder-only transformer (nanoGPT-style) over the byte vocabulary.

Pre-norm causal blocks, learned positions, tied input/output embeddings, vocabulary from
:class:`models.data.tokenizer.ByteTokenizer` (256 bytes + 4 specials). Written export-clean: no
data-dependent control flow, the causal mask is a buffer sliced by the (static) sequence
length. The teacher shipped in the repo is trained by ``python -m edgesdk.models.teachers.train_decoder``
and loaded with ``load_teacher("decoder")``.

>>> from edgesdk.models.teachers.decoder import Decoder, DecoderConfig
>>> m = Decoder(DecoderConfig(n_layers=2, d_model=64))
>>> tokens = torch.randint(0, 256, (2, 16))
>>> m(tokens).shape                                   # (B, T, vocab)
torch.Size([2, 16, 260])
>>> logits, attn = m(tokens, return_attn=True)        # attn: n_layers x (B, H, T, T)
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from edgesdk.models.data.tokenizer import ByteTokenizer
from edgesdk.models.generation import K_AXIS, V_AXIS, cache_layout, cached_attention, length_classes, write_slot
from edgesdk.models.registry import register_model


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
    # Export capacities (`Decoder.edge_programs`): one prefill program per prompt length class
    # and a step whose KV cache holds max(prompt_lengths) + max_new_tokens positions. They do
    # not change the weights, so `to_dict()` (what checkpoints record) leaves them out.
    prompt_lengths: tuple[int, ...] = (64,)
    max_new_tokens: int = 32

    def __post_init__(self):
        for k in ("vocab_size", "context", "d_model", "n_layers", "n_heads", "mlp_ratio", "max_new_tokens"):
            v = getattr(self, k)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"DecoderConfig.{k} must be a positive int, got {v!r}")
        self.prompt_lengths = length_classes(self.prompt_lengths, "DecoderConfig.prompt_lengths")
        if self.d_model % self.n_heads:
            raise ValueError(f"DecoderConfig.d_model ({self.d_model}) must be divisible by n_heads "
                             f"({self.n_heads}); e.g. d_model={self.n_heads * (self.d_model // self.n_heads + 1)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"DecoderConfig.dropout must be in [0, 1), got {self.dropout!r}")

    def to_dict(self) -> dict:
        """The architecture (what a checkpoint records): the export capacities are left out."""
        return {k: v for k, v in asdict(self).items() if k not in EXPORT_FIELDS}


EXPORT_FIELDS = ("prompt_lengths", "max_new_tokens")


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
    def edge_programs(self, prompt_lengths: list[int] | None = None, max_new_tokens: int | None = None) -> dict:
        """One ``prefill`` per prompt length class P (named ``prefill`` for one class, else
        ``prefill_<P>``) and one ``step``, for `edgesdk.convert(model, None, target)`:

        - ``prefill(tokens (1, P), length (1,)) -> logits (1, V), k_i (H, Dh, P), v_i (H, P, Dh)``
          for every layer i: the prompt's keys (stored transposed, see `models.generation`) and
          values, which the runtime copies into slots 0..P-1 of its cache;
        - ``step(token (1, 1), pos (1,), k_0, v_0, ..., k_{L-1}, v_{L-1}) -> logits (1, V),
          new_k_i (H, Dh, 1), new_v_i (H, 1, Dh)``: each layer's cache (keys (H, Dh, C), values
          (H, C, Dh), C = max(P) + max_new_tokens) holds the positions before ``pos``; the step
          returns only the fed token's key and value, and the runtime writes them at slot ``pos``.

        Defaults: the config's ``prompt_lengths`` and ``max_new_tokens``."""
        Ps, cap = self._capacity(prompt_lengths, max_new_tokens)
        g = torch.Generator().manual_seed(0)
        programs = {}
        for P in Ps:
            tokens = torch.randint(0, 256, (1, P), generator=g)
            programs["prefill" if len(Ps) == 1 else f"prefill_{P}"] = (
                _Prefill(self, P), (tokens, torch.tensor([max(1, P - 3)])))
        L, H, Dh = self.cfg.n_layers, self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        pos = max(1, Ps[-1] - 3)
        caches = tuple(0.5 * torch.randn(*((H, Dh, cap) if i % 2 == 0 else (H, cap, Dh)), generator=g)
                       for i in range(2 * L))                                  # keys transposed, values
        programs["step"] = (_Step(self, cap), (torch.tensor([[65]]), torch.tensor([pos])) + caches)
        return programs

    def edge_generation(self, prompt_lengths: list[int] | None = None, max_new_tokens: int | None = None) -> dict:
        """The manifest's ``generation`` entry: the caches are written in place (slot ``pos``)."""
        tok = ByteTokenizer()
        Ps, cap = self._capacity(prompt_lengths, max_new_tokens)
        state = [{"input": f"{kv}_{i}", "init": f"{kv}_{i}", "update": f"new_{kv}_{i}",
                  "write": {"index": "pos", "axis": K_AXIS if kv == "k" else V_AXIS}}  # keys transposed
                 for i in range(self.cfg.n_layers) for kv in ("k", "v")]
        return {"prefill": ["prefill"] if len(Ps) == 1 else [f"prefill_{P}" for P in Ps], "step": "step",
                "prompt": "tokens", "prompt_length": "length", "token": "token", "position": "pos",
                "logits": "logits", "prefill_logits": "logits", "state": state,
                "eos": tok.eos_id, "pad": tok.pad_id, "max_position": cap, "tokenizer": "bytes"}

    def _capacity(self, Ps, N) -> tuple[tuple[int, ...], int]:
        Ps = length_classes(self.cfg.prompt_lengths if Ps is None else Ps, "prompt_lengths")
        N = self.cfg.max_new_tokens if N is None else N
        if isinstance(N, bool) or not isinstance(N, int) or N < 1:
            raise ValueError(f"max_new_tokens must be a positive int, got {N!r}")
        if Ps[-1] + N > self.cfg.context:
            raise ValueError(f"a prompt of {Ps[-1]} plus {N} new tokens exceeds the context of {self.cfg.context} "
                             f"learned positions: lower them or build the Decoder with context >= {Ps[-1] + N}")
        return Ps, Ps[-1] + N

    @torch.no_grad()
    def generate_cached(self, tokens: torch.Tensor, max_new_tokens: int) -> torch.Tensor:
        """Greedy through the exported programs' computation in PyTorch eager, with a static
        cache written in place (what a user would otherwise run): tokens (1, T) -> (1, T + new)."""
        T = tokens.shape[1]
        cap = T + max_new_tokens
        self._capacity((T,), max_new_tokens)
        logits, *kv = _Prefill(self, T)(tokens, torch.tensor([T]))
        H, Dh = self.cfg.n_heads, self.cfg.d_model // self.cfg.n_heads
        caches = [torch.zeros((H, Dh, cap) if i % 2 == 0 else (H, cap, Dh)) for i in range(len(kv))]
        axes = [K_AXIS if i % 2 == 0 else V_AXIS for i in range(len(kv))]
        for c, x, a in zip(caches, kv, axes):
            write_slot(c, x, 0, a)
        step, out = _Step(self, cap), [tokens]
        for i in range(max_new_tokens):
            nxt = logits.argmax(-1, keepdim=True)                            # (1, 1)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits, *new = step(nxt, torch.tensor([T + i]), *caches)
                for c, x, a in zip(caches, new, axes):
                    write_slot(c, x, T + i, a)
        return torch.cat(out, 1)

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
    """Prompt (1, P) -> logits after its last real token and every layer's keys and values."""

    def __init__(self, dec: Decoder, P: int):
        super().__init__()
        self.dec = dec
        self.output_names = ("logits",) + tuple(f"{kv}_{i}" for i in range(dec.cfg.n_layers) for kv in ("k", "v"))

    def forward(self, tokens: torch.Tensor, length: torch.Tensor):
        dec, (B, P) = self.dec, tokens.shape                                 # tokens (1, P), length (1,)
        x = dec.embed(tokens)                                                # (1, P, C)
        kvs = []
        for blk in dec.blocks:
            q, k, v = blk.attn.heads(blk.ln1(x))                             # (1, H, P, Dh)
            x = x + blk.attn.attend(q, k, v, blk.attn.mask[:P, :P])
            x = x + blk.mlp(blk.ln2(x))
            kvs += cache_layout(k, v)                                         # (H, Dh, P), (H, P, Dh)
        last = dec.ln_f(x).index_select(1, length - 1)                       # (1, 1, C)
        return (dec.lm_head(last).reshape(B, -1), *kvs)                      # (1, V), keys/values per layer


class _Step(nn.Module):
    """One token at position ``pos`` against caches of ``capacity`` slots (positions < ``pos``
    written; keys (H, Dh, C), values (H, C, Dh)): logits and the token's own key and value per
    layer, in the same layouts."""

    def __init__(self, dec: Decoder, capacity: int):
        super().__init__()
        self.dec, self.capacity = dec, capacity
        L = dec.cfg.n_layers
        self.input_names = ("token", "pos") + tuple(f"{kv}_{i}" for i in range(L) for kv in ("k", "v"))
        self.output_names = ("logits",) + tuple(f"new_{kv}_{i}" for i in range(L) for kv in ("k", "v"))

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *kv: torch.Tensor):
        dec, cap = self.dec, self.capacity                                   # token (1, 1), pos (1,)
        x = dec.wte(token) + dec.wpe(pos).unsqueeze(0)                       # (1, 1, C)
        bias = torch.where(torch.arange(cap) < pos, 0.0, float("-inf")).view(1, 1, 1, cap)
        new = []
        for i, blk in enumerate(dec.blocks):
            a = blk.attn
            q, k, v = a.heads(blk.ln1(x))                                    # (1, H, 1, Dh)
            y = cached_attention(q, kv[2 * i], kv[2 * i + 1], k, v, bias)    # (1, H, 1, Dh)
            x = x + a.proj(y.transpose(1, 2).reshape(1, 1, a.n_heads * a.d_head))
            x = x + blk.mlp(blk.ln2(x))
            new += cache_layout(k, v)                                         # (H, Dh, 1), (H, 1, Dh)
        return (dec.lm_head(dec.ln_f(x)).reshape(1, -1), *new)


@register_model("decoder")
def decoder(**cfg) -> Decoder:
    """An untrained decoder; ``load_teacher("decoder")`` gives the trained one shipped in the repo."""
    return Decoder(DecoderConfig(**cfg))


CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"
DECODER_CHECKPOINT = CHECKPOINT_DIR / "decoder.safetensors"


def load_decoder(path: str | os.PathLike | None = None) -> Decoder:
    """The trained decoder teacher from a safetensors checkpoint (default: the one shipped in
    ``checkpoints/``), in eval mode. Its config comes from the file's metadata (or the JSON
    beside it); weights load with safetensors, never pickle."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DECODER_CHECKPOINT
    if not path.is_file():
        raise FileNotFoundError(f"decoder checkpoint {str(path)!r} not found; train one with "
                                f"`python -m edgesdk.models.teachers.train_decoder --out {path}`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if "config" in meta:
        cfg = json.loads(meta["config"])
    elif path.with_suffix(".json").is_file():
        cfg = json.loads(path.with_suffix(".json").read_text())["config"]
    else:
        raise ValueError(f"{str(path)!r} has no decoder config (neither safetensors metadata nor a .json beside it)")
    model = Decoder(DecoderConfig(**cfg))
    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    if unexpected or set(missing) != {"lm_head.weight"}:  # lm_head is tied to wte: not stored
        raise ValueError(f"{str(path)!r} does not match DecoderConfig({cfg}): missing {missing}, "
                         f"unexpected {unexpected}")
    return model.eval()
