"""The same XNNPACK operators through ExecuTorch's build and LiteRT's: fp32 and int8-static, side by side.

executorch-xnnpack and litert-cpu both run a model through XNNPACK, each from the XNNPACK build its wheel
ships. For a few single-operator blocks (random weights) the SDK converts four artifacts: ExecuTorch fp32 and
int8-static, LiteRT fp32 and int8-static (`edgesdk.convert`, 8 random calibration inputs, the gate off:
timings do not depend on the weights). All four run interleaved in one process
(`litert_static_ops.interleaved_runs`: order rotated every round, 3 warm-up calls then >= 5 calls and
>= 0.2 s per turn, the same inputs), at each thread count in ``--threads``. Each ratio is the median of the
per-round ratios to ExecuTorch fp32 of the same round; the last column compares the two int8 artifacts.

Blocks (NCHW inputs, as a PyTorch user gives them; both converters add the layout transposes):

- ``fc``: Linear 512 -> 1024 -> 512 on 64 rows (XNNPACK fully-connected);
- ``pw``: 1x1 convolutions 64 -> 256 -> 64 on 56 x 56 (what inverted residuals expand and project with);
- ``dw3``: two 3x3 depthwise convolutions, 96 channels, 112 x 112;
- ``dw5``: two 5x5 depthwise convolutions, 96 channels, 56 x 56.

Every depthwise convolution is int8 in both int8 artifacts: litert-cpu's recipe keeps only kernels above 5 x 5
float, and ExecuTorch's rule (which since this comparison keeps 5 x 5 ones float too) is switched off here, so
that the kernels themselves are compared.

    PYTHONPATH=. python benchmarks/xnnpack_builds.py --out /tmp/xb
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402

ARTIFACTS = (("et-fp32", "executorch-xnnpack", "fp32"), ("et-int8", "executorch-xnnpack", "int8-static"),
             ("lt-fp32", "litert-cpu", "fp32"), ("lt-int8", "litert-cpu", "int8-static"))


def block(name: str):
    """(module, example input) of a block."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    if name == "fc":
        return nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 512)), torch.randn(64, 512)
    if name == "pw":
        return nn.Sequential(nn.Conv2d(64, 256, 1), nn.ReLU(), nn.Conv2d(256, 64, 1)), torch.randn(1, 64, 56, 56)
    if name in ("dw3", "dw5"):
        k, c, hw = (3, 96, 112) if name == "dw3" else (5, 96, 56)
        return (nn.Sequential(nn.Conv2d(c, c, k, padding=k // 2, groups=c), nn.ReLU(),
                              nn.Conv2d(c, c, k, padding=k // 2, groups=c)), torch.randn(1, c, hw, hw))
    raise ValueError(f"unknown block {name!r}")


def convert(name: str, out: Path) -> dict:
    """{artifact key: artifact path} of one block."""
    import torch
    import edgesdk
    model, x = block(name)
    model.eval()
    calibration = [(torch.randn_like(x),) for _ in range(8)]
    from edgesdk.converters import executorch_xnnpack as xnn
    paths = {}
    rule = xnn.FLOAT_DEPTHWISE_ABOVE, xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT
    xnn.FLOAT_DEPTHWISE_ABOVE = xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT = None  # every depthwise convolution int8
    try:
        for key, target, scheme in ARTIFACTS:
            kw = {} if scheme == "fp32" else dict(quantize=scheme, calibration=calibration, max_drop=None)
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                paths[key] = edgesdk.convert(model, (x,), target, out_dir=out / name, name=key, verify_samples=1,
                                             **kw).path
    finally:
        xnn.FLOAT_DEPTHWISE_ABOVE, xnn.FLOAT_DEPTHWISE_WITHOUT_INT8_DOT = rule
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=lambda s: s.split(","), default=["fc", "pw", "dw3", "dw5"])
    ap.add_argument("--threads", type=lambda s: [int(t) for t in s.split(",")], default=[1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    from edgesdk import runtime
    from edgesdk.runtime.profile import program_runner
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} interleaved rounds; ratios: median "
          "of the per-round ratios to ExecuTorch fp32 (min-max)")
    print("| block | threads | ExecuTorch fp32 ms | ExecuTorch int8 / ET fp32 | LiteRT fp32 / ET fp32 | "
          "LiteRT int8 / ET fp32 | ExecuTorch int8 / LiteRT int8 (p50s) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.blocks:
        paths = convert(name, args.out)
        for threads in args.threads:
            sessions = {k: runtime.load(p, threads=threads) for k, p in paths.items()}
            runs = {("fp32" if k == "et-fp32" else k): program_runner(s, None, None, 0, None, 32)[0]
                    for k, s in sessions.items()}
            t = interleaved_runs(runs, args.rounds)
            cell = {k: f"{v[1]:.2f}x ({v[2]:.2f}-{v[3]:.2f})" for k, v in t.items()}
            print(f"| {name} | {threads} | {t['fp32'][0]:.3f} | {cell['et-int8']} | {cell['lt-fp32']} | "
                  f"{cell['lt-int8']} | {t['et-int8'][0] / t['lt-int8'][0]:.2f}x |", flush=True)
            del sessions, runs
            gc.collect()  # ExecuTorch's thread pool is resized only when no program holds it
    return 0


if __name__ == "__main__":
    sys.exit(main())
