"""Feature taps for distillation: capture intermediate outputs by module name, without editing
``forward`` (the torchdistill / ModelOpt approach: ``register_forward_hook`` on named submodules).

    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> with FeatureHooks(model, {"1": "hidden"}) as hooks:
    ...     logits = model(torch.randn(3, 4))
    >>> hooks.features["hidden"].shape
    torch.Size([3, 8])

The same object works for a teacher run under ``torch.no_grad()`` (captured tensors carry no
graph) and a student run with grad (captured tensors stay in the graph, so a loss on them
back-propagates into the student).
"""

from __future__ import annotations

import difflib
from typing import Callable, Iterable, Mapping

from torch import Tensor, nn

__all__ = ["FeatureHooks", "AttentionHooks", "capture_attention", "split_heads"]

Select = Callable[[object], Tensor]


def _first(output):
    """Default selection: the first element of a tuple/list output, else the output itself."""
    return output[0] if isinstance(output, (tuple, list)) else output


class FeatureHooks:
    """Forward hooks on the submodules of ``model`` named in ``names`` (dotted names from
    ``model.named_modules()``; ``""`` is the model itself).

    - ``names``: a list of module names (features are stored under the module name) or a dict
      ``{module_name: feature_key}`` (stored under ``feature_key``).
    - ``select``: what to keep from a module's output — a callable applied to every output, or a
      dict ``{feature_key: callable}``; default: the first element of a tuple output, else the output.
    - ``detach``: store detached tensors (for a teacher run with grad enabled).

    Every forward overwrites ``features[key]`` with the latest output. Hooks are registered at
    construction; ``remove()`` (or leaving the ``with`` block) takes them off again. An unknown
    name raises ValueError listing the most similar module names.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | Mapping[str, str],
                 select: Select | Mapping[str, Select] | None = None, detach: bool = False):
        if isinstance(names, str):
            names = [names]
        mapping = dict(names) if isinstance(names, Mapping) else {n: n for n in names}
        if not mapping:
            raise ValueError("FeatureHooks needs at least one module name")
        keys = list(mapping.values())
        dup = sorted({k for k in keys if keys.count(k) > 1})
        if dup:
            raise ValueError(f"FeatureHooks: feature keys {dup} are used by more than one module")
        modules = dict(model.named_modules())
        missing = [n for n in mapping if n not in modules]
        if missing:
            raise ValueError(_missing_message(missing, list(modules), type(model).__name__))
        if isinstance(select, Mapping):
            unknown = sorted(set(select) - set(keys))
            if unknown:
                raise ValueError(f"FeatureHooks: select has keys {unknown} that are not feature keys {sorted(keys)}")
        self.model = model
        self.mapping: dict[str, str] = mapping
        self.features: dict[str, Tensor] = {}
        self._select = select
        self._detach = detach
        self._handles: list = []
        for name, key in mapping.items():
            self._handles.append(modules[name].register_forward_hook(self._hook(key)))

    def _hook(self, key: str):
        sel = self._select.get(key, _first) if isinstance(self._select, Mapping) else (self._select or _first)

        def hook(module, args, output):
            value = sel(output)
            if self._detach and hasattr(value, "detach"):
                value = value.detach()
            self.features[key] = value
        return hook

    @property
    def keys(self) -> list[str]:
        return list(self.mapping.values())

    @property
    def active(self) -> bool:
        return bool(self._handles)

    def clear(self) -> None:
        """Forget the captured features (the hooks stay)."""
        self.features.clear()

    def remove(self) -> None:
        """Remove every hook (idempotent). Captured features stay readable."""
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "FeatureHooks":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.mapping}, active={self.active})"


def _missing_message(missing: list[str], names: list[str], model_name: str) -> str:
    parts = []
    for n in missing:
        close = difflib.get_close_matches(n, names, n=5, cutoff=0.5)
        if not close:  # fall back to names that share the last component or a prefix
            tail = n.rsplit(".", 1)[-1]
            close = [m for m in names if m.endswith("." + tail) or m == tail][:5]
        hint = f"similar: {', '.join(map(repr, close))}" if close else "no similar names"
        parts.append(f"{n!r} ({hint})")
    shown = ", ".join(repr(m) for m in names[:20] if m) + (", ..." if len(names) > 20 else "")
    return (f"FeatureHooks: {model_name} has no module named {'; '.join(parts)}. "
            f"Module names ({len(names)}, from model.named_modules()): {shown}")


class AttentionHooks(FeatureHooks):
    """Capture the attention probabilities of ``nn.MultiheadAttention`` modules: (B, H, T, S)
    per head (``average_heads=True``: averaged, (B, T, S)).

    A forward pre-hook (with kwargs) forces ``need_weights=True`` and
    ``average_attn_weights=average_heads`` on each call, and the forward hook stores the second
    output. Callers that ask for ``need_weights=False`` (``nn.TransformerEncoderLayer``, most
    blocks) are unaffected apart from the cost: with weights requested MHA takes its math path
    instead of the fused attention kernel — fine for distillation, not for inference. Attached
    hooks also make ``nn.TransformerEncoderLayer`` skip its inference fast path (torch checks
    for hooks), so capture works for an eval-mode teacher under ``no_grad`` too.

    MiniLM also needs the values (B, H, T, d_head), which MHA does not expose: tap a separate
    value projection with ``FeatureHooks`` and reshape it with ``split_heads``, or let a custom
    attention module return them.
    """

    def __init__(self, model: nn.Module, names: Iterable[str] | Mapping[str, str], average_heads: bool = False,
                 detach: bool = False):
        super().__init__(model, names, select=lambda out: out[1], detach=detach)
        modules = dict(model.named_modules())
        wrong = [n for n in self.mapping if not isinstance(modules[n], nn.MultiheadAttention)]
        if wrong:
            self.remove()
            found = ", ".join(f"{n!r} is {type(modules[n]).__name__}" for n in wrong)
            mha = [n for n, m in modules.items() if isinstance(m, nn.MultiheadAttention)]
            raise ValueError(f"AttentionHooks taps nn.MultiheadAttention modules only: {found}. "
                             f"MultiheadAttention modules here: {mha or 'none'}")
        self.average_heads = average_heads
        for name in self.mapping:
            self._handles.append(modules[name].register_forward_pre_hook(self._force_weights, with_kwargs=True))

    def _force_weights(self, module, args, kwargs):
        # forward(query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal)
        args = list(args)
        for idx, kw, value in ((4, "need_weights", True), (6, "average_attn_weights", self.average_heads)):
            if len(args) > idx:
                args[idx] = value
            else:
                kwargs[kw] = value
        return tuple(args), kwargs


def capture_attention(model: nn.Module, names: Iterable[str] | Mapping[str, str], *,
                      average_heads: bool = False, detach: bool = False) -> AttentionHooks:
    """``AttentionHooks(model, names)``: attention probabilities of ``nn.MultiheadAttention`` modules.

    >>> import torch
    >>> layer = torch.nn.TransformerEncoderLayer(8, 2, batch_first=True)
    >>> with capture_attention(layer, {"self_attn": "attn"}) as hooks:
    ...     _ = layer(torch.randn(1, 5, 8))
    >>> hooks.features["attn"].shape
    torch.Size([1, 2, 5, 5])
    """
    return AttentionHooks(model, names, average_heads=average_heads, detach=detach)


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, H·d) -> (B, H, T, d): per-head view of a projection output (e.g. values for MiniLM)."""
    b, t, c = x.shape
    if c % num_heads:
        raise ValueError(f"split_heads: width {c} is not divisible by num_heads={num_heads}")
    return x.reshape(b, t, num_heads, c // num_heads).transpose(1, 2)
