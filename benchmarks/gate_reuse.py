"""The generation gate on an emulated NPU, with and without remembered program outputs.

`converters.gen_calibration.evaluate_generation` (the accuracy gate of a quantized generation
model) runs an artifact's programs on held-out prompts: a greedy generation per prompt, a
teacher-forced pass for each prompt whose tokens diverged from fp32's, and a per-program check on
the inputs the fp32 programs met. `gen_calibration.Remembered` runs each distinct input once (the
teacher-forced pass replays the greedy pass up to the divergence, the prefill check feeds the
prompts the generations fed); ``remember=False`` runs every call through the same wrapper. This
prints, per artifact and per setting, the program calls, the runs, the seconds (each round, the
order swapped every round) and whether every figure of the gate came out the same::

    python benchmarks/gate_reuse.py --demo edgesdk-out/demo --students .cache/edgesdk --rounds 2

``--demo`` is a demo's output directory (its ``artifacts/`` hold the ``qnn-htp`` uint16-static
conversions of the students), ``--students`` the training cache holding the same trained students.
The prompts are `generation_quant.load_student`'s held-out ones (the first ``--prompts``)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, help="a demo's output directory")
    ap.add_argument("--students", required=True, help="the training cache holding the trained students")
    ap.add_argument("--scheme", default="uint16-static")
    ap.add_argument("--families", nargs="+", default=["mamba", "encdec"])
    ap.add_argument("--prompts", type=int, default=8, help="held-out prompts (the demo's gate takes 8)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    from edgesdk import runtime
    from edgesdk.converters import gen_calibration
    from edgesdk.converters.programs import collect
    from generation_quant import load_student
    rows = []
    for fam in args.families:
        art = Path(args.demo) / "artifacts" / f"{fam}-{fam}-qnn-htp-{args.scheme}"
        if not art.is_dir():
            raise SystemExit(f"no {art} (run the demo first, or pass --demo)")
        model, _, held, *_ = load_student(fam, Path(args.students))
        programs = collect(model, None)
        prompts = gen_calibration.load_prompts(held[:args.prompts], programs, "eval_data")
        sess = runtime.load(art, nan_policy="allow")
        got: dict = {}
        for rnd in range(args.rounds):
            for remember in ((False, True) if rnd % 2 == 0 else (True, False)):
                view = gen_calibration.Remembered(sess, remember=remember)  # both count the calls and runs
                t = time.perf_counter()
                res = gen_calibration.evaluate_generation(programs, view, prompts)
                s = time.perf_counter() - t
                got.setdefault(remember, []).append((s, json.dumps(res, sort_keys=True, default=str),
                                                     view.calls(), view.runs()))
                print(f"# {fam} remember={remember}: {s:.1f} s, runs {view.runs()} of calls {view.calls()}",
                      file=sys.stderr, flush=True)
        same = len({r[1] for v in got.values() for r in v}) == 1
        for remember, v in got.items():
            rows.append((art.name, "each distinct input once" if remember else "every call runs",
                         v[-1][2], v[-1][3], [s for s, *_ in v], same))
    print("| artifact | gate runs | program calls | program runs | s (each round) | median s | figures |")
    print("|---|---|---|---|---|---|---|")
    for name, how, calls, runs, secs, same in rows:
        print(f"| {name} | {how} | {_per(calls)} | {_per(runs)} | {' / '.join(f'{s:.1f}' for s in secs)} | "
              f"{statistics.median(secs):.1f} | {'identical' if same else 'DIFFER'} |")
    return 0


def _per(d: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


if __name__ == "__main__":
    sys.exit(main())
