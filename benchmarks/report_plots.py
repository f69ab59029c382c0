"""The report's plots drawn in one process vs with the top-ops plots in a child Python
(`report_plots.SPLIT_OPS_AT`), on a run's own ``results.json``, interleaved rounds:

    python benchmarks/report_plots.py edgesdk-out/demo/results.json --rounds 5

Prints, per way, the median seconds of `report_plots.plots` and the ratio, and checks that both
ways give the same plots byte for byte. matplotlib is imported once before the rounds (a report
pays it either way)."""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="a pipeline run's results.json")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    from edgesdk import report_plots
    from edgesdk.runtime.machine import usable_cores
    results = json.loads(Path(args.results).read_text())
    default = report_plots.SPLIT_OPS_AT
    ways = {"one process": 10**9, "top-ops plots in a child": default}
    report_plots.plots(results)  # matplotlib and the fonts loaded once
    times: dict[str, list[float]] = {w: [] for w in ways}
    pngs: dict[str, list] = {}
    for r in range(args.rounds):
        for w in (list(ways) if r % 2 == 0 else list(ways)[::-1]):
            report_plots.SPLIT_OPS_AT = ways[w]
            t = time.perf_counter()
            out = report_plots.plots(results)
            times[w].append(time.perf_counter() - t)
            pngs[w] = [(p["id"], p["png"]) for p in out]
    report_plots.SPLIT_OPS_AT = default
    n_ops = sum(1 for i, _ in pngs["one process"] if i.startswith("ops-"))
    base = statistics.median(times["one process"])
    print(f"{len(pngs['one process'])} plots, {n_ops} of them top-ops; {usable_cores()} usable cores; "
          f"{args.rounds} interleaved rounds")
    print("| way | median s | min-max s | vs one process |")
    print("|---|---|---|---|")
    for w, ts in times.items():
        print(f"| {w} | {statistics.median(ts):.2f} | {min(ts):.2f}-{max(ts):.2f} | {statistics.median(ts) / base:.2f}x |")
    same = pngs["one process"] == pngs["top-ops plots in a child"]
    print(f"same plots byte for byte: {'yes' if same else 'NO'}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
