"""Zoo models whose library initialises a norm layer with a zero scale, and what LiteRT's converter keeps of them.

With random weights such a norm makes its residual branch add exactly 0, and a converter may fold the branch
away; `benchmarks/zoo_models._no_zero_norms` now starts those norms at 1. For each model this prints, with the
library's own initialisation (the fix switched off): how many norm layers have an all-zero scale, the PyTorch
module's non-depthwise Conv2d and GELU counts, and, for each ``--tflite`` file given, its CONV_2D, GELU,
DEPTHWISE_CONV_2D, ADD, QUANTIZE and DEQUANTIZE op counts (what the interpreter runs).

    PYTHONPATH=. python benchmarks/zoo_dead_branches.py --models repvit_m0_9,levit_128s \\
        --tflite /tmp/s30/zoo-oldinit/artifacts/repvit_m0_9-litert-cpu-fp32/model.tflite
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "GELU", "ADD", "QUANTIZE", "DEQUANTIZE")


def module_counts(name: str) -> tuple[int, int, int]:
    """(norms with an all-zero scale, non-depthwise Conv2d, GELU modules) of ``name`` as the library builds it."""
    from torch import nn

    from benchmarks import zoo_models
    kept, zoo_models._no_zero_norms = zoo_models._no_zero_norms, lambda m: m
    try:
        model = zoo_models.build(name)[0]
    finally:
        zoo_models._no_zero_norms = kept
    mods = list(model.modules())
    zero = sum(1 for m in mods if isinstance(m, zoo_models.NORMS) and getattr(m, "weight", None) is not None
               and not bool(m.weight.detach().any()))
    convs = sum(1 for m in mods if isinstance(m, nn.Conv2d) and m.groups == 1)
    gelus = sum(1 for m in mods if isinstance(m, nn.GELU) or type(m).__name__ in ("GELU", "GELUTanh"))
    return zero, convs, gelus


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), default=None, help="zoo models (default: all)")
    ap.add_argument("--tflite", nargs="*", default=[], help=".tflite files whose op types to count")
    args = ap.parse_args(argv)
    from benchmarks.zoo_models import ZOO, enable_zoo_packages
    enable_zoo_packages()
    print("| model | norms with a zero scale | Conv2d (not depthwise) | GELU modules |")
    print("|---|---|---|---|")
    for name in args.models or list(ZOO):
        try:
            zero, convs, gelus = module_counts(name)
        except Exception as e:  # noqa: BLE001 - one model's failure costs its row
            print(f"| {name} | failed: {type(e).__name__} | | |")
            continue
        print(f"| {name} | {zero} | {convs} | {gelus} |", flush=True)
    if args.tflite:
        from ai_edge_litert.interpreter import Interpreter
        print()
        print("| file | " + " | ".join(OPS) + " |")
        print("|---|" + "---|" * len(OPS))
        for f in args.tflite:
            c = Counter(o["op_name"] for o in Interpreter(model_path=f)._get_ops_details())
            print(f"| {f} | " + " | ".join(str(c[op]) for op in OPS) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
