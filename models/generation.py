"""What the generation models share for export: prompt length classes, and attention over a
fixed-capacity KV cache that the runtime writes in place.

Prompt length classes: a generation model exports one prefill program per prompt capacity
(``prompt_lengths``, e.g. 64, 256, 1024, 2048) and the runtime runs the smallest that holds
the prompt, so the time to the first token follows the prompt's length.

The exported step programs of the decoder teacher and the encoder-decoder student take each
layer's cache as an input, compute the fed token's own key and value, and return *only those*
per layer; the runtime writes them into its cache buffer at the token's position before the next
step (ExecuTorch's LLM export and ONNX Runtime GenAI keep one cache buffer the same way). Inside
the step the new entry is attended to next to the cache, without ever writing the cache: every
step reads each cache row once and copies nothing.

Layout: per layer, keys are cached *transposed* as (B·Hkv, Dh, C) and values as (B·Hkv, C, Dh)
(rank 3, batch and KV heads folded, the slot axis last for keys), so both products are plain
batched matmuls on the inputs as they are (``q Kᵀ`` and ``p V``): exported by `torch.export`, a
4-D ``q @ k.transpose(-2, -1)`` becomes ``expand_copy`` + ``bmm``, and a 4-D cache reshaped to 3-D
inside the graph becomes a copy in XNNPACK, either way the whole cache copied per layer and
token. The manifest's state entries say so: keys are written along axis 2 (`K_AXIS`), values
along axis 1 (`V_AXIS`).

>>> import torch
>>> from edgesdk.models.generation import cache_layout, cached_attention, length_classes, write_slot, K_AXIS, V_AXIS
>>> length_classes([256, 64])
(64, 256)
>>> q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
>>> kt, vc = torch.zeros(2, 8, 16), torch.zeros(2, 16, 8)      # GQA 4/2: (Hkv, Dh, C), (Hkv, C, Dh)
>>> bias = torch.where(torch.arange(16) < 3, 0.0, float("-inf")).view(1, 1, 1, 16)
>>> cached_attention(q, kt, vc, k, v, bias).shape            # positions 0..2 cached, 3 is new
torch.Size([1, 4, 1, 8])
>>> new_k, new_v = cache_layout(k, v)                       # (2, 8, 1), (2, 1, 8)
>>> write_slot(kt, new_k, 3, K_AXIS); write_slot(vc, new_v, 3, V_AXIS)   # the runtime's job
"""

from __future__ import annotations

import math

import torch

K_AXIS, V_AXIS = 2, 1  # slot axes of the cached keys (B·Hkv, Dh, C) and values (B·Hkv, C, Dh)


def cache_layout(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v (B, Hkv, T, Dh) -> keys (B·Hkv, Dh, T), values (B·Hkv, T, Dh): the cached layout."""
    B, Hkv, T, Dh = k.shape
    return k.reshape(B * Hkv, T, Dh).transpose(1, 2), v.reshape(B * Hkv, T, Dh)


def from_cache_layout(kt: torch.Tensor, v: torch.Tensor, B: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of `cache_layout`: -> k, v (B, Hkv, T, Dh)."""
    BH, Dh, T = kt.shape
    return kt.transpose(1, 2).reshape(B, BH // B, T, Dh), v.reshape(B, BH // B, T, Dh)


def _bias3(bias: torch.Tensor, B: int, Hkv: int, S: int) -> torch.Tensor:
    """An additive key mask (B, 1, 1, S) (or broadcastable) -> (B·Hkv or 1, 1, S)."""
    if bias.numel() == S:  # one mask for every row: broadcast, no copy
        return bias.reshape(1, 1, S)
    return bias.reshape(B, 1, 1, S).expand(B, Hkv, 1, S).reshape(B * Hkv, 1, S)


def cached_attention(q: torch.Tensor, kt: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """One query token over the cache plus its own key/value.

    q (B, H, 1, Dh); the cache in its layout (keys kt (B·Hkv, Dh, C), values vc (B·Hkv, C, Dh)),
    masked by the additive ``bias`` (B, 1, 1, C) (0 on the positions written so far, a large
    negative number elsewhere); the fed token's own k/v (B, Hkv, 1, Dh), always visible
    -> (B, H, 1, Dh). Grouped-query attention: the H / Hkv query heads that share a key/value
    head are stacked, so K and V are read as they are. The softmax runs over the C + 1 scores;
    the two value reads are summed."""
    B, H, T, Dh = q.shape
    BH, C = kt.shape[0], kt.shape[2]
    q3 = q.reshape(BH, (H * B // BH) * T, Dh)
    scale = 1.0 / math.sqrt(Dh)
    s_cache = torch.bmm(q3, kt) * scale + _bias3(bias, B, BH // B, C)                 # (B·Hkv, rep, C)
    s_new = torch.bmm(q3, k.reshape(BH, Dh, 1)) * scale                              # (B·Hkv, rep, 1)
    p = torch.softmax(torch.cat([s_cache, s_new], dim=-1), dim=-1)
    y = torch.bmm(p[..., :C], vc) + p[..., C:] * v.reshape(BH, 1, Dh)               # (B·Hkv, rep, Dh)
    return y.reshape(B, H, T, Dh)


def attention_kt(q: torch.Tensor, kt: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """q (B, H, T, Dh) over K/V in the cached layout (kt (B·Hkv, Dh, S), v (B·Hkv, S, Dh)) with an
    additive key mask (B, 1, 1, S) -> (B, H, T, Dh): a step's cross-attention over the encoder's
    K/V, as plain batched matmuls (see the module docstring)."""
    B, H, T, Dh = q.shape
    BH, S = kt.shape[0], kt.shape[2]
    q3 = q.reshape(BH, (H * B // BH) * T, Dh)
    s = torch.bmm(q3, kt) * (1.0 / math.sqrt(Dh)) + _bias3(bias, B, BH // B, S)
    return torch.bmm(torch.softmax(s, dim=-1), v).reshape(B, H, T, Dh)


@torch.no_grad()
def write_slot(cache: torch.Tensor, new: torch.Tensor, pos: int, axis: int = -2) -> None:
    """``cache[..., pos:pos + n, ...] = new`` along ``axis`` (the runtime's in-place write, for
    PyTorch-side generation loops)."""
    axis = axis % cache.dim()
    cache.narrow(axis, pos, new.shape[axis]).copy_(new)


def length_classes(value, where: str = "prompt_lengths") -> tuple[int, ...]:
    """An int or a list of prompt capacities -> a sorted tuple of distinct positive ints
    (ValueError naming ``where`` otherwise)."""
    vals = [value] if isinstance(value, int) and not isinstance(value, bool) else value
    try:
        vals = list(vals)
    except TypeError:
        vals = None
    if not vals or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in vals):
        raise ValueError(f"{where} must be a positive int or a non-empty list of them (e.g. [64, 256, 1024]), "
                         f"got {value!r}")
    if len(set(vals)) != len(vals):
        raise ValueError(f"{where} has repeated capacities: {value!r}")
    return tuple(sorted(vals))
