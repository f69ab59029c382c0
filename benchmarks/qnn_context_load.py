"""qnn-htp sessions opened from the converter's EPContext models against compiling the QDQ ONNX
(`runtime.qnn.USE_CONTEXT_MODEL`), on the HTP emulator.

For each ``*qnn-htp*`` artifact of a demo, in one process, the two settings alternate (the order swapped
every round): the seconds of `runtime.load`, of the profile the pipeline takes (generation artifacts: the
cold generation and 3 timed ones, one thread, the per-op pass on; others: 20 runs), and whether every
program's outputs on its example-shaped inputs are the same bits::

    PYTHONPATH=. python benchmarks/qnn_context_load.py --demo DEMO/out --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, type=Path, help="a demo's output folder (with artifacts/)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    import numpy as np
    from edgesdk import runtime
    from edgesdk.runtime import qnn
    from edgesdk.runtime.profile import example_inputs
    arts = sorted(p for p in (args.demo / "artifacts").glob("*qnn-htp*") if (p / "manifest.json").is_file())
    if not arts:
        raise SystemExit(f"no qnn-htp artifacts under {args.demo}/artifacts")
    rows = []
    for art in arts:
        load_s: dict = {True: [], False: []}
        prof_s: dict = {True: [], False: []}
        outs: dict = {}
        for r in range(args.rounds):
            for ctx in ((True, False) if r % 2 == 0 else (False, True)):
                qnn.USE_CONTEXT_MODEL = ctx
                t = time.perf_counter()
                sess = runtime.load(art, threads=1)
                load_s[ctx].append(time.perf_counter() - t)
                outs[ctx] = {n: sess.program(n).program.run(example_inputs(sess.program(n).spec.inputs))
                             for n in sess.program_names}
                generation = sess.generation is not None
                del sess
                t = time.perf_counter()
                runtime.profile(art, warmup=0 if generation else 5, iters=3 if generation else 20, threads=1,
                                per_op=True, isolate=False)
                prof_s[ctx].append(time.perf_counter() - t)
                print(f"# {art.name} context={ctx}: load {load_s[ctx][-1]:.2f} s, profile {prof_s[ctx][-1]:.1f} s",
                      file=sys.stderr, flush=True)
        same = all(np.array_equal(a, b) for n in outs[True] for a, b in zip(outs[True][n], outs[False][n]))
        rows.append((art.name, load_s, prof_s, same))
    qnn.USE_CONTEXT_MODEL = True
    print(f"{args.rounds} rounds, order swapped each round; one process, one thread\n")
    print("| artifact | load s, compile (each round) | load s, context model | profile s, compile | "
          "profile s, context model | median profile context / compile | outputs |")
    print("|---|---|---|---|---|---|---|")
    tot = {True: 0.0, False: 0.0}
    for name, load_s, prof_s, same in rows:
        for k in tot:
            tot[k] += statistics.median(load_s[k]) + statistics.median(prof_s[k])
        f = lambda xs, d=2: " / ".join(f"{x:.{d}f}" for x in xs)  # noqa: E731
        print(f"| {name} | {f(load_s[False])} | {f(load_s[True])} | {f(prof_s[False], 1)} | {f(prof_s[True], 1)} | "
              f"{statistics.median(prof_s[True]) / statistics.median(prof_s[False]):.2f}x | "
              f"{'identical' if same else 'DIFFER'} |")
    print(f"\nsum of medians (load + profile): compile {tot[False]:.1f} s, context model {tot[True]:.1f} s")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
