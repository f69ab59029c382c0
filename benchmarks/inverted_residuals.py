"""Inverted-residual CNNs without int8 dot-product instructions: the rule's input and the kernels behind it.

``share``: for each zoo model (`benchmarks/zoo_models.py`, random weights), its depthwise convolutions, how many
read a 1x1 convolution that widens its input at least `recipes.INVERTED_RESIDUAL_EXPANSION` times
(`recipes.inverted_residual_share`), and what `recipes.recommendation` deploys on executorch-xnnpack and
litert-cpu for a deployment CPU with int8 dot-product instructions (``EDGESDK_CPU_INT8_DOT=1``) and without (``0``)::

    PYTHONPATH=. python benchmarks/inverted_residuals.py share --models mobilenet_v2,ghostnet_100,shufflenet_v2_x1_0

``kernels``: where an fp32 and an int8 ExecuTorch artifact of one model spend their time, per XNNPACK kernel kind
(each pair ``NAME=FP32_DIR=INT8_DIR``; one `edgesdk profile` per artifact, in-process runtime, ``--threads``,
``--iters`` timed runs and the backend's per-op pass; op names without their ``#N`` index and layout), with each
side's p50::

    PYTHONPATH=. python benchmarks/inverted_residuals.py kernels mbv2=/tmp/z/mobilenet_v2-fp32=/tmp/z/mobilenet_v2-dw-int8
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("executorch-xnnpack", "litert-cpu")


def share(models: list[str]) -> None:
    from benchmarks.zoo import _build_once
    from benchmarks.zoo_models import enable_zoo_packages
    from edgesdk.converters import recipes
    enable_zoo_packages()
    print("| model | depthwise convs | fed by a widening 1x1 | share | " + " | ".join(
        f"{t} with / without int8 dot" for t in TARGETS) + " |")
    print("|---|---|---|---|" + "---|" * len(TARGETS))
    before = os.environ.get("EDGESDK_CPU_INT8_DOT")
    try:
        for name in models:
            model = _build_once(name)[0]
            fed, dw = recipes.inverted_residual_counts(model)
            picks = []
            for t in TARGETS:
                got = []
                for dot in ("1", "0"):
                    os.environ["EDGESDK_CPU_INT8_DOT"] = dot
                    got.append(recipes.recommended_scheme(t, model))
                picks.append(" / ".join(got))
            print(f"| {name} | {dw} | {fed} | {recipes.inverted_residual_share(model):.2f} | " + " | ".join(picks)
                  + " |", flush=True)
    finally:
        if before is None:
            os.environ.pop("EDGESDK_CPU_INT8_DOT", None)
        else:
            os.environ["EDGESDK_CPU_INT8_DOT"] = before


def kernel_kind(op_type: str) -> str:
    """'Convolution (NHWC, QC8) DWConv #3' -> 'Convolution DWConv'."""
    k = re.sub(r"\s*#\d+$", "", op_type)
    return re.sub(r"\s+", " ", re.sub(r"\((?:NC|NHWC|ND)[^)]*\)", "", k)).strip()


def kernels(pairs: list[str], threads: int, iters: int) -> None:
    from edgesdk import runtime
    for spec in pairs:
        name, fp32, int8 = spec.split("=")
        sides = {}
        for side, path in (("fp32", fp32), ("int8", int8)):
            rep = runtime.profile(path, iters=iters, threads=threads, per_op=True, isolate=False)
            by = {}
            for o in rep.ops:
                if o["op_type"] != "DELEGATE_CALL":
                    k = kernel_kind(o["op_type"])
                    ms, n = by.get(k, (0.0, 0))
                    by[k] = (ms + o["mean_ms"], n + 1)
            sides[side] = (rep.p50_ms, by)
        print(f"\n{name}: p50 fp32 {sides['fp32'][0]:.3f} ms, int8 {sides['int8'][0]:.3f} ms "
              f"({sides['int8'][0] / sides['fp32'][0]:.2f}x)")
        print("| kernel | fp32 ms (ops) | int8 ms (ops) | int8 / fp32 |\n|---|---|---|---|")
        kinds = set(sides["fp32"][1]) | set(sides["int8"][1])
        for k in sorted(kinds, key=lambda k: -max(sides[s][1].get(k, (0, 0))[0] for s in sides)):
            (f, fn), (i, inn) = (sides[s][1].get(k, (0.0, 0)) for s in ("fp32", "int8"))
            print(f"| {k} | {f:.3f} ({fn}) | {i:.3f} ({inn}) | {f'{i / f:.2f}x' if f else '-'} |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("share", help="the inverted-residual share and the recommendation per zoo model")
    s.add_argument("--models", type=lambda v: v.split(","), required=True)
    k = sub.add_parser("kernels", help="per-kernel-kind time of fp32 / int8 ExecuTorch artifact pairs")
    k.add_argument("pairs", nargs="+", metavar="NAME=FP32_DIR=INT8_DIR")
    k.add_argument("--threads", type=int, default=2)
    k.add_argument("--iters", type=int, default=60)
    args = ap.parse_args(argv)
    if args.cmd == "share":
        share(args.models)
    else:
        kernels(args.pairs, args.threads, args.iters)
    return 0


if __name__ == "__main__":
    sys.exit(main())
