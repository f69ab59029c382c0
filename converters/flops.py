"""FLOPs per run of each program, counted from its exported graph at conversion time.

Each program is exported with ``torch.export`` and decomposed to core ATen; every matrix
multiply, convolution and attention node is then counted from the shapes the graph records
(``node.meta["val"]``), with PyTorch's own per-op formulas (``torch.utils.flop_counter``:
2 FLOPs per multiply-accumulate). Elementwise ops, normalisations and activations are not
counted: the figure is the model's arithmetic the way papers and vendor tools quote it. The
manifest keeps the total per program, so the torch-free runtime can report GFLOP/s.

Example::

    from edgesdk.converters.flops import count_program
    count_program(torch.nn.Linear(64, 10), (torch.randn(1, 64),))   # {'flops': 1280, ...}
"""

from __future__ import annotations

import warnings
import weakref
from collections import Counter

import torch

METHOD = ("torch.export graph decomposed to core ATen; matmul/conv/attention nodes counted with "
          "torch.utils.flop_counter's formulas (2 per multiply-accumulate); elementwise ops not counted")


def _val(a):
    if isinstance(a, torch.fx.Node):
        return a.meta.get("val")
    if isinstance(a, (list, tuple)):
        return type(a)(_val(x) for x in a)
    return a


def count_graph(graph: torch.fx.Graph) -> tuple[int, Counter]:
    """FLOPs of one fx graph whose nodes carry shape metadata; also per op."""
    from torch.utils.flop_counter import flop_registry
    total, by_op = 0, Counter()
    for node in graph.nodes:
        if node.op != "call_function":
            continue
        packet = getattr(node.target, "overloadpacket", None)
        fn = flop_registry.get(packet)
        if fn is None:
            continue
        args, kwargs = _val(node.args), {k: _val(v) for k, v in node.kwargs.items()}
        n = int(fn(*args, **kwargs, out_val=node.meta.get("val")))
        total += n
        by_op[str(packet).removeprefix("aten.")] += n
    return total, by_op


# module -> {input signature: result}: converting one model to several targets counts it once
_SEEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def count_program(module: torch.nn.Module, example_inputs: tuple) -> dict:
    sig = tuple((tuple(t.shape), str(t.dtype)) for t in example_inputs)
    try:
        seen = _SEEN.setdefault(module, {})
    except TypeError:
        seen = {}
    if sig not in seen:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.export(module, tuple(example_inputs)).run_decompositions()
        total, by_op = count_graph(ep.graph_module.graph)
        seen[sig] = {"flops": total, "by_op": dict(by_op.most_common())}
    return seen[sig]


def count(programs) -> dict:
    """The manifest entry: ``{"per_program": {name: flops}, "by_op": ..., "method": ...}``; an
    export that fails here records the error instead (a conversion never fails on counting)."""
    out: dict = {"per_program": {}, "by_op": {}, "method": METHOD}
    for p in programs:
        try:
            with torch.no_grad():
                r = count_program(p.module, p.example_inputs)
        except Exception as e:  # noqa: BLE001 - reported in the manifest, never fatal
            out.setdefault("errors", {})[p.name] = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            continue
        out["per_program"][p.name] = r["flops"]
        out["by_op"][p.name] = r["by_op"]
    return out
