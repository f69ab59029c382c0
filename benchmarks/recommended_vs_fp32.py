"""Recommended int8 row vs fp32, side by side: is the zoo's recommended scheme really slower than fp32?

Reads a `benchmarks/zoo.py` results folder (``--out`` of ``zoo.py convert``), and for each model x target
that has both an fp32 artifact and its recommended int8 row (``recommended: True``) opens both with
`edgesdk.runtime` and times them interleaved in one process: ``--rounds`` rounds, order rotated every
round, each turn 3 warm-up calls then >= 5 calls and >= 0.2 s (`litert_static_ops.interleaved_runs`),
the same inputs (`runtime.profile`'s example inputs, seed 0; a generation model generates 32 tokens)
and ``--threads`` on both sides. Prints the median of the per-round ratios int8 / fp32 with min-max,
and what the current recipe (`converters.recipes.recommendation`) deploys for the model.

A row is "slower" when every round's ratio is above 1.0 (min > 1.0), "faster" when every one is
below, else "no measurable difference".

    PYTHONPATH=. python benchmarks/zoo.py convert --out /tmp/z/zoo --targets onnx-cpu --schemes fp32,int8 --models fastvit_t8
    PYTHONPATH=. python benchmarks/recommended_vs_fp32.py --out /tmp/z/zoo --rounds 8
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402
from benchmarks.zoo import load_results  # noqa: E402


def pairs(res: dict, models=None, targets=None, every: bool = False) -> list[tuple[dict, dict]]:
    """(fp32 row, recommended int8 row) of every model x target where both have an artifact; with
    ``every``, each other quantized row of theirs too (the zoo's extra schemes), and the gated artifact that
    ``zoo.py repair`` made for a row the default gate rejected (scheme ``<scheme>+fallback``: the layers
    `auto_fallback` kept float)."""
    out = []
    for k, r in sorted(res["rows"].items()):
        if not ((r.get("recommended") or every) and r.get("path") and r["scheme"] != "fp32"):
            continue
        if (models and r["model"] not in models) or (targets and r["target"] not in targets):
            continue
        f = res["rows"].get(f"{r['model']}|{r['target']}|fp32")
        if f and f.get("path") and Path(f["path"]).is_dir() and Path(r["path"]).is_dir():
            out.append((f, r))
            fix = r.get("repair") or {}
            if every and fix.get("status") == "ok" and Path(fix.get("path", "")).is_dir():
                out.append((f, {**r, "scheme": f"{r['scheme']}+fallback", "path": fix["path"], "status": "ok"}))
    return out


def runner(path: str, threads: int):
    from edgesdk import runtime
    from edgesdk.runtime.profile import program_runner
    sess = runtime.load(path, threads=threads)
    once, _, _ = program_runner(sess, None, None, 0, None, 32)
    return once


def verdict(ratio: float, lo: float, hi: float) -> str:
    if lo > 1.0:
        return "slower"
    if hi < 1.0:
        return "faster"
    return "no measurable difference"


def pair_arguments(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of a script that times a zoo folder's fp32 / int8 pairs side by side."""
    ap.add_argument("--out", required=True, help="a zoo.py results folder (holds zoo.json)")
    ap.add_argument("--models", type=lambda s: s.split(","), default=None)
    ap.add_argument("--targets", type=lambda s: s.split(","), default=None)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main(argv=None) -> int:
    ap = pair_arguments(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--every-scheme", action="store_true",
                    help="also time the zoo's other quantized rows of these models against fp32, not only the recommended one")
    args = ap.parse_args(argv)
    from benchmarks.zoo_models import build, enable_zoo_packages
    from edgesdk.converters.recipes import recommendation
    enable_zoo_packages()
    res = load_results(Path(args.out))
    todo = pairs(res, args.models, args.targets, args.every_scheme)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          f"rounds, {len(todo)} model x target pairs from {args.out}")
    print("| model | target | int8 row | int8 / fp32 (min-max) | verdict | gate | fp32 p50 ms | recipe now deploys |")
    print("|---|---|---|---|---|---|---|---|")
    for f, r in todo:
        try:
            t = interleaved_runs({"fp32": runner(f["path"], args.threads), "int8": runner(r["path"], args.threads)},
                                 args.rounds)
        except Exception as e:  # one model's failure costs its row, not the run
            print(f"| {r['model']} | {r['target']} | {r['scheme']} | failed: {type(e).__name__}: {str(e)[:120]} | | | | |")
            continue
        ratio, lo, hi = t["int8"][1:]
        now = recommendation(r["target"], build(r["model"])[0])[0]
        print(f"| {r['model']} | {r['target']} | {r['scheme']} | {ratio:.2f}x ({lo:.2f}-{hi:.2f}) | "
              f"{verdict(ratio, lo, hi)} | {r.get('status')} | {t['fp32'][0]:.3f} | {now} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
