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

import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from executorch_cuts import switch_arguments, switch_rounds  # noqa: E402


def main(argv=None) -> int:
    args = switch_arguments(__doc__, ["mamba:executorch-xnnpack:fp32", "mamba:executorch-xnnpack:int8-dynamic",
                                       "mamba:executorch-vulkan:fp16"], 2, argv)
    from edgesdk.converters import executorch_xnnpack
    from executorch.exir.verification import verifier

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
    try:
        rows = switch_rounds(args.conversions, Path(args.students), args.rounds,
                             lambda on: setattr(executorch_xnnpack, "DTYPE_CHECK_ONCE", on), tally)
    finally:
        verifier._check_tensor_args_matching_op_allowed_dtype = real
    print(f"{args.rounds} rounds, order swapped each round; one process, 1 torch thread; checks of the last round\n")
    print("| student | conversion | dtype checks run, every program (their s) | once per graph (their s) | "
          "convert s every (each round) | once (each round) | median once / every | files |")
    print("|---|---|---|---|---|---|---|---|")
    for fam, conv, secs, tallies, same in rows:
        every, once, off_s, on_s = tallies[False], tallies[True], secs[False], secs[True]
        ratio = statistics.median(on_s) / statistics.median(off_s)
        print(f"| {fam} | {conv} | {every['n']} ({every['s']:.1f} s) | {once['n']} ({once['s']:.1f} s) | "
              f"{' / '.join(f'{s:.1f}' for s in off_s)} | {' / '.join(f'{s:.1f}' for s in on_s)} | {ratio:.2f}x | "
              f"{'identical' if same else 'DIFFER'} |")
    return 0 if all(r[-1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
