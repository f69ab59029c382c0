"""Conversion seconds with GraphModule source generation deferred (`converters.deferred_codegen`) and without.

For each conversion of a demo-trained student, in one process (after one warm-up conversion): the
whole `edgesdk.convert` (``verify_samples=1``, no gate), switch on and off, the order swapped every
round, and the SHA-256 of the artifact's files (`executorch_cuts.payload_sha256`), which must not
change. Also counted: the recompiles that generated source (with every one on, their seconds too), and
with deferral the ones deferred. ``--students``: a pipeline training cache (a demo's ``.cache/edgesdk``)::

    PYTHONPATH=. python benchmarks/deferred_codegen.py --students DEMO/cache --rounds 3 \\
        --conversions mamba:executorch-vulkan:fp16 mamba:executorch-xnnpack:int8-dynamic mamba:litert-cpu:fp32
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
    args = switch_arguments(__doc__, ["mamba:executorch-vulkan:fp16", "mamba:executorch-xnnpack:int8-dynamic"], 3, argv)
    from edgesdk.converters import deferred_codegen

    from torch.fx import GraphModule
    real_recompile, real_context = GraphModule.recompile, deferred_codegen.deferred_recompiles
    tally = {"generated": 0, "s": 0.0, "deferred": 0}

    def timed_recompile(self):  # the real source generation, timed (the deferral calls this one too)
        t = time.perf_counter()
        try:
            return real_recompile(self)
        finally:
            tally["generated"] += 1
            tally["s"] += time.perf_counter() - t

    def counted_context():
        import contextlib

        @contextlib.contextmanager
        def block():
            with real_context() as counts:
                yield counts
            tally["deferred"] += counts["deferred"]
        return block()

    GraphModule.recompile, deferred_codegen.deferred_recompiles = timed_recompile, counted_context
    rows = []
    for fam, conv, secs, tallies, same in switch_rounds(args.conversions, Path(args.students), args.rounds,
                                                         lambda on: setattr(deferred_codegen, "ENABLED", on), tally):
        on, off = statistics.median(secs[True]), statistics.median(secs[False])
        every, lazy = tallies[False], tallies[True]
        # a deferred recompile that is read later counts in both: deferred, then generated
        counts = (f"{every['generated']} ({every['s']:.1f} s)", f"{lazy['generated']} ({lazy['deferred']} deferred)")
        rows.append((fam, conv, secs[False], secs[True], off, on, same, counts))
    print(f"{args.rounds} rounds, order swapped each round; one process, 1 torch thread\n")
    print("| student | conversion | sources generated, every recompile (their s) | generated with deferral (deferred) | "
          "every recompile s (each round) | deferred s (each round) | median every | median deferred | "
          "deferred / every | files |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for fam, conv, off_s, on_s, off, on, same, (n_every, n_lazy) in rows:
        print(f"| {fam} | {conv} | {n_every} | {n_lazy} | {' / '.join(f'{s:.1f}' for s in off_s)} | "
              f"{' / '.join(f'{s:.1f}' for s in on_s)} | {off:.1f} | {on:.1f} | {on / off:.2f}x | "
              f"{'identical' if same else 'DIFFER'} |")
    return 0 if all(r[6] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
