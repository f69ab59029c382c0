"""What the generation models share for export: prompt length classes, and attention over a
fixed-capacity KV cache that the runtime writes in place.

Prompt length classes: a generation model exports one prefill program per prompt capacity
(``prompt_lengths``, e.g. 64, 256, 1024, 2048) and the runtime runs the smallest that holds
the prompt, so the time to the first token follows the prompt's length.

The exported step programs of the decoder teacher and the encoder-decoder student take each
layer's cache as an input, compute the fed token's own key and value, and return *only those*
(``(B, Hkv, 1, Dh)`` per layer); the runtime writes them into its cache buffer at the token's
position before the next step (ExecuTorch's LLM export and ONNX Runtime GenAI keep one cache
buffer the same way). Inside the step the new entry is attended to next to the cache, without
ever writing the cache: every step reads each cache row once and copies nothing.

>>> import torch
>>> from models.generation import cached_attention, length_classes, write_slot
>>> length_classes([256, 64])
(64, 256)
>>> q, k, v = torch.randn(1, 4, 1, 8), torch.randn(1, 2, 1, 8), torch.randn(1, 2, 1, 8)
>>> kc, vc = torch.zeros(1, 2, 16, 8), torch.zeros(1, 2, 16, 8)   # (B, Hkv, C, Dh), GQA 4/2
>>> bias = torch.where(torch.arange(16) < 3, 0.0, float("-inf")).view(1, 1, 1, 16)
>>> cached_attention(q, kc, vc, k, v, bias).shape                  # positions 0..2 cached, 3 is new
torch.Size([1, 4, 1, 8])
>>> write_slot(kc, k, 3)                                          # what the runtime does after the step
"""

from __future__ import annotations

import math

import torch


def cached_attention(q: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     bias: torch.Tensor) -> torch.Tensor:
    """One query token over the cache plus its own key/value.

    q (B, H, 1, Dh); the cache kc/vc (B, Hkv, C, Dh), masked by the additive ``bias``
    (B, 1, 1, C) (0 on the positions written so far, a large negative number elsewhere); the fed
    token's own k/v (B, Hkv, 1, Dh), always visible -> (B, H, 1, Dh). Grouped-query attention:
    the H / Hkv query heads that share a key/value head are stacked, so K and V are read as
    they are. The softmax runs over the C + 1 scores; the two value reads are summed."""
    B, H, T, Dh = q.shape
    Hkv, C = kc.shape[1], kc.shape[2]
    q = q.reshape(B, Hkv, (H // Hkv) * T, Dh)
    scale = 1.0 / math.sqrt(Dh)
    s_cache = (q @ kc.transpose(-2, -1)) * scale + bias                   # (B, Hkv, rep, C)
    s_new = (q @ k.transpose(-2, -1)) * scale                             # (B, Hkv, rep, 1)
    p = torch.softmax(torch.cat([s_cache, s_new], dim=-1), dim=-1)
    y = p[..., :C] @ vc + p[..., C:] @ v                                  # (B, Hkv, rep, Dh)
    return y.reshape(B, H, T, Dh)


@torch.no_grad()
def write_slot(cache: torch.Tensor, new: torch.Tensor, pos: int, axis: int = -2) -> None:
    """``cache[..., pos:pos + n, :] = new`` along ``axis`` (the runtime's in-place write, for
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
