"""A decoder-only LM built from the encoder-decoder student's own blocks: the fair baseline.

`models.encdec.EncDec` is compared with a decoder-only model of equal size ("Return of the
Encoder"). For that comparison to measure the architecture and nothing else, the baseline uses
the same pieces: pre-norm blocks (LayerNorm without bias), rotary positions, the same grouped-
query attention (``n_kv_heads``), GELU MLPs, tied embeddings, and the same cache mechanics — a
fixed-capacity KV cache per layer that the step reads and the runtime writes in place
(`models.generation.cached_attention`). Only the layout differs: every layer is a causal
self-attention layer, and the prompt and the generated tokens share one cache.

Exports like the decoder teacher: one ``prefill(tokens (1, P), length (1,)) -> logits, k_i, v_i``
per prompt length class and one ``step(token, pos, k_0, v_0, ...) -> logits, new_k_i, new_v_i``
(keys stored transposed, see `models.generation`).

>>> import torch
>>> from edgesdk.models.gqa_decoder import GQADecoder, GQADecoderConfig
>>> m = GQADecoder(GQADecoderConfig(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, max_seq=96))
>>> m(torch.randint(0, 256, (1, 10))).shape
torch.Size([1, 10, 260])
>>> sorted(m.edge_programs(prompt_lengths=[16, 32]))
['prefill_16', 'prefill_32', 'step']
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from edgesdk.models.encdec import NEG, EncDecConfig, EncoderLayer, attend, norm
from edgesdk.models.generation import K_AXIS, V_AXIS, cache_layout, cached_attention, length_classes
from edgesdk.models.registry import register_model

_BYTE_VOCAB = EncDecConfig().vocab_size


@dataclass
class GQADecoderConfig:
    vocab_size: int = _BYTE_VOCAB
    d_model: int = 128
    n_layers: int = 7
    n_heads: int = 4
    n_kv_heads: int = 2
    mlp_ratio: int = 4
    max_seq: int = 2048 + 64           # RoPE table length: longest prompt + new tokens
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    prompt_lengths: tuple[int, ...] = (128,)
    max_new_tokens: int = 32

    def __post_init__(self):
        # the blocks validate heads, widths and RoPE through the encoder-decoder's config
        self.block = EncDecConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=2,
                                  n_enc_layers=1, n_heads=self.n_heads, n_kv_heads=self.n_kv_heads,
                                  mlp_ratio=self.mlp_ratio, max_source=self.max_seq, max_target=1,
                                  rope_base=self.rope_base, norm_eps=self.norm_eps)
        self.prompt_lengths = length_classes(self.prompt_lengths, "GQADecoderConfig.prompt_lengths")

    def to_dict(self) -> dict:
        return asdict(self)


class GQADecoder(nn.Module):
    """Causal byte LM: ``forward(tokens (B, T)) -> logits (B, T, vocab)``."""

    def __init__(self, cfg: GQADecoderConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or GQADecoderConfig()
        bc = cfg.block
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.layers = nn.ModuleList(EncoderLayer(bc) for _ in range(cfg.n_layers))
        self.norm = norm(bc)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        dh = bc.d_head
        inv = 1.0 / (cfg.rope_base ** (torch.arange(0, dh, 2, dtype=torch.float64) / dh))
        ang = torch.arange(cfg.max_seq, dtype=torch.float64)[:, None] * inv[None, :]
        self.register_buffer("cos", torch.cat([ang.cos(), ang.cos()], -1).float(), persistent=False)
        self.register_buffer("sin", torch.cat([-ang.sin(), ang.sin()], -1).float(), persistent=False)
        h = dh // 2
        swap = torch.zeros(dh, dh)
        swap[h:, :h] = torch.eye(h)
        swap[:h, h:] = torch.eye(h)
        self.register_buffer("swap", swap, persistent=False)
        self.register_buffer("slots", torch.arange(cfg.max_seq), persistent=False)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, 0.02)
        for name, p in self.named_parameters():
            if name.endswith(("o.weight", "down.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * cfg.n_layers))

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def _causal(self, P: int) -> torch.Tensor:
        return torch.where(self.slots[:P][None, :] <= self.slots[:P][:, None], 0.0, NEG)  # (P, P)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        T = tokens.shape[1]
        rot, x = (self.cos[:T], self.sin[:T], self.swap), self.wte(tokens)
        for layer in self.layers:
            x = layer(x, rot, self._causal(T))
        return self.lm_head(self.norm(x))

    # ---------------------------------------------------------------- export protocol
    def edge_programs(self, prompt_lengths=None, max_new_tokens=None) -> dict:
        Ps, cap = self._capacity(prompt_lengths, max_new_tokens)
        g = torch.Generator().manual_seed(0)
        programs = {}
        for P in Ps:
            programs["prefill" if len(Ps) == 1 else f"prefill_{P}"] = (
                _Prefill(self), (torch.randint(0, 256, (1, P), generator=g), torch.tensor([max(1, P - 3)])))
        bc = self.cfg.block
        hkv, dh = bc.n_kv_heads, bc.d_head
        caches = tuple(0.5 * torch.randn(*((hkv, dh, cap) if i % 2 == 0 else (hkv, cap, dh)), generator=g)
                       for i in range(2 * self.cfg.n_layers))                # keys transposed, values
        programs["step"] = (_Step(self, cap), (torch.tensor([[65]]), torch.tensor([max(1, Ps[-1] - 3)])) + caches)
        return programs

    def edge_generation(self, prompt_lengths=None, max_new_tokens=None) -> dict:
        Ps, cap = self._capacity(prompt_lengths, max_new_tokens)
        state = [{"input": f"{kv}_{i}", "init": f"{kv}_{i}", "update": f"new_{kv}_{i}",
                  "write": {"index": "pos", "axis": K_AXIS if kv == "k" else V_AXIS}}
                 for i in range(self.cfg.n_layers) for kv in ("k", "v")]
        return {"prefill": ["prefill"] if len(Ps) == 1 else [f"prefill_{P}" for P in Ps], "step": "step",
                "prompt": "tokens", "prompt_length": "length", "token": "token", "position": "pos",
                "logits": "logits", "prefill_logits": "logits", "state": state, "eos": None, "pad": 256,
                "max_position": cap, "tokenizer": "bytes"}

    def _capacity(self, Ps, N) -> tuple[tuple[int, ...], int]:
        Ps = length_classes(self.cfg.prompt_lengths if Ps is None else Ps)
        N = self.cfg.max_new_tokens if N is None else N
        if Ps[-1] + N > self.cfg.max_seq:
            raise ValueError(f"a prompt of {Ps[-1]} plus {N} new tokens exceeds max_seq={self.cfg.max_seq}")
        return Ps, Ps[-1] + N


class _Prefill(nn.Module):
    def __init__(self, model: GQADecoder):
        super().__init__()
        self.model = model
        self.output_names = ("logits",) + tuple(f"{kv}_{i}" for i in range(model.cfg.n_layers) for kv in ("k", "v"))

    def forward(self, tokens: torch.Tensor, length: torch.Tensor):
        m, P = self.model, tokens.shape[1]
        rot, bias, x = (m.cos[:P], m.sin[:P], m.swap), m._causal(P), m.wte(tokens)
        kvs = []
        for layer in m.layers:
            q, k, v = layer.attn.qkv(layer.n1(x), rot)                        # k/v (1, Hkv, P, Dh)
            x = x + layer.attn.out(attend(q, k, v, bias))
            x = x + layer.mlp(layer.n2(x))
            kvs += cache_layout(k, v)                                         # (Hkv, Dh, P), (Hkv, P, Dh)
        last = m.norm(x).index_select(1, length - 1)                          # (1, 1, D)
        return (m.lm_head(last)[:, 0], *kvs)


class _Step(nn.Module):
    def __init__(self, model: GQADecoder, capacity: int):
        super().__init__()
        self.model, self.capacity = model, capacity
        L = model.cfg.n_layers
        self.input_names = ("token", "pos") + tuple(f"{kv}_{i}" for i in range(L) for kv in ("k", "v"))
        self.output_names = ("logits",) + tuple(f"new_{kv}_{i}" for i in range(L) for kv in ("k", "v"))

    def forward(self, token: torch.Tensor, pos: torch.Tensor, *kv: torch.Tensor):
        m, C = self.model, self.capacity
        rot = (m.cos.index_select(0, pos).view(1, 1, 1, -1), m.sin.index_select(0, pos).view(1, 1, 1, -1), m.swap)
        bias = torch.where(m.slots[:C] < pos, 0.0, NEG).view(1, 1, 1, C)
        x, new = m.wte(token), []
        for i, layer in enumerate(m.layers):
            q, k, v = layer.attn.qkv(layer.n1(x), rot)                        # (1, Hkv, 1, Dh)
            x = x + layer.attn.out(cached_attention(q, kv[2 * i], kv[2 * i + 1], k, v, bias))
            x = x + layer.mlp(layer.n2(x))
            new += cache_layout(k, v)
        return (m.lm_head(m.norm(x))[:, 0], *new)


@register_model("gqa-decoder")
def gqa_decoder(**cfg) -> GQADecoder:
    """The decoder-only twin of ``encdec`` (same blocks, GQA, RoPE and in-place cache)."""
    return GQADecoder(GQADecoderConfig(**cfg))

