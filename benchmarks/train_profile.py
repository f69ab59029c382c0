"""Where the encdec student's training time goes (the demo's slowest training), and whether
skipping the teacher in label-only stages changes it.

    python benchmarks/train_profile.py profile [--steps 200]   # cProfile of encdec_from_decoder, top entries
    python benchmarks/train_profile.py same [--steps 8]        # the student's weights with and without the skip

`profile` prints the cumulative time of the training's main parts (teacher forward, student
backward, on-policy sampling, ...) as shares of the whole; `same` trains the real recipe twice
(CE warm-up = half the steps), once skipping the teacher where no loss reads it (the default)
and once running it every step, and prints both weight hashes and loss curves.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PARTS = {"teacher forward (AlignedTeacher)": ("recipes/encdec.py", "forward", 82),
         "student forward (PairedStudent)": ("recipes/encdec.py", "forward", 63),
         "student backward": ("_tensor.py", "backward", None),
         "on-policy sampling (EncDec.generate)": ("models/encdec.py", "generate", None),
         "batches (OnPolicyNames.sample, incl. sampling)": ("recipes/encdec.py", "sample", None)}


def profile(steps: int) -> None:
    from edgesdk.models.data import funcname as fn
    from edgesdk.models.distill.recipes.encdec import encdec_from_decoder
    from edgesdk.models.teachers.train_funcname import load_funcname_teacher
    t0 = time.perf_counter()
    fn.funcname_pairs("train")
    print(f"training pairs parsed from the stdlib in {time.perf_counter() - t0:.1f} s")
    teacher = load_funcname_teacher()
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.runcall(encdec_from_decoder, teacher=teacher, steps=steps, seed=0, threads=1)
    total = time.perf_counter() - t0
    st = pstats.Stats(pr).stats
    print(f"encdec_from_decoder(steps={steps}, threads=1): {total:.1f} s under cProfile")
    for label, (file, fn_name, line) in PARTS.items():
        hits = [(v[3], v[1]) for (f, ln, n), v in st.items()
                if f.endswith(file) and n == fn_name and (line is None or ln == line)]
        cum = sum(c for c, _ in hits)
        calls = sum(n for _, n in hits)
        print(f"  {label:<48} {cum:8.1f} s  {cum / total:5.0%}  ({calls} calls)")


def same(steps: int) -> None:
    import torch

    from edgesdk.models.distill.losses import CrossEntropyLoss
    from edgesdk.models.distill.recipes.encdec import encdec_from_decoder
    from edgesdk.models.teachers.train_funcname import load_funcname_teacher
    teacher = load_funcname_teacher()

    def run():
        r = encdec_from_decoder(teacher=teacher, steps=steps, ce_warmup_steps=steps // 2, seed=0, threads=1)
        h = hashlib.sha256()
        for k, v in r.student.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        return h.hexdigest(), [round(x["loss"], 8) for x in r.info["history"]]
    skip = run()
    CrossEntropyLoss.reads_teacher = True  # the teacher runs on every step, as before the skip
    always = run()
    print(f"teacher skipped in the CE warm-up: weights {skip[0][:16]}  losses {skip[1]}")
    print(f"teacher run on every step:         weights {always[0][:16]}  losses {always[1]}")
    print("IDENTICAL" if skip == always else "DIFFERENT")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["profile", "same"])
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args(argv)
    if a.step == "profile":
        profile(a.steps or 200)
    else:
        same(a.steps or 8)
    return 0


if __name__ == "__main__":
    sys.exit(main())
