"""Seconds of the demo's encdec distillation with training attention through PyTorch's fused
kernel (`models.encdec.FUSED_TRAINING_ATTENTION`) against the explicit product, and what each
trained student scores (greedy names for the 40 held-out functions the demo scores, in PyTorch).

Each round trains the demo's student (`encdec_from_decoder`, 200 steps, one thread) once per
setting, the order swapped every round:

    PYTHONPATH=. python benchmarks/encdec_fused_attention.py --rounds 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encdec_teacher_rows import weights_sha256  # noqa: E402

HELD_OUT = 40  # the demo family's eval_pairs


def train(fused: bool, steps: int) -> dict:
    import edgesdk.models.encdec as encdec
    from edgesdk.models.data import funcname as fn
    from edgesdk.models.distill.recipes.encdec import encdec_from_decoder, evaluate_encdec
    before = encdec.FUSED_TRAINING_ATTENTION
    encdec.FUSED_TRAINING_ATTENTION = fused
    try:
        res = encdec_from_decoder(steps=steps, threads=1)
    finally:
        encdec.FUSED_TRAINING_ATTENTION = before
    scores = evaluate_encdec(res.student, fn.funcname_pairs("test")[:HELD_OUT])
    return {"train_s": res.timings["student_train_s"], "sha": weights_sha256(res.student), **scores}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="the demo trains 200")
    args = ap.parse_args(argv)
    print("| round | training attention | train s | char F1 | exact match | student weights sha256 |")
    print("|---|---|---|---|---|---|")
    for r in range(args.rounds):
        for fused in ((False, True) if r % 2 == 0 else (True, False)):
            t0 = time.strftime("%H:%M:%S", time.gmtime())
            row = train(fused, args.steps)
            print(f"| {r + 1} | {'fused (scaled_dot_product_attention)' if fused else 'explicit product'} | "
                  f"{row['train_s']:.1f} | {row['char_f1']:.4f} | {row['exact_match']:.3f} | {row['sha'][:16]} "
                  f"(started {t0} UTC) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
