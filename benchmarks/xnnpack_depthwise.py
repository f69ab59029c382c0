"""ExecuTorch XNNPACK int8-static: which depthwise convolutions to keep float, side by side against fp32.

For each zoo model (`benchmarks/zoo_models.py`, random weights) the SDK converts the fp32 ``.pte`` and
int8-static ones (``--variants``) that differ only in `converters.executorch_xnnpack.FLOAT_DEPTHWISE_ABOVE`:

- ``dw-int8``: every depthwise convolution int8 (the recipe before 2026-12-03);
- ``dw-above-5-float``: float when the kernel side is above 5 or with a depth multiplier (the SDK's rule where
  the deployment CPU has int8 dot-product instructions until 2026-12-06; printed as ``dw-sdk-float`` before);
- ``dw-above-3-float``: float when the kernel side is above 3 (5x5 and larger) or with a depth multiplier (that
  rule since, `FLOAT_DEPTHWISE_ABOVE`);
- ``dw-all-float``: every depthwise convolution float (the SDK's rule where it has none,
  `FLOAT_DEPTHWISE_WITHOUT_INT8_DOT`).

All four run interleaved in one process (`litert_static_ops.interleaved_runs`: order rotated every
round, 3 warm-up calls then >= 5 calls and >= 0.2 s per turn, the same inputs, ``--threads``), and the
table gives the median of the per-round ratios to fp32, min-max in brackets. Calibration: 8 random
inputs, as `zoo.py convert` (timings do not depend on them; the default gate's verdict is printed for the
record: random weights cannot score accuracy).

    PYTHONPATH=. python benchmarks/xnnpack_depthwise.py --models convnext_atto,mobilenet_v2 --out /tmp/xdw
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402
from benchmarks.recommended_vs_fp32 import runner  # noqa: E402

VARIANTS = {"dw-int8": None, "dw-above-5-float": 5, "dw-above-3-float": 3, "dw-all-float": 0}
TARGET = "executorch-xnnpack"


def convert(name: str, scheme: str, above, out: Path) -> tuple[Path, str]:
    """(artifact folder, the default gate's verdict) of one conversion with the depthwise rule at
    ``above``; the gate is judged as `zoo.py convert` does (measured with it off, then `judge`), so a
    rejected artifact is still timed."""
    import edgesdk
    from benchmarks.zoo import _build_once, zoo_options
    from edgesdk.converters import executorch_xnnpack as xnn
    from edgesdk.converters.accuracy import judge
    label = "fp32" if scheme == "fp32" else next(k for k, v in VARIANTS.items() if v == above)
    model, example, kw = _build_once(name)
    opts = zoo_options(model, example, kw, scheme)
    if scheme != "fp32":
        opts["max_drop"] = None
    # the variant holds on any CPU: with and without int8 dot-product instructions
    before = xnn.FLOAT_DEPTHWISE_ABOVE, xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT
    xnn.FLOAT_DEPTHWISE_ABOVE = xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT = above
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            art = edgesdk.convert(model, example or None, TARGET, quantize=scheme, out_dir=out,
                                  name=f"{name}-{label}", **opts)
    finally:
        xnn.FLOAT_DEPTHWISE_ABOVE, xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT = before
    if scheme == "fp32":
        return art.path, "verified"
    passed = judge(art.manifest.verification, "default", False).get("passed")
    return art.path, {True: "ok", None: "not scorable", False: "gate-failed"}[passed]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), required=True)
    ap.add_argument("--out", default="/tmp/xnnpack-depthwise")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                    help=f"which int8-static variants to time against fp32 (default all: {','.join(VARIANTS)})")
    args = ap.parse_args(argv)
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        ap.error(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    from benchmarks.zoo_models import enable_zoo_packages
    enable_zoo_packages()
    out = Path(args.out)
    names = args.variants
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {TARGET}, {args.threads} threads, {args.rounds} "
          "interleaved rounds; int8-static with these depthwise convolutions float")
    print("| model | " + " | ".join(f"{v} / fp32" for v in names) + " | gate " + " / ".join(names) + " | fp32 p50 ms |")
    print("|---|" + "---|" * len(names) + "---|---|")
    for name in args.models:
        paths = {"fp32": convert(name, "fp32", None, out)[0]}
        gates = []
        for v in names:
            paths[v], g = convert(name, "int8-static", VARIANTS[v], out)
            gates.append(g)
        t = interleaved_runs({k: runner(str(p), args.threads) for k, p in paths.items()}, args.rounds)
        cells = [f"{t[v][1]:.2f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in names]
        print(f"| {name} | {' | '.join(cells)} | {' / '.join(gates)} | {t['fp32'][0]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
