"""A tied output head on ExecuTorch XNNPACK: fp32 weight vs the embedding's int8 rows, size and time per call.

One `.pte` per variant holding only the head (``x (1, D) -> logits (1, V)``, the generation step's
last layer; default V x D = 260 x 128, the Mamba student's table), lowered with one XnnpackPartitioner:

- ``fp32 linear``: ``nn.Linear`` with the table as an fp32 parameter (what a tied head kept float is;
  the dequantized rows here, so that the logit column compares the same maths);
- ``int8 rows, cast + linear``: ``F.linear(x, rows.to(float32)) * scale``: the cast and the matmul
  with a non-parameter weight stay on ExecuTorch's portable kernels;
- ``int8 rows, dequantize + bmm`` (`embedding_rows.Int8RowHead`, what the converter ships for a small
  table): both delegated;
- ``own int8 weights, dynamic`` (what the converter ships for a large table): ``nn.Linear`` with its own
  copy of the table, quantized as the other linears of `int8-dynamic` are (XNNPACKQuantizer, int8
  per-channel weights, int8 dynamic activations): XNNPACK's packed int8 fully connected kernel, at the
  price of a second int8 copy of the table in the file.

The Int8RowHead dequantizes the whole V x D table and packs it for the matmul on every call, so its
cost grows with the table, where a linear's weights are packed once at load. ``--sizes`` sweeps tables
(VxD, comma-separated) and ``--tokens`` the rows per call (1: a decode step; more: a prefill or a whole
sequence scored at once, as a zoo model's forward does).

Time: the pybinding's method call, median over interleaved rounds (every variant in every round).

    cpu-shared python benchmarks/xnnpack_tied_head.py --markdown
    python benchmarks/xnnpack_tied_head.py --sizes 260x128,4096x256,32000x512 --tokens 1,32 --markdown
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from edgesdk.converters.embedding_rows import Int8RowEmbedding, Int8RowHead  # noqa: E402
from runtime_overhead import text_table  # noqa: E402


class _Fp32(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.head = nn.Linear(table.embedding_dim, table.num_embeddings, bias=False)
        self.head.weight = nn.Parameter(table.weight.detach().clone())

    def forward(self, x):
        return self.head(x)


class _Cast(nn.Module):
    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, x):
        return F.linear(x, self.table.rows.to(torch.float32)) * self.table.scale.reshape(-1)


def _own_int8(table, x):
    """The head as an ``nn.Linear`` with its own copy of the table, int8-dynamic as the converter quantizes
    a single program's linears (XNNPACKQuantizer through torchao's PT2E flow)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    from edgesdk.converters.executorch_xnnpack import xnnpack_quantizer
    gm = torch.export.export(_Fp32(table).eval(), (x,)).module()
    prep = prepare_pt2e(gm, xnnpack_quantizer("int8-dynamic", []))
    with torch.no_grad():
        prep(x)
    return convert_pt2e(prep)


def one_size(vocab: int, dim: int, tokens: int, args) -> list[list[str]]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgesdk.converters.executorch_xnnpack import delegation_report
    torch.manual_seed(0)
    table = Int8RowEmbedding(nn.Embedding(vocab, dim))
    x = torch.randn(tokens, dim)
    variants = {"fp32 linear": _Fp32(table).eval(), "int8 rows, cast + linear": _Cast(table).eval(),
                "int8 rows, dequantize + bmm": Int8RowHead(table).eval(), "own int8 weights, dynamic": _own_int8(table, x)}
    if args.skip_cast:
        variants.pop("int8 rows, cast + linear")
    methods, info, keep = {}, {}, []
    for name, m in variants.items():
        edge = to_edge_transform_and_lower({"forward": torch.export.export(m, (x,))},
                                           partitioner=[XnnpackPartitioner()])
        outside = [r["op"] for r in delegation_report(edge, "forward")["outside_delegate"]]
        buf = edge.to_executorch().buffer
        keep.append(buf)  # the loaded program reads this buffer: keep it alive
        methods[name] = Runtime.get().load_program(buf).load_method("forward")
        with torch.no_grad():
            err = float((methods[name].execute([x])[0] - variants["fp32 linear"](x)).abs().max())
        info[name] = (len(buf), ", ".join(outside) or "none", err)
    times = {n: [] for n in methods}
    for _ in range(args.rounds + 1):          # round 0 warms up
        for name, meth in methods.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                meth.execute([x])
            times[name].append((time.perf_counter() - t0) / args.calls * 1e6)
    ref = np.median(times["fp32 linear"][1:])
    return [[f"{vocab} x {dim}", str(tokens), n, f"{info[n][0]:,}", info[n][1], f"{np.median(t[1:]):.1f}",
             f"{np.median(t[1:]) / ref:.2f}x", f"{info[n][2]:.2e}"] for n, t in times.items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="260x128", help="tables V x D, comma-separated (default: the Mamba student's)")
    ap.add_argument("--tokens", default="1", help="rows per call, comma-separated")
    ap.add_argument("--calls", type=int, default=500, help="method calls per round (fewer for large tables)")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--skip-cast", action="store_true", help="leave out the cast + linear variant (portable kernels)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    for size in args.sizes.split(","):
        vocab, dim = (int(v) for v in size.lower().split("x"))
        for tokens in (int(t) for t in args.tokens.split(",")):
            rows += one_size(vocab, dim, tokens, args)
    print(f"a tied head on ExecuTorch XNNPACK; median of {args.rounds} interleaved rounds x {args.calls} calls, "
          f"{torch.get_num_threads()} torch threads")
    print(text_table(["table V x D", "tokens", "head", ".pte bytes", "ops outside the delegate", "us / call",
                      "vs fp32", "max |logit - fp32 linear|"], rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
