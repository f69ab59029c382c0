"""FLOPs per run of each program, counted at conversion time.

Each program runs once, eagerly, on its example inputs under PyTorch's own counter
(``torch.utils.flop_counter.FlopCounterMode``: 2 FLOPs per multiply-accumulate, per ATen op).
Attention is counted as the matmuls it is made of: scaled-dot-product attention runs on its math
kernel and ``nn.MultiheadAttention``'s fused inference path is off while counting (the fused CPU
kernels have no formula and would count 0). Elementwise ops, normalisations and activations are not
counted: the figure is the model's arithmetic the way papers and vendor tools quote it. The
manifest keeps the total per program, so the torch-free runtime can report GFLOP/s.

Until 2026-12-04 each program was exported with ``torch.export`` and decomposed to core ATen
for the count. `benchmarks/flops_count.py` compares the two on 28 programs (the test models, the
shipped teacher's and two students' programs, 16 zoo architectures from ResNet-18 to Whisper and
LeViT): the same totals on 27, at 0.5-7.4 s of export per program against 2-420 ms of one forward
pass. The other is MiniLM, the shipped sentence encoder, which runs the Hugging Face model and
discards its pooler output: work whose result the module throws away is counted here (the pooler,
2·384² = 294,912 FLOPs, 0.04%), where an export dropped it.

Example::

    from edgesdk.converters.flops import count_program
    count_program(torch.nn.Linear(64, 10), (torch.randn(1, 64),))   # {'flops': 1280, ...}
"""

from __future__ import annotations

import weakref

import torch

METHOD = ("one eager forward under torch.utils.flop_counter.FlopCounterMode, attention on its math kernel; "
          "matmul/conv/attention ops counted with its formulas (2 per multiply-accumulate); elementwise ops not counted")


# module -> {input signature: result}: converting one model to several targets counts it once
_SEEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _count_eager(module: torch.nn.Module, example_inputs: tuple) -> tuple[int, dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            module(*example_inputs)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    by_op = {str(op).removeprefix("aten."): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), dict(sorted(by_op.items(), key=lambda kv: -kv[1]))


def count_program(module: torch.nn.Module, example_inputs: tuple) -> dict:
    sig = tuple((tuple(t.shape), str(t.dtype)) for t in example_inputs)
    try:
        seen = _SEEN.setdefault(module, {})
    except TypeError:
        seen = {}
    if sig not in seen:
        total, by_op = _count_eager(module, tuple(example_inputs))
        seen[sig] = {"flops": total, "by_op": by_op}
    return seen[sig]


def count(programs) -> dict:
    """The manifest entry: ``{"per_program": {name: flops}, "by_op": ..., "method": ...}``; a
    program that fails to run here records the error instead (a conversion never fails on counting)."""
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
