"""The warm-up of a generation student's profile on an emulated device (the HTP emulator).

The pipeline profiles a generation artifact whose device is emulated on this machine's CPU
(`pipeline.execute.EMULATED_RUNS`) with a few whole generations on one thread: its latency is the
emulator's host time, not the device's. This prints, per artifact and per warm-up count, the seconds
the whole profile took (load, the cold first run, the warm-up, the timed runs, the per-op pass) and
its p50 time to first token, each setting run ``--rounds`` times, the order of the settings swapped
every round::

    python benchmarks/emulated_profile.py --demo edgesdk-out/demo --warmups 1 0 --rounds 2

``--demo`` is a demo's output directory (its ``artifacts/`` hold the ``qnn-htp`` conversions)."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, help="a demo's output directory")
    ap.add_argument("--warmups", type=int, nargs="+", default=[1, 0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3, help="timed generations (the pipeline's emulated count)")
    args = ap.parse_args(argv)
    from edgesdk import runtime
    arts = sorted(p for p in (Path(args.demo) / "artifacts").glob("*-qnn-htp-*")
                  if not p.name.startswith("mlp-"))
    if not arts:
        raise SystemExit(f"no generation qnn-htp artifacts under {args.demo}/artifacts")
    res: dict = {}
    for rnd in range(args.rounds):
        order = args.warmups if rnd % 2 == 0 else list(reversed(args.warmups))
        for art in arts:
            for w in order:
                t = time.perf_counter()
                rep = runtime.profile(str(art), warmup=w, iters=args.iters, threads=1, per_op=True, isolate=False)
                s = time.perf_counter() - t
                res.setdefault((art.name, w), []).append((s, rep.stats["p50"]))
                print(f"# {art.name} warm-up {w}: {s:.1f} s, p50 {rep.stats['p50']:.1f} ms", file=sys.stderr,
                      flush=True)
    print("| artifact | warm-up runs | profile s (each round) | median s | p50 TTFT ms (each round) |")
    print("|---|---|---|---|---|")
    for (name, w), v in res.items():
        print(f"| {name} | {w} | {' / '.join(f'{s:.1f}' for s, _ in v)} | {statistics.median(s for s, _ in v):.1f} | "
              f"{' / '.join(f'{p:.0f}' for _, p in v)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
