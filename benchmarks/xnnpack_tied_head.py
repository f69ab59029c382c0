"""A tied output head on ExecuTorch XNNPACK: fp32 weight vs the embedding's int8 rows, size and time per call.

One `.pte` per variant holding only the head (``x (1, D) -> logits (1, V)``, the generation step's
last layer; default V x D = 260 x 128, the Mamba student's table), lowered with one XnnpackPartitioner:

- ``fp32 linear``: ``nn.Linear`` with the table as an fp32 parameter (what a tied head kept float is;
  the dequantized rows here, so that the logit column compares the same maths);
- ``int8 rows, cast + linear``: ``F.linear(x, rows.to(float32)) * scale``: the cast and the matmul
  with a non-parameter weight stay on ExecuTorch's portable kernels;
- ``int8 rows, dequantize + bmm`` (`embedding_rows.Int8RowHead`, what the converter ships): both
  delegated.

Time: the pybinding's method call, median over interleaved rounds (every variant in every round).

    cpu-shared python benchmarks/xnnpack_tied_head.py --markdown
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


def main(argv=None) -> int:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgesdk.converters.executorch_xnnpack import delegation_report
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vocab", type=int, default=260)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--calls", type=int, default=500, help="method calls per round")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    table = Int8RowEmbedding(nn.Embedding(args.vocab, args.dim))
    x = torch.randn(1, args.dim)
    variants = {"fp32 linear": _Fp32(table), "int8 rows, cast + linear": _Cast(table),
                "int8 rows, dequantize + bmm": Int8RowHead(table)}
    methods, info, keep = {}, {}, []
    for name, m in variants.items():
        edge = to_edge_transform_and_lower({"forward": torch.export.export(m.eval(), (x,))},
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
    rows = [[n, f"{info[n][0]:,}", info[n][1], f"{np.median(t[1:]):.1f}", f"{np.median(t[1:]) / ref:.2f}x",
             f"{info[n][2]:.2e}"] for n, t in times.items()]
    print(f"tied head {args.vocab} x {args.dim} on ExecuTorch XNNPACK, 1 row; median of {args.rounds} interleaved "
          f"rounds x {args.calls} calls")
    print(text_table(["head", ".pte bytes", "ops outside the delegate", "us / call", "vs fp32", "max |logit - fp32 linear|"],
                     rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
