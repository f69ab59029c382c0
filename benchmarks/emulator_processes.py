"""How the HTP emulator shares this machine's cores: one program's seconds per run alone, from two
threads of one process, and from two processes at once.

The local executor scores emulated artifacts after the timings; whether two scores can progress at
once decides where they run (`edgesdk.pipeline.scores.score_all`'s ``offload``). Each setting runs the
artifact's first program (or ``--program``) ``--runs`` times per thread/process after one untimed run,
on inputs drawn from its manifest (token ids in their value range), ONNX Runtime at one thread:

    PYTHONPATH=. python benchmarks/emulator_processes.py DEMO_OUT/artifacts/mamba-mamba-qnn-htp-uint16-static
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _feeds(sess, program: str):
    import numpy as np
    spec = sess.manifest.programs[program]
    rng = np.random.default_rng(0)
    out = {}
    for t in spec.inputs:
        shape = [d if isinstance(d, int) else 1 for d in t.shape]
        if np.issubdtype(t.np_dtype, np.integer):
            lo, hi = t.value_range or (0, 1)
            out[t.name] = rng.integers(lo, hi + 1, size=shape).astype(t.np_dtype)
        else:
            out[t.name] = rng.standard_normal(shape).astype(t.np_dtype)
    return out


def per_run(path: str, program: str | None, runs: int) -> tuple[str, float]:
    """(program, mean seconds per timed run) in this thread."""
    from edgesdk import runtime
    sess = runtime.load(path, threads=1)
    program = program or sess.program_names[0]
    feeds = _feeds(sess, program)
    sess.run(feeds, program=program)
    t0 = time.perf_counter()
    for _ in range(runs):
        sess.run(feeds, program=program)
    return program, (time.perf_counter() - t0) / runs


def child(args) -> int:
    print(json.dumps(per_run(args.artifact, args.program, args.runs)), flush=True)
    return 0


def in_threads(path: str, program: str | None, runs: int, n: int) -> list[float]:
    out = [None] * n

    def go(i):
        out[i] = per_run(path, program, runs)[1]
    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return out


def in_processes(path: str, program: str | None, runs: int, n: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, __file__, "--child", path, "--runs", str(runs)] + (["--program", program] if program else [])
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
             for _ in range(n)]
    return [json.loads(p.communicate()[0].strip().splitlines()[-1])[1] for p in procs]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact", help="a qnn-htp artifact folder (any artifact whose device is emulated here)")
    ap.add_argument("--program", help="program to run (default: the first)")
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    program, alone = per_run(args.artifact, args.program, args.runs)
    threads = in_threads(args.artifact, program, args.runs, 2)
    procs = in_processes(args.artifact, program, args.runs, 2)
    print(f"{Path(args.artifact).name} program {program}, {args.runs} timed runs each, {os.cpu_count()} cores")
    print("| setting | s per run (each) | programs per second, all together |")
    print("|---|---|---|")
    print(f"| one process, one thread | {alone:.2f} | {1 / alone:.2f} |")
    print(f"| one process, two threads | {' / '.join(f'{x:.2f}' for x in threads)} | {sum(1 / x for x in threads):.2f} |")
    print(f"| two processes | {' / '.join(f'{x:.2f}' for x in procs)} | {sum(1 / x for x in procs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
