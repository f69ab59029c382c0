"""Seconds of an int8-static ExecuTorch XNNPACK conversion of a model with no convolution, with and
without `executorch_xnnpack.SKIP_CONV_BN_WITHOUT_CONVS` (XNNPACKQuantizer's four conv-batch-norm
annotators export their pattern graphs on every call, and cannot match a graph without a convolution),
and whether the `.pte` bytes are the same. One process, one warm-up conversion first, then ``--rounds``
rounds of both settings, the order swapped every round::

    PYTHONPATH=. python benchmarks/xnnpack_static_annotate.py --rounds 4

The model has the demo's `mlp-256` shape (sdk/demo.yaml: 64 -> 256 -> 10, ReLU), random weights."""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args(argv)
    import torch

    import edgesdk
    from edgesdk.converters import executorch_xnnpack as xnn
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    x, cal = torch.randn(1, 64), [torch.randn(1, 64) for _ in range(64)]

    def once(skip: bool) -> tuple[float, str]:
        xnn.SKIP_CONV_BN_WITHOUT_CONVS = skip
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            art = edgesdk.convert(m, x, "executorch-xnnpack", out_dir=d, quantize="int8-static", calibration=cal)
            s = time.perf_counter() - t
            h = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(art.path).rglob("*.pte")))).hexdigest()
        return s, h
    once(True)  # the process's first conversion pays the imports and compiler warm-up
    res: dict = {True: [], False: []}
    for r in range(args.rounds):
        for skip in ((False, True) if r % 2 == 0 else (True, False)):
            res[skip].append(once(skip))
    same = len({h for v in res.values() for _, h in v}) == 1
    print("| conv-bn annotators | convert s (each round) | median s | .pte |")
    print("|---|---|---|---|")
    for skip, label in ((False, "run (ExecuTorch's behaviour)"), (True, "skipped (no convolution)")):
        v = res[skip]
        print(f"| {label} | {' / '.join(f'{s:.1f}' for s, _ in v)} | {statistics.median(s for s, _ in v):.1f} | "
              f"{'same bytes in every conversion' if same else 'DIFFERS'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
