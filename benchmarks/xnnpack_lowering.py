"""ExecuTorch conversion cost of the generation students: delegate calls, lowering seconds, `.pte` bytes.

For each trained student (``--families``) and ExecuTorch conversion (XNNPACK fp32, XNNPACK
int8-dynamic, Vulkan fp16), one `edgesdk.convert` with the SDK's defaults for these artifacts
(``verify_samples=1``, no quality gate), and per program:

- delegate calls: the partitions the delegate was handed (each is a separate blob in the `.pte`
  and a separate delegate call at run time), and the share of graph nodes left outside;
- seconds: the whole conversion, and the part spent in `lower` (torch.export + to_edge +
  partition + per-partition backend preprocessing + to_executorch); with ``--profile``, where the
  lowering's seconds go (cProfile, cumulative, the top rows) and how much of it is the ``flatc``
  subprocess that XNNPACK's serializer runs once per partition;
- bytes: the `.pte` payload.

``--code DIR`` imports the SDK from another checkout (e.g. the previous commit in a worktree), so the
same script measures before and after side by side:

    git archive main | tar -x -C /tmp/before      # the code before
    cpu-exclusive python benchmarks/xnnpack_lowering.py --students /tmp/demo3/cache --code /tmp/before
    cpu-exclusive python benchmarks/xnnpack_lowering.py --students /tmp/demo3/cache
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERSIONS = (("executorch-xnnpack", "fp32"), ("executorch-xnnpack", "int8-dynamic"), ("executorch-vulkan", "fp16"))


@contextlib.contextmanager
def timed_lowering(stats: dict, profile: bool):
    """Time every `lower` call (both ExecuTorch converters use it) and the flatc subprocesses."""
    import cProfile

    from edgesdk.converters import executorch_vulkan, executorch_xnnpack
    orig_lower, orig_run = executorch_xnnpack.lower, subprocess.run

    def run(*a, **k):
        t = time.perf_counter()
        try:
            return orig_run(*a, **k)
        finally:
            stats["subprocess_s"] += time.perf_counter() - t
            stats["subprocesses"] += 1

    def lower(*a, **k):
        t = time.perf_counter()
        prof = cProfile.Profile() if profile else None
        try:
            if prof:
                prof.enable()
            return orig_lower(*a, **k)
        finally:
            if prof:
                prof.disable()
                stats["profile"] = prof
            stats["lower_s"] += time.perf_counter() - t
    executorch_xnnpack.lower = executorch_vulkan.lower = lower
    subprocess.run = run
    try:
        yield
    finally:
        executorch_xnnpack.lower = executorch_vulkan.lower = orig_lower
        subprocess.run = orig_run


def use_checkout(code: str) -> tuple[Path, str]:
    """Import the SDK from checkout ``code`` from now on (and this folder's benchmarks), one torch thread
    -> (resolved path, its short commit)."""
    path = Path(code).resolve()
    sys.path[:0] = [str(path), str(ROOT / "benchmarks")]
    import torch
    torch.set_num_threads(1)
    commit = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "(not a git checkout)"
    return path, commit


def timed_conversions(args, profile: bool = False):
    """Yield ``(student, "TARGET:SCHEME", artifact, convert seconds, lowering stats)`` for every
    ``args.families`` x ``args.conversions`` (``args.students``: the training cache), each converted by
    `edgesdk.convert` with ``verify_samples=1`` and no quality gate into a temporary directory that
    lives until the next item. The caller imports this after putting the checkout under test on
    ``sys.path``."""
    import edgesdk
    from generation_quant import load_student
    for fam in args.families:
        model = load_student(fam, Path(args.students))[0]
        for conv in args.conversions:
            target, scheme = conv.split(":")
            stats = {"lower_s": 0.0, "subprocess_s": 0.0, "subprocesses": 0}
            with tempfile.TemporaryDirectory() as tmp, timed_lowering(stats, profile):
                t0 = time.perf_counter()
                kw = {} if scheme in ("fp32", "fp16") else {"max_drop": None}
                art = edgesdk.convert(model, None, target, quantize=scheme, out_dir=tmp, name="a", verify_samples=1,
                                      **kw)
                yield fam, conv, art, time.perf_counter() - t0, stats


def top_rows(prof, n: int = 14) -> str:
    import io
    import pstats
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(n)
    return out.getvalue()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", required=True, help="the pipeline's training cache holding the trained students")
    ap.add_argument("--families", nargs="+", default=["mamba", "encdec"])
    ap.add_argument("--conversions", nargs="+", default=[f"{t}:{s}" for t, s in CONVERSIONS],
                    help="TARGET:SCHEME pairs")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose SDK is imported (default: this one)")
    ap.add_argument("--profile", action="store_true", help="cProfile each lowering and print its top rows")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    code, commit = use_checkout(args.code)
    import torch

    from generation_quant import payload_bytes
    from runtime_overhead import text_table
    rows = []
    for fam, conv, art, total, stats in timed_conversions(args, args.profile):
        target, scheme = conv.split(":")
        size = payload_bytes(art.path)
        part = art.manifest.extra["partition"]
        calls = {p: r["delegated_subgraphs"] for p, r in part.items()}
        outside = {p: 1 - r["delegated_fraction"] for p, r in part.items()}
        rows.append({"student": fam, "target": target, "scheme": scheme, "delegate_calls": calls,
                     "outside_share": outside, "convert_s": total, "lower_s": stats["lower_s"],
                     "flatc_s": stats["subprocess_s"], "flatc_calls": stats["subprocesses"], "bytes": size})
        print(f"# {fam} {target} {scheme}: {calls} delegate calls, convert {total:.1f}s, lower "
              f"{stats['lower_s']:.1f}s, flatc {stats['subprocesses']} calls {stats['subprocess_s']:.1f}s, "
              f"{size} bytes", file=sys.stderr, flush=True)
        if args.profile and "profile" in stats:
            print(top_rows(stats["profile"]), file=sys.stderr)
    print(f"Code: {code} at {commit}; torch {torch.__version__}; 1 intra-op thread; {time.strftime('%Y-%m-%d %H:%M')}")
    head = ["student", "target", "scheme", "delegate calls (per program)", "nodes outside", "convert s", "lower s",
            "flatc calls / s", ".pte bytes"]
    body = [[r["student"], r["target"], r["scheme"], ", ".join(f"{p} {n}" for p, n in r["delegate_calls"].items()),
             ", ".join(f"{p} {v:.0%}" for p, v in r["outside_share"].items()), f"{r['convert_s']:.1f}",
             f"{r['lower_s']:.1f}", f"{r['flatc_calls']} / {r['flatc_s']:.1f}", f"{r['bytes']:,}"] for r in rows]
    print(text_table(head, body, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"code": str(code), "commit": commit, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
