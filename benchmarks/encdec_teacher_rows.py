"""Seconds of the demo's encdec distillation with the teacher scoring every row against only the
sampled rows that carry the KL term (`AlignedTeacher(sampled_only=...)`), and whether the trained
student is the same (SHA-256 of its weights).

Each round trains the demo's student (`encdec_from_decoder`, 200 steps, one thread) once per setting,
the order swapped every round:

    PYTHONPATH=. python benchmarks/encdec_teacher_rows.py --rounds 1 --first every
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time


def train(sampled_only: bool, steps: int) -> tuple[float, str]:
    import edgesdk.models.distill.recipes.encdec as recipe
    real, only = recipe.AlignedTeacher, sampled_only

    def teacher_wrapper(teacher, sampled_only: bool = False):  # the recipe's choice, or every row
        return real(teacher, sampled_only=only and sampled_only)
    recipe.AlignedTeacher = teacher_wrapper
    try:
        res = recipe.encdec_from_decoder(steps=steps, threads=1)
    finally:
        recipe.AlignedTeacher = real
    return res.timings["student_train_s"], weights_sha256(res.student)


def weights_sha256(model) -> str:
    """SHA-256 over a model's state dict (names and bytes, in name order)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=200, help="the demo trains 200")
    ap.add_argument("--first", choices=("every", "sampled"), default="every", help="the setting round 1 runs first")
    args = ap.parse_args(argv)
    order = ["every", "sampled"] if args.first == "every" else ["sampled", "every"]
    print("| round | teacher scores | train s | student weights sha256 |")
    print("|---|---|---|---|")
    for r in range(args.rounds):
        for mode in (order if r % 2 == 0 else order[::-1]):
            t0 = time.strftime("%H:%M:%S", time.gmtime())
            secs, sha = train(mode == "sampled", args.steps)
            print(f"| {r + 1} | {'every row' if mode == 'every' else 'sampled rows only'} | {secs:.1f} | "
                  f"{sha[:16]} (started {t0} UTC) |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
