"""Depthwise convolutions of more than 25 taps on ExecuTorch's XNNPACK: whole vs `SplitDepthwise`.

ExecuTorch serializes every depthwise convolution as an XNNPACK depthwise convolution, but its XNNPACK build has
depthwise kernels of up to 25 taps only and runs a larger one as a grouped IGEMM (one output channel per group).
`converters.executorch_xnnpack.split_large_depthwise` (switch ``SPLIT_LARGE_DEPTHWISE``) replaces such a
same-padded convolution by centred pieces of at most 25 taps that sum to it. For each single convolution below
(random weights, fp32) this script converts it with the switch off ("whole") and on ("split") with
`edgesdk.convert`, times both interleaved in one process (`litert_static_ops.interleaved_runs`: order rotated
every round, the same input, ``--threads``), and prints the p50s, the median of the per-round split / whole
ratios (min-max), the XNNPACK operator kinds of each (ETDump names from `runtime.profile`) and the largest
difference of the outputs.

    PYTHONPATH=. python benchmarks/xnnpack_large_depthwise.py --out /tmp/xld
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402

# (label, in channels, out channels, kernel, stride, input side): ConvNeXt's / FastViT's 7x7, EdgeNeXt's 9x9,
# a 5x5 control (25 taps: left whole), FastViT's stride-2 downsampling with a depth multiplier of 2 (not split
# since this script measured its pieces: IGEMMs too, 1.11x; the row now compares two whole convolutions)
CASES = [("5x5", 40, 40, 5, 1, 56), ("7x7", 40, 40, 7, 1, 56), ("9x9", 40, 40, 9, 1, 56),
         ("7x7 stride 2", 40, 40, 7, 2, 56), ("7x7 stride 2, 48 -> 96", 48, 96, 7, 2, 56)]


def convert(conv, x, out: Path, split: bool):
    import edgesdk
    from edgesdk.converters import executorch_xnnpack as xnn
    before = xnn.SPLIT_LARGE_DEPTHWISE
    xnn.SPLIT_LARGE_DEPTHWISE = split
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return edgesdk.convert(conv, (x,), "executorch-xnnpack", out_dir=out)
    finally:
        xnn.SPLIT_LARGE_DEPTHWISE = before


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    from edgesdk import runtime
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, executorch-xnnpack fp32, {args.threads} threads, "
          f"{args.rounds} interleaved rounds")
    print("| depthwise convolution | whole p50 ms | split p50 ms | split / whole | XNNPACK ops whole | "
          "XNNPACK ops split | max abs diff |")
    print("|---|---|---|---|---|---|---|")
    for label, cin, cout, k, stride, side in CASES:
        torch.manual_seed(0)
        conv = torch.nn.Conv2d(cin, cout, k, stride, k // 2, groups=cin).eval()
        x = torch.randn(1, cin, side, side)
        arts = {v: convert(conv, x, args.out / f"{label.replace(' ', '_')}-{v}", v == "split")
                for v in ("whole", "split")}
        sess = {v: runtime.load(a.path, threads=args.threads) for v, a in arts.items()}
        outs = {v: s.run([x.numpy()])[0] for v, s in sess.items()}
        ops = {v: ", ".join(sorted({r["op_type"].split(" #")[0] for r in runtime.profile(
            a.path, warmup=2, iters=10, threads=args.threads).ops if r["op_type"] != "DELEGATE_CALL"}))
               for v, a in arts.items()}
        # interleaved_runs divides by its "fp32" entry: here the whole convolution
        t = interleaved_runs({"fp32": lambda: sess["whole"].run([x.numpy()]),
                              "split": lambda: sess["split"].run([x.numpy()])}, args.rounds)
        diff = float(np.max(np.abs(outs["split"] - outs["whole"])))
        print(f"| {label} ({cin} x {side} x {side}) | {t['fp32'][0]:.3f} | {t['split'][0]:.3f} | "
              f"{t['split'][1]:.2f}x ({t['split'][2]:.2f}-{t['split'][3]:.2f}) | {ops['whole']} | {ops['split']} | "
              f"{diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
