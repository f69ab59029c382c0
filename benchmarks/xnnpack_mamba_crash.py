"""Which Mamba students' prefill programs crash ExecuTorch's XNNPACK runtime, and which op kinds,
left out of the delegate, avoid it (a diagnostic, not a timing).

Found on 2026-12-05 (ExecuTorch 1.5.1): every 1-layer Mamba student (`models.create("mamba",
n_layers=1, ...)`) crashes the process (SIGSEGV inside an XNNPACK kernel, under
``pthreadpool_parallelize_1d_tile_1d_dynamic``) when its fp32 ``prefill`` program runs, while the step
program and 2- or 4-layer students run. Each configuration's prefill is lowered with the converter's
own `executorch_xnnpack.lower` (its decompositions and passes) and run once in a child process, so a
crash is a row, not the end of the run. ``--drop`` lowers it again with one partitioner config
(ExecuTorch's ``ALL_PARTITIONER_CONFIGS`` names) left out each time.

    PYTHONPATH=. python benchmarks/xnnpack_mamba_crash.py --layers 1 2 --drop SliceCopyConfig BMMConfig CatConfig --markdown

Cause, found the same day: the SSD's constant triangle is both a linear's weight (XNNPACK packs it and
ExecuTorch releases the original bytes) and read directly by slices and multiplies in the same
delegate, which then read freed memory. The converter now gives such readers their own copy
(`executorch_xnnpack.unshare_packed_constants`); ``--without-copy`` lowers each program both ways:

    PYTHONPATH=. python benchmarks/xnnpack_mamba_crash.py --layers 1 2 4 --without-copy --markdown
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from runtime_overhead import text_table as table  # noqa: E402

RUN = """
import sys, torch
from executorch.extension.pybindings.portable_lib import _load_for_executorch
out = _load_for_executorch(sys.argv[1]).run_method("prefill", tuple(torch.load(sys.argv[2], weights_only=True)))
print("shapes", [tuple(o.shape) for o in out])
"""


def prefill_runs(layers: int, d_model: int, prompt: int, drop: str | None, tmp: Path,
                 copy: bool = True) -> tuple[str, int]:
    """(outcome, delegate calls) of the prefill of a random-weight student lowered without ``drop``
    (``copy`` False: without `unshare_packed_constants`)."""
    import torch
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from edgesdk.converters import executorch_xnnpack as xnn
    from edgesdk.converters.programs import collect
    from edgesdk.models.mamba import Mamba, MambaConfig
    torch.manual_seed(0)
    m = Mamba(MambaConfig(d_model=d_model, n_layers=layers, n_heads=4, head_dim=d_model // 4, d_state=16, n_groups=4,
                          chunk_size=min(64, prompt), prompt_lengths=(prompt,))).eval()
    prog = next(p for p in collect(m, None) if p.name == "prefill")
    configs = [c for c in ALL_PARTITIONER_CONFIGS if c.__name__ != drop]
    unshare = xnn.unshare_packed_constants
    if not copy:
        xnn.unshare_packed_constants = lambda ep: []
    try:
        pte, report = xnn.lower({"prefill": prog}, [XnnpackPartitioner(configs=configs)], False,
                                xnn.xnnpack_decompositions(), [xnn.delegable_views])
    finally:
        xnn.unshare_packed_constants = unshare
    (tmp / "p.pte").write_bytes(pte)
    torch.save(list(prog.example_inputs), tmp / "in.pt")
    r = subprocess.run([sys.executable, "-c", RUN, str(tmp / "p.pte"), str(tmp / "in.pt")], capture_output=True,
                       text=True, timeout=300)
    outcome = "runs" if r.returncode == 0 else (f"crashes (signal {-r.returncode})" if r.returncode < 0
                                                 else f"fails (exit {r.returncode})")
    return outcome, report["prefill"]["delegated_subgraphs"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--d-model", type=int, default=32)
    ap.add_argument("--prompt", type=int, default=16)
    ap.add_argument("--drop", nargs="*", default=[], help="partitioner configs to leave out, one at a time")
    ap.add_argument("--without-copy", action="store_true",
                    help="also lower each program without unshare_packed_constants (the converter before the fix)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for layers in args.layers:
            for drop in [None] + args.drop:
                for copy in [True] + ([False] if args.without_copy else []):
                    outcome, calls = prefill_runs(layers, args.d_model, args.prompt, drop, Path(tmp), copy)
                    rows.append([str(layers), str(args.d_model), str(args.prompt), drop or "-",
                                 "yes" if copy else "no", str(calls), outcome])
                    print(f"# layers {layers}, without {drop or '-'}, copy {copy}: {outcome}", file=sys.stderr,
                          flush=True)
    print(table(["layers", "d_model", "prompt", "config left out", "constant copied", "delegated subgraphs", "prefill"],
                rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
