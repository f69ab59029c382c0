"""Where onnx-cpu's int8 time goes, and how much int8 could win at most: ORT per-op profiles of fp32 vs int8.

#17 asks, for every zoo row whose int8 does not reach 0.7x fp32, which backend limit explains it. This
script splits one inference of the fp32 artifact and of its recommended int8 row (`zoo.py` results) by ONNX
Runtime's own profiler (`edgesdk.runtime` `op_pass`, the rows `edgesdk profile --top-ops` prints), into:

- **gemm**: the float GEMM-like kernels (MatMul, FusedMatMul, Gemm, Conv and their fused forms);
- **int8**: the integer kernels int8 put in their place (MatMulInteger, MatMulIntegerToFloat,
  DynamicQuantizeMatMul, QLinearMatMul, QLinearConv, ConvInteger, QGemm);
- **quant**: the conversions int8 adds (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear);
- **rest**: everything else (softmax, norms, activations, reshapes, gathers), the same work in both files.

and reports, per model:

- ``gemm share``: the fp32 file's GEMM kernel time over its total kernel time;
- ``bound``: the int8 / fp32 ratio if every GEMM int8 replaced were free and int8 added no
  conversion, ``1 - (gemm_fp32 - gemm_left_float) / kernels_fp32``. A bound above 0.7 means no scheme
  that only quantizes these GEMMs can reach #17's 0.7x on this backend, whatever its kernels;
- ``int8 kernels / their fp32``: the int8 kernels' time over the fp32 time of the GEMMs they replaced;
- ``quant``: the added conversions, as a share of the fp32 kernel time;
- ``measured``: the wall-clock int8 / fp32 of the two files timed interleaved (median of per-round
  ratios, min-max), without the profiler, each through the same ONNX Runtime call (`ort_runner`).

Kernel times come from the profiler (which adds a little per node); the wall ratio does not. Second table,
with ``--weight-only``: ONNX Runtime's own weight-only int8 for MatMuls (`MatMulNBitsQuantizer`, 8 bits,
symmetric, ``accuracy_level=4``: int8 activations inside the kernel), at block sizes 32 and 128, timed
interleaved against fp32 and the recommended int8 row, with the largest output difference to fp32.

    PYTHONPATH=. python benchmarks/zoo.py convert --out /tmp/z/zoo --targets onnx-cpu --schemes fp32,int8 --models bert-tiny,gpt2-tiny
    PYTHONPATH=. python benchmarks/onnx_int8_headroom.py --out /tmp/z/zoo --rounds 6 [--weight-only]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402
from benchmarks.recommended_vs_fp32 import pairs, verdict  # noqa: E402
from benchmarks.zoo import load_results  # noqa: E402

GEMM = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "Conv", "FusedConv", "NhwcFusedConv")
INT8 = ("MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "QLinearConv",
        "ConvInteger", "QGemm", "DynamicQuantizeLSTM", "MatMulNBits")
QUANT = ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")
NBITS_BLOCKS = (32, 128)


def split(rows: list[dict]) -> dict[str, float]:
    """ms per run of each class, from `aggregate_ops` rows (total_ms over ``runs`` runs, see `profile`)."""
    out = {"gemm": 0.0, "int8": 0.0, "quant": 0.0, "rest": 0.0}
    for r in rows:
        op = r["op_type"]
        cls = "gemm" if op in GEMM else "int8" if op in INT8 else "quant" if op in QUANT else "rest"
        out[cls] += r["total_ms"]
    return out


def profile_split(path: str, threads: int, runs: int):
    """(ms per run by class, the example arrays) of one artifact."""
    from edgesdk import runtime
    from edgesdk.runtime.profile import op_pass, program_runner
    sess = runtime.load(path, threads=threads)
    once, arrays, spec = program_runner(sess, None, None, 0, None, 32)
    for _ in range(3):
        once()
    rows, _, _ = op_pass(sess, spec, arrays, 0, runs)
    return {k: v / runs for k, v in split(rows).items()}, arrays


def headroom(f: dict, q: dict) -> dict:
    """The figures of one fp32 / int8 pair of class splits (ms per run)."""
    kf = sum(f.values())
    replaced = max(f["gemm"] - q["gemm"], 0.0)  # fp32 time of the GEMMs int8 took over
    return {"gemm_share": f["gemm"] / kf, "bound": 1.0 - replaced / kf,
            "kernel_ratio": q["int8"] / replaced if replaced else float("nan"),
            "quant_share": q["quant"] / kf, "profiled_ratio": sum(q.values()) / kf}


def _onnx_file(artifact: str) -> Path:
    return sorted(Path(artifact).glob("*.onnx"))[0]


def weight_only(src: Path, dst: Path, block: int) -> tuple[Path, int]:
    """ORT's MatMulNBits, 8-bit symmetric weights in blocks of ``block``, int8 compute (accuracy_level 4);
    returns the file and how many MatMulNBits nodes it has (ORT's quantizer takes MatMuls with a constant
    2-D weight only: a Gemm, e.g. GPT-2's Conv1D export, stays float)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    qz = MatMulNBitsQuantizer(onnx.load(str(src)), bits=8, block_size=block, is_symmetric=True, accuracy_level=4)
    qz.process()
    dst.parent.mkdir(parents=True, exist_ok=True)
    qz.model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst, sum(n.op_type == "MatMulNBits" for n in qz.model.model.graph.node)


def ort_runner(path: Path, threads: int, feeds: list):
    """One ONNX Runtime call of ``path`` on ``feeds``, with the runtime's session options: every file of a
    row (fp32, int8, weight-only) is timed through this same call."""
    from edgesdk.runtime.ort import inference_session, session_options
    s = inference_session(path, session_options(threads), providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in s.get_inputs()], feeds))
    return lambda: s.run(None, feed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="a zoo.py results folder (holds zoo.json)")
    ap.add_argument("--models", type=lambda s: s.split(","), default=None)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--op-runs", type=int, default=30, help="profiled runs per artifact")
    ap.add_argument("--weight-only", action="store_true", help="also time ORT's MatMulNBits 8-bit weight-only files")
    args = ap.parse_args(argv)
    import numpy as np
    res = load_results(Path(args.out))
    todo = pairs(res, args.models, ["onnx-cpu"])
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, onnx-cpu, {args.threads} threads, "
          f"{args.op_runs} profiled runs per file, {args.rounds} interleaved rounds, {len(todo)} pairs from {args.out}")
    print("| model | int8 row | fp32 kernels ms: gemm / rest | gemm share | bound (free int8 GEMMs) | "
          "int8 kernels / their fp32 | quant / fp32 kernels | profiled int8 / fp32 | measured int8 / fp32 (min-max) |")
    print("|---|---|---|---|---|---|---|---|---|")
    wo_rows, wo_lines = [], []
    for f, r in todo:
        try:
            sf, arrays = profile_split(f["path"], args.threads, args.op_runs)
            sq, _ = profile_split(r["path"], args.threads, args.op_runs)
            src = _onnx_file(f["path"])
            runs = {"fp32": ort_runner(src, args.threads, arrays),
                    "int8": ort_runner(_onnx_file(r["path"]), args.threads, arrays)}
            if args.weight_only:
                ref = runs["fp32"]()[0]
                for b in NBITS_BLOCKS:
                    p, n = weight_only(src, Path(args.out) / "weight-only" / f"{r['model']}-b{b}.onnx", b)
                    runs[f"b{b}"] = ort_runner(p, args.threads, arrays)
                    out = runs[f"b{b}"]()[0]
                    wo_rows.append((r["model"], b, float(np.abs(out - ref).max()), float(np.abs(ref).max()), n))
            t = interleaved_runs(runs, args.rounds)
        except Exception as e:  # one model's failure costs its row, not the run
            print(f"| {r['model']} | {r['scheme']} | failed: {type(e).__name__}: {str(e)[:160]} | | | | | | |", flush=True)
            continue
        h = headroom(sf, sq)
        ratio, lo, hi = t["int8"][1:]
        print(f"| {r['model']} | {r['scheme']} | {sf['gemm']:.3f} / {sf['rest'] + sf['quant'] + sf['int8']:.3f} | "
              f"{h['gemm_share']:.0%} | {h['bound']:.2f}x | {h['kernel_ratio']:.2f}x | {h['quant_share']:.0%} | "
              f"{h['profiled_ratio']:.2f}x | {ratio:.2f}x ({lo:.2f}-{hi:.2f}) {verdict(ratio, lo, hi)} |", flush=True)
        if args.weight_only:
            errs = {b: (e, m, n) for mm, b, e, m, n in wo_rows if mm == r["model"]}
            wo_lines.append(f"| {r['model']} | {t['fp32'][0]:.3f} | {r['scheme']} {ratio:.2f}x ({lo:.2f}-{hi:.2f}) | " + " | ".join(
                f"{t[f'b{b}'][1]:.2f}x ({t[f'b{b}'][2]:.2f}-{t[f'b{b}'][3]:.2f}) {verdict(*t[f'b{b}'][1:])}, "
                f"{errs[b][2]} MatMulNBits, max diff {errs[b][0]:.1e} (outputs up to {errs[b][1]:.2f})" for b in NBITS_BLOCKS) + " |")
    if wo_lines:
        print("\nWeight-only int8 (MatMulNBits, 8 bits, symmetric, accuracy_level 4) against fp32, same rounds:\n")
        print("| model | fp32 p50 ms | recommended / fp32 | " + " | ".join(f"block {b} / fp32" for b in NBITS_BLOCKS) + " |")
        print("|---|---|---|" + "---|" * len(NBITS_BLOCKS))
        print("\n".join(wo_lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
