"""Hostile-file corpus: derived from real artifacts, loaded in a child process.

Run directly to print the counts recorded in benchmarks/RESULTS.md::

    .venv/bin/python tests/hostile.py --artifacts DIR [--count N]

Each case is loaded (and, if it loads, run once) in a worker subprocess that reports one JSON
line per case. A worker that dies (negative return code) or hangs is a failure of that case;
the worker is restarted for the remaining cases.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r'''
import json, sys
sys.path.insert(0, sys.argv[1])
from edgesdk import runtime
from edgesdk.runtime.errors import SdkError
for line in sys.stdin:
    case = json.loads(line)
    print(json.dumps({"id": case["id"], "status": "start"}), flush=True)
    try:
        sess = runtime.load(case["path"])
        sess.run(runtime.example_inputs(sess.inputs))
        status = "loaded"
    except SdkError as e:
        status = "typed:" + type(e).__name__
    except Exception as e:
        status = "untyped:" + type(e).__name__ + ":" + str(e)[:200]
    print(json.dumps({"id": case["id"], "status": status}), flush=True)
'''


def _mutations(rng: random.Random, data: bytes, n: int):
    """(kind, bytes): truncations at random offsets, bit flips, zero length."""
    out = [("zero-length", b"")]
    for _ in range(n):
        cut = rng.randrange(1, max(2, len(data)))
        out.append((f"truncated@{cut}", data[:cut]))
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        out.append(("bit-flipped", bytes(b)))
    return out


def build_corpus(artifacts: list[Path], out: Path, per_artifact: int = 6, seed: int = 0) -> list[dict]:
    """Write hostile variants of each artifact (as artifact dirs and as bare files) under ``out``."""
    rng = random.Random(seed)
    cases = []

    def add(kind, path):
        cases.append({"id": len(cases), "kind": kind, "path": str(path)})

    for art in artifacts:
        m = json.loads((art / "manifest.json").read_text())
        payload = m["files"][0]["path"]
        data = (art / payload).read_bytes()
        for kind, blob in _mutations(rng, data, per_artifact):
            d = out / f"c{len(cases)}"
            shutil.copytree(art, d)
            (d / payload).write_bytes(blob)
            add(f"{m['target']} artifact {kind}", d)              # integrity check must catch it
            bare = out / f"c{len(cases)}{Path(payload).suffix}"
            bare.write_bytes(blob)
            add(f"{m['target']} bare {kind}", bare)                # native parser sees it: must not crash
        wrong = out / f"c{len(cases)}.onnx" if not payload.endswith(".onnx") else out / f"c{len(cases)}.tflite"
        wrong.write_bytes(data)
        add(f"{m['target']} wrong extension", wrong)
        for kind, mutate in [
            ("path traversal", lambda mm: [f.update(path="../../outside.bin") for f in mm["files"]]),
            ("absolute path", lambda mm: [f.update(path="/etc/passwd") for f in mm["files"]]),
            ("absurd shape", lambda mm: [s.update(shape=[2**31, 2**31, 2**31]) for p in mm["programs"].values()
                                         for s in p["inputs"]]),
            ("negative dim", lambda mm: [s.update(shape=[-1]) for p in mm["programs"].values() for s in p["inputs"]]),
            ("huge declared size", lambda mm: [f.update(size=2**40) for f in mm["files"]]),
            ("deep json", None),
        ]:
            d = out / f"c{len(cases)}"
            shutil.copytree(art, d)
            if mutate is None:
                (d / "manifest.json").write_text("[" * 100000 + "]" * 100000)
            else:
                mm = json.loads(json.dumps(m))
                mutate(mm)
                (d / "manifest.json").write_text(json.dumps(mm))
            add(f"{m['target']} manifest {kind}", d)
    return cases


def run_corpus(cases: list[dict], cwd: Path, timeout_s: float = 60.0) -> list[dict]:
    """Load every case in worker subprocesses; returns one result per case."""
    results, pending = {}, list(cases)
    while pending:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(ROOT)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=cwd)
        for c in pending:
            proc.stdin.write(json.dumps(c) + "\n")
        proc.stdin.close()
        current, deadline = None, time.monotonic() + timeout_s
        for line in proc.stdout:
            msg = json.loads(line)
            if msg["status"] == "start":
                current, deadline = msg["id"], time.monotonic() + timeout_s
            else:
                results[msg["id"]] = msg["status"]
                current = None
            if time.monotonic() > deadline:
                break
        try:
            rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = "hang"
        if current is not None:
            results[current] = f"crash:rc={rc}"
        pending = [c for c in pending if c["id"] not in results]
        if current is None and pending:  # worker ended without starting the rest (should not happen)
            for c in pending:
                results[c["id"]] = f"not-run:rc={rc}"
            pending = []
    return [{**c, "status": results[c["id"]]} for c in cases]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifacts", nargs="+", required=True, help="artifact directories to derive cases from")
    ap.add_argument("--per-artifact", type=int, default=6)
    ap.add_argument("--work", default=None)
    args = ap.parse_args()
    import tempfile
    work = Path(args.work or tempfile.mkdtemp(prefix="edgesdk-hostile-"))
    (work / "cwd").mkdir(parents=True, exist_ok=True)
    cases = build_corpus([Path(a) for a in args.artifacts], work / "corpus", args.per_artifact)
    t0 = time.time()
    res = run_corpus(cases, work / "cwd")
    bad = [r for r in res if not r["status"].startswith(("typed:", "loaded"))]
    print(f"{len(res)} hostile files, {sum(r['status'].startswith('crash') for r in res)} crashes, "
          f"{sum('hang' in r['status'] for r in res)} hangs, {len(bad)} without a typed error, "
          f"{time.time() - t0:.0f}s")
    for r in bad:
        print("  ", r["kind"], r["status"])


if __name__ == "__main__":
    main()
