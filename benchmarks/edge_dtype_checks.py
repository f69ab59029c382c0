"""ExecuTorch lowering seconds with the edge verifier's dtype check run once per distinct graph
(`executorch_xnnpack.dtype_checked_once`, switch ``DTYPE_CHECK_ONCE``) and at every program built.

For each conversion of a demo-trained student, in one process (after one warm-up conversion): the
whole `edgesdk.convert` (``verify_samples=1``, no gate), switch on and off, the order swapped every
round; the dtype checks that ran and their own seconds (timed around ExecuTorch's function, so both
settings are measured the same way); and the SHA-256 of the artifact's files, which must not change.
``--students``: a pipeline training cache (a demo's ``cache``)::

    PYTHONPATH=. python benchmarks/edge_dtype_checks.py --students DEMO/cache --rounds 2 \\
        --conversions mamba:executorch-xnnpack:fp32 mamba:executorch-vulkan:fp16
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", required=True, help="the pipeline's training cache holding the trained students")
    ap.add_argument("--conversions", nargs="+", default=["mamba:executorch-xnnpack:fp32",
                                                         "mamba:executorch-xnnpack:int8-dynamic",
                                                         "mamba:executorch-vulkan:fp16"],
                    help="STUDENT:TARGET:SCHEME")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(1)
    import edgesdk
    from edgesdk.converters import executorch_xnnpack
    from executorch.exir.verification import verifier
    from executorch_cuts import payload_sha256
    from generation_quant import load_student

    real = verifier._check_tensor_args_matching_op_allowed_dtype
    tally = {"n": 0, "s": 0.0}

    def timed(gm):  # ExecuTorch's check, timed; `dtype_checked_once` wraps this one when on
        t = time.perf_counter()
        try:
            return real(gm)
        finally:
            tally["n"] += 1
            tally["s"] += time.perf_counter() - t
    verifier._check_tensor_args_matching_op_allowed_dtype = timed

    def convert(model, target, scheme, once: bool) -> tuple[float, str, dict]:
        executorch_xnnpack.DTYPE_CHECK_ONCE = once
        tally.update(n=0, s=0.0)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            kw = {} if scheme in ("fp32", "fp16") else {"max_drop": None}
            art = edgesdk.convert(model, None, target, quantize=scheme, out_dir=tmp, name="a", verify_samples=1, **kw)
            return time.perf_counter() - t, payload_sha256(Path(art.path)), dict(tally)

    rows = []
    for item in args.conversions:
        fam, target, scheme = item.split(":")
        model = load_student(fam, Path(args.students))[0]
        convert(model, target, scheme, True)  # warm-up: imports, first-call caches
        secs: dict = {True: [], False: []}
        hashes, tallies = set(), {}
        for r in range(args.rounds):
            for once in ((True, False) if r % 2 == 0 else (False, True)):
                s, h, n = convert(model, target, scheme, once)
                secs[once].append(s)
                hashes.add(h)
                tallies[once] = n
                print(f"# {item} once={once}: {s:.1f} s, files {h[:12]}, dtype checks {n}", file=sys.stderr,
                      flush=True)
        rows.append((fam, f"{target} {scheme}", tallies[False], tallies[True], secs[False], secs[True],
                     len(hashes) == 1))
    executorch_xnnpack.DTYPE_CHECK_ONCE = True
    verifier._check_tensor_args_matching_op_allowed_dtype = real
    print(f"{args.rounds} rounds, order swapped each round; one process, 1 torch thread; checks of the last round\n")
    print("| student | conversion | dtype checks run, every program (their s) | once per graph (their s) | "
          "convert s every (each round) | once (each round) | median once / every | files |")
    print("|---|---|---|---|---|---|---|---|")
    for fam, conv, every, once, off_s, on_s, same in rows:
        ratio = statistics.median(on_s) / statistics.median(off_s)
        print(f"| {fam} | {conv} | {every['n']} ({every['s']:.1f} s) | {once['n']} ({once['s']:.1f} s) | "
              f"{' / '.join(f'{s:.1f}' for s in off_s)} | {' / '.join(f'{s:.1f}' for s in on_s)} | {ratio:.2f}x | "
              f"{'identical' if same else 'DIFFER'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
