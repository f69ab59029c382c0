"""Embedding tables as int8 rows in torch programs (ExecuTorch), and which heads share a table.

ExecuTorch's XNNPACK delegate has no gather, so an ``nn.Embedding`` runs on ExecuTorch's portable
kernels and its table is stored beside the delegate, in fp32, even when every linear layer is int8.
A language model's embedding is often tied to its output head: the int8 ``.pte`` then held the
table twice (an fp32 copy for the lookup and an int8 copy for the head).

`int8_rows` swaps every plain ``nn.Embedding`` of a module (a copy) for `Int8RowEmbedding`, which stores the
table as int8 with one fp32 scale per row (symmetric, what the int8 head quantizer does per output
channel) and dequantizes only the rows it looks up; the same maths as onnx-cpu's int8 Gather
(`converters.onnx_weights`). `tied_heads` names the ``nn.Linear`` layers that share an embedding's
weight, so a caller can keep them in float.

>>> import torch
>>> emb = torch.nn.Embedding(300, 64)
>>> m, report = int8_rows(torch.nn.Sequential(emb))
>>> report
[{'module': '0', 'shape': [300, 64], 'lookup': 'int8 rows, one fp32 scale per row'}]
>>> ids = torch.tensor([[1, 2, 299]])
>>> bool((m(ids) - emb(ids)).abs().max() < emb.weight.abs().max() / 127)
True
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

MIN_TABLE_ELEMENTS = 1024  # below this a table is too small to matter


class Int8RowEmbedding(nn.Module):
    """``ids (...) -> (..., D)``: an embedding table (V, D) held as int8 rows, one scale per row."""

    def __init__(self, emb: nn.Embedding):
        super().__init__()
        w = emb.weight.detach().float()                                           # (V, D)
        scale = (w.abs().amax(1, keepdim=True) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # (V, 1)
        self.register_buffer("rows", torch.round(w / scale).clamp(-127, 127).to(torch.int8))       # (V, D)
        self.register_buffer("scale", scale)
        # what model code reads from an nn.Embedding besides calling it
        self.num_embeddings, self.embedding_dim, self.padding_idx = emb.num_embeddings, emb.embedding_dim, emb.padding_idx

    @property
    def weight(self) -> torch.Tensor:
        """The whole table, dequantized (V, D): for model code that slices ``.weight`` instead of
        calling the embedding (e.g. learned positions read as ``embed_positions.weight[:n]``)."""
        return self.rows.to(torch.float32) * self.scale

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.rows).to(torch.float32) * F.embedding(ids, self.scale)


class Int8RowHead(nn.Module):
    """``x (..., D) -> logits (..., V)``: an output head tied to an `Int8RowEmbedding`, reading its int8
    rows (one table in the file, not an int8 copy beside it). Weight-only int8: the activations stay
    fp32, and each row's scale multiplies the logit after the matmul (``x @ (q * s)ᵀ = (x @ qᵀ) * sᵀ``).

    Written for ExecuTorch's XNNPACK delegate: the int8 -> fp32 step is a standalone dequantize (scale
    1, exact) and the product a ``bmm``, both of which the delegate takes with a non-parameter operand;
    a dtype cast runs on the portable kernels (3-5x slower per call for a 260 x 128 table,
    `benchmarks/xnnpack_tied_head.py`), and a ``linear`` is delegated only with a parameter weight."""

    def __init__(self, table: Int8RowEmbedding):
        super().__init__()
        import torchao.quantization.pt2e  # noqa: F401  (registers torch.ops.quantized_decomposed)
        self.table = table  # shared with the lookup: its buffers are stored once

    @property
    def weight(self) -> torch.Tensor:
        """The table, dequantized (V, D): for model code that reads the head's ``.weight`` (transformers'
        MambaForCausalLM casts to ``lm_head.weight.dtype``; without it the zoo's mamba-tiny failed to
        convert with an AttributeError). ``forward`` does not use it."""
        return self.table.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        V, D = self.table.rows.shape
        q = torch.ops.quantized_decomposed.dequantize_per_tensor.default(
            self.table.rows, 1.0, 0, -127, 127, torch.int8)                                   # (V, D), exact
        rows = x.reshape(-1, D)                                                               # (N, D)
        logits = torch.bmm(q.reshape(1, V, D), rows.t().reshape(1, D, -1)).reshape(V, -1).t()  # (N, V)
        return (logits * self.table.scale.reshape(-1)).reshape(*x.shape[:-1], V)


def _swappable(m: nn.Module) -> bool:
    """A plain ``nn.Embedding`` whose lookup is the whole of its maths: subclasses with their own
    ``forward`` (scaled word embeddings, learned positions taking ``position_ids``) and ``max_norm``
    tables (renormalised at lookup) keep their module and fp32 table."""
    return type(m) is nn.Embedding and m.max_norm is None and m.weight.numel() >= MIN_TABLE_ELEMENTS


def tied_heads(module: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers whose weight is an ``nn.Embedding``'s (a tied output head)."""
    tables = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear) and id(m.weight) in tables]


def int8_rows(module: nn.Module, exclude=(), heads: str = "float") -> tuple[nn.Module, list[dict]]:
    """A copy of ``module`` whose embeddings (of at least `MIN_TABLE_ELEMENTS`, not under ``exclude``
    module names) read int8 rows (`Int8RowEmbedding`) -> (copy, [{module, shape, lookup}]).

    A bias-free head tied to a swapped table: ``heads="float"`` keeps its fp32 weight (the tie is gone
    in the copy: the head owns it); ``heads="int8-rows"`` makes it an `Int8RowHead` reading the same
    int8 rows (reported as {module, shape, head: ...})."""
    def excluded(name):
        return any(name == e or name.startswith(e + ".") for e in exclude or ())
    names = [n for n, m in module.named_modules() if _swappable(m) and not excluded(n)]
    if not names:
        return module, []
    tied = {id(m.weight): n for n, m in module.named_modules()
            if isinstance(m, nn.Linear) and m.bias is None and not excluded(n)} if heads == "int8-rows" else {}
    head_of = {name: tied.get(id(module.get_submodule(name).weight)) for name in names}
    out = copy.deepcopy(module)
    report = []
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = out.get_submodule(parent) if parent else out
        emb = getattr(owner, leaf)
        table = Int8RowEmbedding(emb)
        setattr(owner, leaf, table)
        report.append({"module": name, "shape": list(emb.weight.shape), "lookup": "int8 rows, one fp32 scale per row"})
        if head_of[name]:
            hp, _, hl = head_of[name].rpartition(".")
            setattr(out.get_submodule(hp) if hp else out, hl, Int8RowHead(table))
            report.append({"module": head_of[name], "shape": list(emb.weight.shape),
                           "head": f"reads {name}'s int8 rows, fp32 activations"})
    return out, report
