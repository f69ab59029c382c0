"""ExecuTorch XNNPACK: delegate calls and p50 with and without one of the converter's graph rewrites.

``--rewrite views`` (the default): `converters.executorch_xnnpack.delegable_views`. The pass rewrites, before
partitioning, the no-op ``expand_copy`` that every 4-D ``matmul`` becomes and
the ``split_with_sizes_copy`` of a fused QKV projection as ops the XNNPACK partitioner takes; each had
ended a delegated partition and run on the portable kernels. For each model (the shipped decoder
teacher and the encoder-decoder student with random weights, and zoo transformers from
`benchmarks/zoo_models.py`) the SDK converts the ``.pte`` twice, ``DELEGABLE_VIEWS`` off ("before") and
on ("after"), same scheme and options, and per program prints the delegate calls (partitions) and the
p50 of both, run interleaved in one process (`litert_static_ops.interleaved_runs`: order rotated every
round, 3 warm-up calls then >= 5 calls and >= 0.2 s per turn, the same inputs, ``--threads``), with the
median of the per-round after/before ratios, min-max in brackets. The outputs of both are compared on
the same inputs (max abs difference).

``--rewrite attention``: `executorch_xnnpack.unmasked_attention` (``UNMASKED_ATTENTION`` off / on), an
unmasked ``scaled_dot_product_attention`` as plain softmax instead of ExecuTorch's ``_safe_softmax``, whose
fully-masked-row guard runs on the portable kernels. ``--rewrite masked-attention``:
`executorch_xnnpack.bool_masked_attention` (``BOOL_MASKED_ATTENTION`` off / on), a boolean-masked one with
that guard computed on the mask instead of the scores. ``--rewrite float-masked-attention``:
`executorch_xnnpack.float_masked_attention` (``FLOAT_MASKED_ATTENTION`` off / on), the same for an additive
float mask (T5's position bias). ``--rewrite norms``: `executorch_xnnpack.layer_norm_as_mean` on norms over
several rows too (``MULTI_ROW_NORMS`` off / on; single-row norms are decomposed either way).
``--rewrite input-layout``: `executorch_xnnpack.channels_last_before_quantize` (``CHANNELS_LAST_BEFORE_QUANTIZE``
off / on), an int8-static image input transposed to channels-last as float before its quantize, not as int8.
``--rewrite depthwise-split``: `executorch_xnnpack.split_large_depthwise` (``SPLIT_LARGE_DEPTHWISE`` off / on),
depthwise convolutions of more than 25 taps as sums of ones XNNPACK runs as depthwise convolutions.

    PYTHONPATH=. python benchmarks/xnnpack_views.py --models decoder,encdec,bert-tiny --out /tmp/xv
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite attention --models whisper-tiny-encoder --out /tmp/xa
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite masked-attention --models bert-tiny --out /tmp/xm
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite float-masked-attention --models t5-tiny --out /tmp/xf
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite norms --models mamba,encdec,deit_tiny_patch16_224 --out /tmp/xn
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite input-layout --scheme int8-static --models mnasnet0_5 --out /tmp/xi
    PYTHONPATH=. python benchmarks/xnnpack_views.py --rewrite depthwise-split --models convnext_atto --out /tmp/xd
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import interleaved_runs  # noqa: E402

TARGET = "executorch-xnnpack"
SWITCHES = {"views": "DELEGABLE_VIEWS", "cse": "SHARED_SUBEXPRESSIONS", "attention": "UNMASKED_ATTENTION",
            "masked-attention": "BOOL_MASKED_ATTENTION", "float-masked-attention": "FLOAT_MASKED_ATTENTION",
            "norms": "MULTI_ROW_NORMS", "input-layout": "CHANNELS_LAST_BEFORE_QUANTIZE",
            "depthwise-split": "SPLIT_LARGE_DEPTHWISE"}  # the converter's switches


def build(name: str):
    """(model, example inputs or None, edgesdk.convert keywords)."""
    import torch
    torch.manual_seed(0)
    if name == "decoder":  # the shipped teacher, two prompt classes as the tests convert it
        from edgesdk.models.teachers import load_teacher
        m = load_teacher("decoder")
        m.cfg.prompt_lengths, m.cfg.max_new_tokens = (40,), 12
        return m, None, {"prompt_lengths": [16, 40]}
    if name == "encdec":
        from edgesdk.models.encdec import EncDec
        return EncDec().eval(), None, {"prompt_lengths": [32, 64]}
    if name == "mamba":  # the demo's student before training (initialised from the shipped teacher)
        from edgesdk.models.mamba import Mamba
        from edgesdk.models.teachers import load_teacher
        m = Mamba.from_teacher(load_teacher("decoder")).eval()
        m.cfg.prompt_lengths = (128,)
        return m, None, {}
    from benchmarks.zoo_models import build as zoo_build
    return zoo_build(name)


def convert(name: str, on: bool, scheme: str, out: Path, rewrite: str = "views"):
    import edgesdk
    from edgesdk.converters import executorch_xnnpack as xnn
    model, example, kw = build(name)
    if name in ("decoder", "encdec"):
        opts = dict(kw, verify_samples=1)
    else:  # a zoo model: calibrated (int8-static) and gated on the inputs `zoo.py convert` gives it
        from benchmarks.zoo import zoo_options
        opts = zoo_options(model, example, kw, scheme)
    if scheme != "fp32":
        opts.update(quantize=scheme, max_drop=None)
    switch = SWITCHES[rewrite]
    before = getattr(xnn, switch)
    setattr(xnn, switch, on)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            t0 = time.perf_counter()
            art = edgesdk.convert(model, example, TARGET, out_dir=out / f"{name}-{scheme}-{rewrite}-{'after' if on else 'before'}",
                                  **opts)
    finally:
        setattr(xnn, switch, before)
    return art, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), default=["decoder", "encdec", "bert-tiny"])
    ap.add_argument("--scheme", default="fp32")
    ap.add_argument("--rewrite", choices=sorted(SWITCHES), default="views", help="which rewrite is off before, on after")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    from edgesdk import runtime
    from edgesdk.runtime.profile import program_runner
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {TARGET} {args.scheme}, {args.rewrite} "
          f"({SWITCHES[args.rewrite]}) off / on, {args.threads} threads, "
          f"{args.rounds} interleaved rounds")
    print("| model | program | delegate calls before -> after | p50 ms before | after / before | max abs diff | "
          "convert s before / after |")
    print("|---|---|---|---|---|---|---|")
    for name in args.models:
        arts = {v: convert(name, v == "after", args.scheme, args.out, args.rewrite) for v in ("before", "after")}
        sessions = {v: runtime.load(a.path, threads=args.threads) for v, (a, _) in arts.items()}
        for prog in arts["after"][0].manifest.programs:
            calls = {v: a.manifest.extra["partition"][prog]["delegated_subgraphs"] for v, (a, _) in arts.items()}
            once, arrays, _ = program_runner(sessions["before"], prog, None, 0, None, 32)
            after = sessions["after"].program(prog)
            diff = max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
                       for x, y in zip(once(), after.run(arrays)))
            # interleaved_runs divides by its "fp32" entry: here that is the program before the pass
            t = interleaved_runs({"fp32": once, "after": lambda: after.run(arrays)}, args.rounds)
            secs = " / ".join(f"{arts[v][1]:.0f}" for v in ("before", "after"))
            print(f"| {name} | {prog} | {calls['before']} -> {calls['after']} | {t['fp32'][0]:.3f} | "
                  f"{t['after'][1]:.2f}x ({t['after'][2]:.2f}-{t['after'][3]:.2f}) | {diff:.1e} | {secs} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
