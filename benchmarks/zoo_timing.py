"""Where a zoo conversion's time goes, and where an artifact's run time goes, as tables.

    python benchmarks/zoo_timing.py phases --model mobilenet_v3_small --target onnx-cpu
        # cProfile of one `zoo.py` int8 row (`convert_row`): seconds per phase of `edgesdk.convert`
    python benchmarks/zoo_timing.py ops A_fp32_dir A_int8_dir ...
        # per-op-type time of each artifact (ORT profiler / ETDump), one table per artifact, 2 threads

``phases`` reads cumulative times of the functions that make each phase (the backend's export or
lowering, its quantizer, the FLOP count's export, the sensitivity ranking, the accuracy gate) from
the profile; wall time, so a loaded machine inflates it (the user CPU seconds are printed too).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# phase -> functions (file suffix, function name) whose cumulative time makes it, per target
PHASES = {
    "whole edgesdk.convert": [("converters/convert.py", "convert")],
    "backend export / lowering": [("converters/onnx_cpu.py", "export_onnx"), ("converters/executorch_xnnpack.py", "lower"),
                                  ("converters/litert_cpu.py", "export_tflite")],
    "backend quantize (with calibration)": [("converters/onnx_cpu.py", "quantize_onnx"),
                                            ("converters/executorch_xnnpack.py", "pt2e_quantize"),
                                            ("converters/litert_cpu.py", "quantize_tflite")],
    "FLOP count (second torch.export)": [("converters/flops.py", "count")],
    "layer-sensitivity ranking": [("converters/accuracy.py", "layer_sensitivity")],
    "accuracy gate (PyTorch + artifact)": [("converters/accuracy.py", "evaluate")],
}


def phases(args) -> int:
    import benchmarks.zoo as zoo
    from benchmarks.zoo_models import enable_zoo_packages
    enable_zoo_packages()
    pr = cProfile.Profile()
    t0, cpu0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_utime
    pr.enable()
    row = zoo.convert_row(args.model, args.target, args.scheme, Path(args.out))
    pr.disable()
    wall, cpu = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_utime - cpu0
    stats = pstats.Stats(pr).stats  # (file, line, fn) -> (cc, nc, tt, ct, callers)
    print(f"{args.model} {args.target} {row['scheme']}: status {row['status']}, row wall {wall:.1f} s, "
          f"user CPU {cpu:.1f} s")
    print("| phase | seconds (wall, cumulative) |\n|---|---|")
    for phase, fns in PHASES.items():
        ct = sum(v[3] for (f, _, fn), v in stats.items() for suf, name in fns if f.endswith(suf) and fn == name)
        print(f"| {phase} | {ct:.1f} |")
    return 0


def ops(args) -> int:
    from edgesdk import runtime
    for path in args.artifacts:
        rep = runtime.profile(path, warmup=5, iters=30, threads=args.threads, op_runs=20)
        by = collections.defaultdict(lambda: [0.0, 0])
        for o in rep.ops:
            by[o["op_type"]][0] += o["mean_ms"]
            by[o["op_type"]][1] += 1
        total = sum(v[0] for v in by.values())
        print(f"\n{path}: p50 {rep.p50_ms:.3f} ms; per-op sum {total:.3f} ms {rep.ops_note}")
        print("| op type | nodes | ms per run | share |\n|---|---|---|---|")
        for k, (ms, n) in sorted(by.items(), key=lambda x: -x[1][0])[:args.top]:
            print(f"| {k} | {n} | {ms:.3f} | {100 * ms / max(total, 1e-12):.1f}% |")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("phases", help="cProfile one zoo row")
    a.add_argument("--model", required=True)
    a.add_argument("--target", required=True)
    a.add_argument("--scheme", default="int8", help="int8 (the recommended scheme) or a scheme name")
    a.add_argument("--out", default="/tmp/zoo-timing")
    b = sub.add_parser("ops", help="per-op-type time of artifacts")
    b.add_argument("artifacts", nargs="+")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--top", type=int, default=9)
    args = p.parse_args(argv)
    return {"phases": phases, "ops": ops}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
