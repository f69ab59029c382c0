"""Do two checkouts produce the same ``results.json`` apart from timings? Runs one small pipeline
(the tests' deploy config: `tests/test_pipeline.py`'s user model, fp32 + int8-static with its
calibration data, on the given targets) with each checkout's code, in fresh processes, and prints
every difference between the two results outside the measured-time fields.

    python scripts/results_diff.py --base /tmp/main-checkout --head . --out /tmp/rdiff \\
        [--targets onnx-cpu,executorch-xnnpack,qnn-htp]

Exit status 0 when the rows agree, 1 when they differ (each difference printed as
``model/target/scheme: key: base -> head``). What counts as timing (ignored): wall times and
latencies (``*_ms``, ``*_s``), memory, throughput (and % of peak), the per-op time shares, and what they drive (steady-state and noise
flags, the thread count picked by timing, the recommendation), creation times and host; the run's
own directories are replaced by ``<out>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# fields that depend on when and how fast the machine ran, not on what the code computed
TIMING_SUFFIXES = ("_ms", "_s", "_mb", "_mb_s")
TIMING_KEYS = {"cv", "noisy", "settled", "unsettled_why", "gflops_per_s", "pct_peak", "threads", "threads_sweep",
               "steady_state", "created_at", "path", "started_at", "finished_at", "host", "memory", "profile",
               "peak_gflops", "mem_peak_mb", "recommended", "target_pick",
               "pct_of_peak", "ops"}  # ops: the per-op profile (time shares, ordered by time)


def config(out: Path, targets: list[str], model_file: Path) -> str:
    return f"""name: results-diff
model:
  source: {model_file}:build
  name: usernet
targets: [{', '.join(targets)}]
quantize:
  schemes: [fp32, int8-static]
  max_drop: 0.5
calibration:
  data: {model_file}:calibration
profile:
  warmup: 2
  iters: 20
output:
  dir: {out / 'out'}
  cache: {out / 'cache'}
  report: false
"""


def run(checkout: Path, out: Path, targets: list[str], model_file: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cfg = out / "deploy.yaml"
    cfg.write_text(config(out, targets, model_file))
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    r = subprocess.run([sys.executable, "-m", "edgesdk.cli", "deploy", str(cfg), "--json"], cwd=checkout, env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{checkout}: deploy failed (rc {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads((out / "out" / "results.json").read_text())


def strip(x, out_dirs: tuple[str, ...]):
    """``x`` without timing fields; the run's own directories replaced by a placeholder."""
    if isinstance(x, dict):
        return {k: strip(v, out_dirs) for k, v in x.items()
                if k not in TIMING_KEYS and not k.endswith(TIMING_SUFFIXES)}
    if isinstance(x, list):
        return [strip(v, out_dirs) for v in x]
    if isinstance(x, str):
        for d in out_dirs:
            x = x.replace(d, "<out>")
    return x


def diff(a, b, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{where}.{k}" if where else str(k))]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{where}[{i}]")]
    return [] if a == b else [f"{where}: {json.dumps(a)[:200]} -> {json.dumps(b)[:200]}"]


def rows_by_key(res: dict) -> dict:
    rows = res.get("artifacts") or res.get("rows") or []
    return {f"{r.get('model')}/{r.get('target')}/{r.get('scheme')}": r for r in rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="checkout whose results are the reference (e.g. main)")
    p.add_argument("--head", default=str(ROOT), help="checkout under test (default: this one)")
    p.add_argument("--out", required=True, help="scratch directory (one sub-directory per side)")
    p.add_argument("--targets", default="onnx-cpu", help="comma-separated targets (default: the tests' onnx-cpu)")
    args = p.parse_args(argv)
    out, targets = Path(args.out), [t for t in args.targets.split(",") if t]
    model_file = Path(args.head).resolve() / "tests" / "test_pipeline.py"  # the same model code on both sides
    res = {}
    for side in ("base", "head"):
        print(f"running {side} ({getattr(args, side)})", file=sys.stderr, flush=True)
        res[side] = run(Path(getattr(args, side)).resolve(), out / side, targets, model_file)
    dirs = tuple(str(out / s) for s in ("base", "head"))
    a, b = ({k: strip(v, dirs) for k, v in rows_by_key(res[s]).items()} for s in ("base", "head"))
    found = diff(a, b)
    print(f"{len(a)} rows (base) vs {len(b)} rows (head) on {', '.join(targets)}: "
          f"{'same results apart from timings' if not found else f'{len(found)} difference(s)'}")
    for d in found:
        print(f"  {d}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
