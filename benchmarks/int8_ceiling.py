"""How far can int8 go on each zoo model? The GEMM share of the fp32 run bounds every int8 scheme (#17).

int8 makes matrix products faster (fully connected layers, convolutions, MatMul); the rest of a
model (LayerNorm, softmax, GELU, reshapes and copies, the runtime's own per-op overhead) runs in
float, or in int8 kernels no faster than float ones, on the CPU backends here. So if matrix products
take a share ``p`` of the fp32 run, no int8 scheme can be faster than ``1 - p`` of fp32 (Amdahl's
law, with the matrix products made free). A model with ``1 - p > 0.7`` cannot reach #17's
``<= 0.7x fp32`` bar on that backend and host, whatever its recipe.

Reads a `benchmarks/zoo.py` results folder (``--out`` of ``zoo.py convert``). For each model x
target with an fp32 artifact and an int8 row (the recommended one; ``--every-scheme`` also the other
quantized rows, and the fastest one is reported):

1. the fp32 and int8 artifacts timed interleaved in one process (`recommended_vs_fp32.py`'s
   mechanics: ``--rounds`` rounds, order rotated every round, the same inputs, ``--threads``); with
   several int8 rows the fastest is picked from those same rounds, which favours int8 by the noise;
2. one `runtime.profile` per artifact with the backend's per-op pass (ONNX Runtime's profiler,
   ExecuTorch's ETDump with XNNPACK's per-kernel events). Ops are "GEMM" (matrix products:
   `GEMM_OPS` and XNNPACK's Fully Connected / Convolution / Batch Matrix Multiply kernels) or the
   rest. The denominator is the larger of the per-op sum and the p50 (time outside ops counts as
   "rest": int8 does not shorten it).

Columns: the measured int8 / fp32 (median of per-round ratios, min-max); the GEMM share ``p`` of
fp32; the floor ``1 - p``; the GEMM speedup that 0.7x needs with everything else unchanged,
``p / (p - 0.3)``; the speedup the int8 row's GEMMs got (fp32 GEMM time / int8 GEMM time); the int8
row's time outside GEMMs over fp32's (quantize / convert ops and float ops between int8 ones); the
row's default-gate status from the zoo (random weights: "ok" does not score accuracy); the verdict:
"cannot" (the floor is above 0.7), else what falls short: the GEMM kernels, time added outside them,
or both; and, with ``--every-scheme``, the other int8 rows' ratios from the same rounds with their gate
status. A row the default gate rejected and ``zoo.py repair`` made pass (`auto_fallback`: its most
sensitive layers float) is one more candidate, ``<scheme>+fallback``, gate "ok". LiteRT's Python API has no
per-op timings, so litert-cpu rows get the measured ratio only.

    PYTHONPATH=. python benchmarks/zoo.py convert --out /tmp/z/zoo --schemes fp32,int8
    PYTHONPATH=. python benchmarks/int8_ceiling.py --out /tmp/z/zoo --targets onnx-cpu,executorch-xnnpack --rounds 8
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inverted_residuals import kernel_kind  # noqa: E402
from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402
from benchmarks.recommended_vs_fp32 import pair_arguments, pairs, runner  # noqa: E402
from benchmarks.zoo import load_results  # noqa: E402

BAR = 0.7  # #17: best int8 p50 <= 0.7x fp32
# ONNX Runtime op types that are matrix products, float or integer (after its graph optimizations). A fused
# Attention also holds its softmax: counting it whole overstates the GEMM share, which only lowers the floor.
GEMM_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose", "FusedMatMul", "FusedConv", "FusedGemm", "NhwcFusedConv",
            "QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "DynamicQuantizeMatMul",
            "MatMulIntegerToFloat", "QGemm", "MatMulNBits", "QAttention", "Attention"}
# XNNPACK kernels (ExecuTorch's per-kernel events) and portable ATen ops that are matrix products.
GEMM_KERNELS = re.compile(r"^(Fully Connected|Convolution|Deconvolution|Batch Matrix Multiply)|"
                          r"^(aten::)?(mm|bmm|addmm|linear|convolution|matmul)(\.|$)", re.I)
PER_OP = ("onnx-cpu", "executorch-xnnpack")


def is_gemm(target: str, op_type: str) -> bool:
    if target == "onnx-cpu":
        return op_type in GEMM_OPS
    return bool(GEMM_KERNELS.match(kernel_kind(op_type)))


def split_time(path: str, target: str, threads: int, iters: int) -> dict:
    """{gemm, rest, total} in ms per run from one profile with the backend's per-op pass."""
    from edgesdk import runtime
    rep = runtime.profile(path, iters=iters, threads=threads, per_op=True, isolate=False)
    ops = [o for o in rep.ops if o["op_type"] != "DELEGATE_CALL"]
    per_run = {o["name"]: o["mean_ms"] * o["calls"] for o in ops}
    gemm = sum(per_run[o["name"]] for o in ops if is_gemm(target, o["op_type"]))
    total = max(sum(per_run.values()), rep.p50_ms)
    kinds: dict[str, float] = {}
    for o in ops:  # ONNX Runtime op types; XNNPACK kernels without their "#n" and operand types
        k = o["op_type"] if target == "onnx-cpu" else kernel_kind(o["op_type"])
        kinds[k] = kinds.get(k, 0.0) + per_run[o["name"]]
    return {"gemm": gemm, "rest": total - gemm, "total": total, "kinds": kinds}


def top_kinds(split: dict, n: int) -> str:
    """The ``n`` op kinds with the most time per run, as ``kind ms``."""
    top = sorted(split["kinds"].items(), key=lambda kv: -kv[1])[:n]
    return ", ".join(f"{k} {ms:.3f}" for k, ms in top)


def verdict(measured: float, a: dict | None, q: dict | None) -> str:
    """Why a row misses 0.7x, from the fp32 (``a``) and int8 (``q``) splits."""
    if measured <= BAR:
        return "meets 0.7x"
    if a is None:
        return "misses (no per-op timings)"
    p = a["gemm"] / a["total"]
    if 1.0 - p > BAR:
        return "cannot: GEMMs too small a share"
    short = []
    if q["gemm"] > 0 and a["gemm"] / q["gemm"] < needed_speedup(p):
        short.append("GEMM kernels gain too little")
    if q["rest"] > a["rest"] * 1.1:
        short.append("time added outside GEMMs")
    return " + ".join(short) or "misses (per-op and wall time disagree)"


def needed_speedup(p: float) -> float:
    """GEMM speedup that brings a model whose GEMMs are ``p`` of its time to BAR, the rest unchanged."""
    return p / (p - (1.0 - BAR)) if p > 1.0 - BAR else float("inf")


def main(argv=None) -> int:
    ap = pair_arguments(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--iters", type=int, default=30, help="timed runs of each per-op profile")
    ap.add_argument("--by-kernel", type=int, default=0, metavar="N",
                    help="also print, per pair, the N op kinds (ORT op types, XNNPACK kernels) with the most ms per run")
    ap.add_argument("--every-scheme", action="store_true",
                    help="time every quantized row of a model x target and report the fastest")
    args = ap.parse_args(argv)
    from benchmarks.zoo_models import enable_zoo_packages
    enable_zoo_packages()
    res = load_results(Path(args.out))
    by_pair: dict[tuple, list] = {}
    for f, r in pairs(res, args.models, args.targets, args.every_scheme):
        by_pair.setdefault((r["model"], r["target"]), [f]).append(r)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          f"rounds, {len(by_pair)} model x target pairs from {args.out}")
    print("| model | target | int8 row | int8 / fp32 (min-max) | fp32 p50 ms | GEMM share of fp32 | floor (GEMMs free) "
          "| GEMM speedup 0.7x needs | int8 GEMM speedup | int8 / fp32 outside GEMMs | gate | verdict | other int8 rows |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    counts: dict[str, dict[str, int]] = {}
    kernels: list[str] = []
    for (model, target), (f, *rows) in sorted(by_pair.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        try:
            runs = {"fp32": runner(f["path"], args.threads)}
            runs.update({r["scheme"]: runner(r["path"], args.threads) for r in rows})
            t = interleaved_runs(runs, args.rounds)
            best = min(rows, key=lambda r: t[r["scheme"]][1])
            ratio, lo, hi = t[best["scheme"]][1:]
            a = q = None
            cells = ["-"] * 5
            if target in PER_OP:
                a = split_time(f["path"], target, args.threads, args.iters)
                q = split_time(best["path"], target, args.threads, args.iters)
                p = a["gemm"] / a["total"]
                need = needed_speedup(p)
                cells = [f"{p:.0%}", f"{1.0 - p:.2f}x", "none reaches it" if need == float("inf") else f"{need:.1f}x",
                         f"{a['gemm'] / q['gemm']:.1f}x" if q["gemm"] else "-", f"{q['rest'] / a['rest']:.2f}x"]
        except Exception as e:  # one model's failure costs its row, not the run
            print(f"| {model} | {target} | | failed: {type(e).__name__}: {str(e)[:120]} |" + " |" * 9, flush=True)
            continue
        v = verdict(ratio, a, q)
        for key in (v, f"gate {best.get('status')}" if ratio <= BAR else None):
            if key:
                counts.setdefault(target, {}).setdefault(key, 0)
                counts[target][key] += 1
        print(f"| {model} | {target} | {best['scheme']} | {ratio:.3f}x ({lo:.2f}-{hi:.2f}) | {t['fp32'][0]:.3f} | "
              + " | ".join(cells) + f" | {best.get('status')} | {v} | "
              + (", ".join(f"{r['scheme']} {t[r['scheme']][1]:.3f}x ({r.get('status')})" for r in rows if r is not best)
                 or "-") + " |", flush=True)
        if args.by_kernel and a is not None:
            kernels.append(f"| {model} | {target} | fp32: {top_kinds(a, args.by_kernel)} | "
                           f"{best['scheme']}: {top_kinds(q, args.by_kernel)} |")
    if kernels:
        print("\n| model | target | fp32: ms per run by op kind (one profile) | int8 row: the same |\n|---|---|---|---|")
        print("\n".join(kernels))
    kinds = sorted({v for c in counts.values() for v in c})
    print("\n| target | pairs | " + " | ".join(k.replace("gate ", "of the 0.7x rows, gate ") for k in kinds) + " |")
    print("|---|---|" + "---|" * len(kinds))
    for target, c in sorted(counts.items()):
        pairs_n = sum(v for k, v in c.items() if not k.startswith("gate "))
        print(f"| {target} | {pairs_n} | " + " | ".join(str(c.get(k, 0)) for k in kinds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
