"""Isolated profiles from a fork server against a fresh Python per profile
(`runtime.isolate.FORK_SERVER`), on a demo's artifacts.

For each artifact that runs here, in one process, the two settings alternate (the order swapped every
round). Each takes the profile the demo takes (`pipeline.execute.profile_settings`): ``isolate=True``, the
per-op pass on, the thread sweep, adaptive warm-up and 200 runs (generation artifacts: 40; on an emulated
device: the cold generation and 3 timed ones on one thread). The servers start before the first round, as the pipeline starts them
while it converts (their start is printed apart), and each artifact is profiled once untimed first (this
process's own first load of it). The table gives each setting's median seconds per profile
and the isolated child's memory figures and p50 (memory from the last round), which should agree::

    PYTHONPATH=. python benchmarks/profile_fork_server.py --demo DEMO/out --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

MEMORY = ("rss_before_load_mb", "init_mb", "run_peak_mb")


def settings(art: Path) -> dict:
    """The demo's profile settings for this artifact (`pipeline.execute.profile_settings`)."""
    import edgesdk
    from edgesdk.pipeline.execute import profile_settings
    from edgesdk.pipeline.plan import runs_label
    from edgesdk.runtime.session import resolve
    m = resolve(art)[1]
    target = next(t for t in edgesdk.targets() if t.name == m.target)
    warmup, iters, threads = profile_settings("generation" in m.extra, runs_label(target), "auto", 200, "auto")
    return {"warmup": warmup, "iters": iters, "threads": threads}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo", required=True, type=Path, help="a demo's output folder (with artifacts/)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--match", default="", help="only artifacts whose folder name contains this")
    args = ap.parse_args(argv)
    from edgesdk import runtime
    from edgesdk.runtime import isolate
    from edgesdk.runtime.errors import TargetUnavailableError
    arts = []
    for p in sorted(q for q in (args.demo / "artifacts").iterdir() if args.match in q.name):
        try:
            runtime.load(p)
        except (TargetUnavailableError, FileNotFoundError):  # convert-only here
            continue
        arts.append(p)
    if not arts:
        raise SystemExit(f"no artifact that runs here under {args.demo}/artifacts")
    t = time.perf_counter()
    mods = [isolate.backend_module_name(p) for p in arts]
    isolate.start_servers((m for m in mods if m), wait=True)
    print(f"# {len(set(mods))} servers started and ready in {time.perf_counter() - t:.2f} s",
          file=sys.stderr, flush=True)
    rows = []
    for art in arts:
        kw = settings(art)
        secs: dict = {True: [], False: []}
        reps: dict = {}
        # untimed: this process's first load of the artifact (the sweep, the per-op pass) costs either setting
        runtime.profile(art, per_op=True, isolate=True, **kw)
        for r in range(args.rounds):
            for fork in ((True, False) if r % 2 == 0 else (False, True)):
                isolate.FORK_SERVER = fork
                t = time.perf_counter()
                reps[fork] = runtime.profile(art, per_op=True, isolate=True, **kw)
                secs[fork].append(time.perf_counter() - t)
                print(f"# {art.name} fork={fork}: {secs[fork][-1]:.2f} s", file=sys.stderr, flush=True)
        rows.append((art.name, secs, reps))
    isolate.FORK_SERVER = True
    print("| artifact | s per profile, fresh Python | forked | RSS before load MB, fresh / forked | init MB | run peak MB "
          "| p50 ms |")
    print("|---|---|---|---|---|---|---|")
    tot = {True: 0.0, False: 0.0}
    for name, secs, reps in rows:
        med = {k: statistics.median(v) for k, v in secs.items()}
        for k in tot:
            tot[k] += med[k]
        mem = [" / ".join(f"{reps[k].memory.get(f, float('nan')):.1f}" for k in (False, True)) for f in MEMORY]
        p50 = " / ".join(f"{reps[k].p50_ms:.4g}" for k in (False, True))
        print(f"| {name} | {med[False]:.2f} | {med[True]:.2f} | {' | '.join(mem)} | {p50} |")
    print(f"| all {len(rows)} | {tot[False]:.1f} | {tot[True]:.1f} | | | | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
