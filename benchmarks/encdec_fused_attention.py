"""Seconds of the demo's encdec distillation with training attention through PyTorch's fused
kernel (`models.encdec.FUSED_TRAINING_ATTENTION`) against the explicit product, and what each
trained student scores (greedy names for the 40 held-out functions the demo scores, in PyTorch).

Each round trains the demo's student (`encdec_from_decoder`, 200 steps, one thread) once per
setting, the order swapped every round:

    PYTHONPATH=. python benchmarks/encdec_fused_attention.py --rounds 2

``--steps-only N``: instead, N training steps' forward + backward of the demo's student on its
training batches (16 bodies, gold names), the two settings alternating step by step: the same
comparison without the sampling, teacher and optimizer around it, and less exposed to the host's drift.
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


def steps_only(n: int) -> None:
    import statistics

    import torch

    import edgesdk.models.encdec as encdec
    from edgesdk import models
    from edgesdk.models.data import funcname as fn
    from edgesdk.models.distill.recipes.encdec import STUDENT_CFG, OnPolicyNames, PairedStudent
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = PairedStudent(models.create("encdec", **STUDENT_CFG)).train()
    data = OnPolicyNames(fn.funcname_pairs("train"))
    times = {False: [], True: []}
    for i in range(n):
        b = data.sample(i, 16, 0)
        for fused in ((False, True) if i % 2 == 0 else (True, False)):
            encdec.FUSED_TRAINING_ATTENTION = fused
            student.zero_grad()
            t = time.perf_counter()
            logits = student(b["src"], b["src_len"], b["tgt"])
            torch.nn.functional.cross_entropy(logits.flatten(0, 1), b["labels"].flatten(), ignore_index=-100).backward()
            times[fused].append(time.perf_counter() - t)
    encdec.FUSED_TRAINING_ATTENTION = True
    e, f = statistics.median(times[False]), statistics.median(times[True])
    ratios = sorted(b / a for a, b in zip(times[False], times[True]))
    print(f"| training step, forward + backward (median of {n}) | explicit {e * 1e3:.1f} ms | fused {f * 1e3:.1f} ms | "
          f"fused / explicit {f / e:.2f}x (per-step ratios {ratios[len(ratios) // 10]:.2f}-{ratios[-1 - len(ratios) // 10]:.2f}, "
          f"10th-90th percentile) |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=200, help="the demo trains 200")
    ap.add_argument("--steps-only", type=int, default=0, metavar="N", help="time N training steps' forward + "
                    "backward, the settings alternating, instead of whole trainings")
    args = ap.parse_args(argv)
    if args.steps_only:
        steps_only(args.steps_only)
        return 0
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
