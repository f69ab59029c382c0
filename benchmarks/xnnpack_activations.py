"""Activations between int8 layers on ExecuTorch's XNNPACK: fp32 (dequantize, op, quantize) vs int8 in and out.

ExecuTorch's XNNPACK partitioner takes sigmoid, GELU, HardSwish and tanh in fp32 only: in an int8-static model
each one between two int8 layers sits between a dequantize and a quantize. Where the op is the dequantized
tensor's only reader, the per-op profile shows one unary op and no conversions (the pair is folded on the way to
XNNPACK). SiLU is not: the lowering decomposes it into a sigmoid and a product that both read the dequantized
tensor, and it runs as conversion, fp32 sigmoid, fp32 product, conversion. This script
converts small blocks (random weights, 8 random calibration inputs, the gate off: timings do not depend on the
weights) three ways with `edgesdk.convert` and times them interleaved in one process
(`litert_static_ops.interleaved_runs`):

- ``fp32``: no quantization;
- ``act-fp32``: int8-static with the activation in fp32 (the SDK's recipe with `INT8_SIGMOID` off: what
  ExecuTorch's own partitioner does);
- ``act-int8``: int8-static with the activation's input and output int8. For SiLU and sigmoid this is the
  SDK's recipe (`executorch_xnnpack.INT8_SIGMOID`: SiLU as x * sigmoid(x), both ops int8). For GELU, HardSwish
  and tanh the script annotates the op itself (output scale from a min-max observer) and lets the partitioner
  take it between int8 quantize ops; the SDK does not.

Blocks: four inverted residuals (1x1 conv 32 -> 96, activation, 3x3 depthwise conv, activation, 1x1 conv 96 -> 32,
plus the input) on 1 x 32 x 56 x 56, with the activation ``silu``, ``gelu``, ``hardswish`` or ``tanh``; and
``se`` (ReLU blocks, each with a squeeze-excitation gate: mean, 1x1 conv, sigmoid, product). Ratios are medians of
the per-round ratios to fp32 of the same round (min-max); the last column compares the two int8 artifacts.

    PYTHONPATH=. python benchmarks/xnnpack_activations.py --out /tmp/xa
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
from benchmarks.recommended_vs_fp32 import runner  # noqa: E402

BLOCKS = ("silu", "se", "gelu", "hardswish", "tanh")


def block(act: str):
    """(module, example input) of a block."""
    import torch
    from torch import nn
    torch.manual_seed(0)
    fn = {"silu": nn.functional.silu, "gelu": nn.functional.gelu, "hardswish": nn.functional.hardswish,
          "tanh": torch.tanh, "se": nn.functional.relu}[act]

    class Residual(nn.Module):
        def __init__(self, c=32, e=96):
            super().__init__()
            self.expand, self.project = nn.Conv2d(c, e, 1), nn.Conv2d(e, c, 1)
            self.dw = nn.Conv2d(e, e, 3, padding=1, groups=e)
            self.gate = nn.Conv2d(e, e, 1) if act == "se" else None

        def forward(self, x):
            h = fn(self.dw(fn(self.expand(x))))
            if self.gate is not None:
                h = h * torch.sigmoid(self.gate(h.mean((2, 3), keepdim=True)))
            return x + self.project(h)
    return nn.Sequential(*[Residual() for _ in range(4)]).eval(), torch.randn(1, 32, 56, 56)


@contextlib.contextmanager
def activation_int8(act: str, on: bool):
    """The SDK's recipe with its int8 sigmoids on or off; for GELU / HardSwish / tanh with ``on``, those ops
    annotated int8 and taken by the partitioner between int8 quantize ops too (this script only)."""
    import torch
    from edgesdk.converters import executorch_xnnpack as xnn
    saved = xnn.INT8_SIGMOID, xnn.annotate_int8_sigmoids, xnn.partitioner_configs
    xnn.INT8_SIGMOID = on
    if on and act in ("gelu", "hardswish", "tanh"):
        from executorch.backends.xnnpack.partition.config import generic_node_configs as configs
        from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType
        from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
        op, config = {"gelu": (torch.ops.aten.gelu.default, configs.GeluConfig),
                      "hardswish": (torch.ops.aten.hardswish.default, configs.HardswishConfig),
                      "tanh": (torch.ops.aten.tanh.default, configs.TanhConfig)}[act]

        def annotate(gm, qconfig):
            n_done = 0
            for n in gm.graph.nodes:
                if n.op == "call_function" and n.target == op and "quantization_annotation" not in n.meta:
                    n.meta["quantization_annotation"] = QuantizationAnnotation(
                        input_qspec_map={n.args[0]: qconfig.input_activation},
                        output_qspec=qconfig.output_activation, _annotated=True)
                    n_done += 1
            return n_done

        class Int8Config(config):
            def supported_precision_types(self):
                return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]
        xnn.annotate_int8_sigmoids = annotate
        xnn.partitioner_configs = lambda: [Int8Config if c is config else c for c in saved[2]()]
    try:
        yield
    finally:
        xnn.INT8_SIGMOID, xnn.annotate_int8_sigmoids, xnn.partitioner_configs = saved


def convert(act: str, out: Path) -> dict:
    """{variant: artifact path} of one block."""
    import torch
    import edgesdk
    model, x = block(act)
    calibration = [(torch.randn_like(x),) for _ in range(8)]
    paths = {}
    for key, scheme, on in (("fp32", "fp32", False), ("act-fp32", "int8-static", False),
                            ("act-int8", "int8-static", True)):
        kw = {} if scheme == "fp32" else dict(quantize=scheme, calibration=calibration, max_drop=None)
        with activation_int8(act, on), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            paths[key] = edgesdk.convert(model, (x,), "executorch-xnnpack", out_dir=out / act, name=key,
                                         verify_samples=1, **kw).path
    return paths


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--blocks", type=lambda s: s.split(","), default=list(BLOCKS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} "
          "interleaved rounds; ratios: median of the per-round ratios to fp32 (min-max)")
    print("| block | fp32 ms | int8, activation fp32 / fp32 | int8, activation int8 / fp32 | "
          "activation int8 / activation fp32 (p50s) |")
    print("|---|---|---|---|---|")
    for act in args.blocks:
        runs = {k: runner(p, args.threads) for k, p in convert(act, args.out).items()}
        t = interleaved_runs(runs, args.rounds)
        cell = {k: f"{v[1]:.2f}x ({v[2]:.2f}-{v[3]:.2f})" for k, v in t.items()}
        print(f"| {act} | {t['fp32'][0]:.3f} | {cell['act-fp32']} | {cell['act-int8']} | "
              f"{t['act-int8'][0] / t['act-fp32'][0]:.2f}x |", flush=True)
        del runs
        gc.collect()  # ExecuTorch's thread pool is resized only when no program holds it
    return 0


if __name__ == "__main__":
    sys.exit(main())
