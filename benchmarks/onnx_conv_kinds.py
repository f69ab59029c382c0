"""ONNX Runtime CNNs: where int8-static convolutions gain and lose, per kind of convolution.

For each zoo model with an fp32 and an int8-static onnx-cpu row in a `benchmarks/zoo.py` results folder,
one ONNX Runtime profile of each file (``--runs`` runs after 20 warm-up ones, 2 threads, the same random
input) gives every convolution's kernel time; the fp32 file's Conv / FusedConv / NhwcFusedConv events and
the int8 file's QLinearConv events are matched by execution order (both follow the fp32 graph's order, so
a model where the counts differ is skipped), and summed per kind of convolution in the fp32 graph:
``stem`` (not grouped, <= 4 input channels), ``dwKxK`` (depthwise), ``groupedKxK``, ``pw1x1`` (pointwise),
``fullKxK`` (the rest). Prints microseconds per run and int8 / fp32 per kind. Matching by order assumes both
runs visit the convolutions in the same order: on a model with parallel branches (ResNet's downsampling
shortcut) two of them may swap, which moves time between kinds, not the totals.

    PYTHONPATH=. python benchmarks/zoo.py convert --out /tmp/z/zoo --targets onnx-cpu --schemes fp32,int8 --models mnasnet0_5
    PYTHONPATH=. python benchmarks/onnx_conv_kinds.py --out /tmp/z/zoo --models mnasnet0_5
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.onnx_static_ops import _inputs, _session  # noqa: E402
from benchmarks.zoo import load_results  # noqa: E402

FP32_CONVS = {"Conv", "FusedConv", "NhwcFusedConv"}


def conv_times(path: str, ops: set[str], runs: int, threads: int, warmup: int = 20) -> list[float]:
    """Microseconds per run of each convolution event, in execution order: one ORT profile of ``warmup``
    + ``runs`` runs, the last ``runs`` of each event averaged."""
    s = _session(Path(path), threads, profile_prefix=str(Path(tempfile.gettempdir()) / f"conv_kinds_{os.getpid()}"))
    feed = _inputs(s, 0)
    for _ in range(warmup + runs):
        s.run(None, feed)
    prof = Path(s.end_profiling())
    events = json.loads(prof.read_text())
    prof.unlink()
    durations: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e.get("args", {}).get("op_name") in ops:
            durations.setdefault(e["name"], []).append(e["dur"])
    return [sum(d[-runs:]) / runs for d in durations.values()]  # dicts keep the first-seen (execution) order


def conv_kinds(path: str) -> list[tuple[str, str]]:
    """(node name, kind) of each Conv node of an fp32 ONNX file, in graph order: ``stem`` (not grouped, <= 4
    input channels), ``dwKxK``, ``groupedKxK``, ``pw1x1`` or ``fullKxK``."""
    import onnx
    g = onnx.load(path).graph
    dims = {i.name: list(i.dims) for i in g.initializer}
    out = []
    for n in g.node:
        if n.op_type != "Conv" or len(dims.get(n.input[1], ())) != 4:
            continue
        w = dims[n.input[1]]
        group = next((a.i for a in n.attribute if a.name == "group"), 1)
        k = "x".join(str(d) for d in w[2:])
        out.append((n.name, "stem" if group == 1 and w[1] <= 4 else f"dw{k}" if group > 1 and w[1] == 1
                    else f"grouped{k}" if group > 1 else "pw1x1" if all(d == 1 for d in w[2:]) else f"full{k}"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="a zoo.py results folder (holds zoo.json)")
    ap.add_argument("--models", type=lambda s: s.split(","), default=None)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    rows = load_results(Path(args.out))["rows"]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.runs} profiled runs, "
          f"{args.out}")
    print("| model | kind | convolutions | fp32 us per run | int8-static us per run | int8 / fp32 |")
    print("|---|---|---|---|---|---|")
    for key, q in sorted(rows.items()):
        m = q["model"]
        if q["target"] != "onnx-cpu" or q["scheme"] != "int8-static" or not q.get("path"):
            continue
        if args.models and m not in args.models:
            continue
        f = rows.get(f"{m}|onnx-cpu|fp32")
        if not f or not f.get("path"):
            continue
        fp32, int8 = (str(Path(r["path"]) / "model.onnx") for r in (f, q))
        kinds = [kind for _, kind in conv_kinds(fp32)]
        a, b = conv_times(fp32, FP32_CONVS, args.runs, args.threads), conv_times(int8, {"QLinearConv"}, args.runs,
                                                                                 args.threads)
        if not len(kinds) == len(a) == len(b):
            print(f"| {m} | skipped: {len(kinds)} Conv nodes, {len(a)} fp32 and {len(b)} int8 convolution events | | | | |")
            continue
        agg: dict[str, list] = {}
        for k, x, y in zip(kinds, a, b):
            s = agg.setdefault(k, [0, 0.0, 0.0])
            s[0] += 1
            s[1] += x
            s[2] += y
        for k, (n, x, y) in sorted(agg.items()):
            print(f"| {m} | {k} | {n} | {x:.1f} | {y:.1f} | {y / x:.2f}x |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
