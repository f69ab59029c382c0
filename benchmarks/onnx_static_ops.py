"""ONNX Runtime int8-static on CNNs: Conv/MatMul/Gemm only vs the SDK's CNN op set, side by side.

For each model (from `benchmarks/zoo_models.py`, random weights; its fp32 ONNX file made by
`edgesdk.convert`), `converters.onnx_cpu.quantize_onnx` builds int8-static files from 8 random
calibration inputs: ``before`` quantizes `STATIC_OPS` (the recipe until 2026-12-02, still the one for
transformers), ``sdk`` the current CNN recipe (`CNN_STATIC_OPS`), ``+Concat`` the same with Concat quantized
too (why it is not), ``float stem`` the same with the image stem (convolutions reading <= 4 channels) left float
(why it is not), and ``sdk again``, a second session of the sdk file: the control, whose ratio to ``sdk`` is
the run's noise floor; ``--variants`` picks some. For each: how many DequantizeLinear -> QuantizeLinear
requantizations and float nodes are left after ONNX Runtime's own graph optimization (the session's optimized
model), and p50 against fp32, interleaved in one process (2 threads, order rotated every round, the median
of the per-round ratios with min-max).

    PYTHONPATH=. python benchmarks/onnx_static_ops.py --models mnasnet0_5,mobilenetv4_conv_small
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.litert_static_ops import fp32_artifact, interleaved_runs  # noqa: E402


def _session(path: Path, threads: int = 2, optimized: Path | None = None, profile_prefix: str | None = None):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads, o.inter_op_num_threads, o.log_severity_level = threads, 1, 3
    if optimized is not None:
        o.optimized_model_filepath = str(optimized)
    if profile_prefix is not None:
        o.enable_profiling, o.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def _inputs(sess, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(np.float32)
            for i in sess.get_inputs()}


def quantize(src: Path, variant: str) -> Path:
    import torch

    from edgesdk.converters import onnx_cpu
    dst = src.with_name(f"{variant}.onnx")
    if not dst.exists() and variant == "sdk-again":
        dst.write_bytes(quantize(src, "sdk").read_bytes())
    elif not dst.exists():
        s = _session(src)
        cal = [tuple(torch.from_numpy(a) for a in _inputs(s, k).values()) for k in range(8)]
        kept = onnx_cpu.CNN_STATIC_OPS, onnx_cpu.tied_weight_nodes
        if variant == "concat":
            onnx_cpu.CNN_STATIC_OPS = kept[0] + ("Concat",)
        if variant == "float-stem":  # what the recipe keeps float, and the stem
            onnx_cpu.tied_weight_nodes = lambda path: kept[1](path) + stem_nodes(path)
        try:
            onnx_cpu.quantize_onnx(src, dst, "int8-static", input_names=[i.name for i in s.get_inputs()],
                                   calibration=cal, exclude=[], cnn=variant != "before")
        finally:
            onnx_cpu.CNN_STATIC_OPS, onnx_cpu.tied_weight_nodes = kept
    return dst


VARIANTS = {"before": "before", "sdk": "sdk", "concat": "+Concat", "float-stem": "float stem", "sdk-again": "sdk again"}


def stem_nodes(src: Path) -> list[str]:
    """A CNN's image stem: the convolutions `onnx_conv_kinds.conv_kinds` calls ``stem``."""
    from benchmarks.onnx_conv_kinds import conv_kinds
    return [name for name, kind in conv_kinds(str(src)) if kind == "stem"]


def after_ort(path: Path) -> tuple[int, list[str]]:
    """(DequantizeLinear -> QuantizeLinear pairs, float op types) in ORT's optimized graph."""
    import onnx
    with tempfile.TemporaryDirectory() as tmp:
        opt = Path(tmp) / "opt.onnx"
        _session(path, 1, opt)
        g = onnx.load(str(opt)).graph
    users = collections.defaultdict(list)
    for n in g.node:
        for i in n.input:
            users[i].append(n.op_type)
    requant = sum(1 for n in g.node if n.op_type == "DequantizeLinear" and users[n.output[0]] == ["QuantizeLinear"])
    quantized = ("QLinear", "QGemm", "Quantize", "Dequantize", "Reorder", "Transpose", "Reshape", "Flatten")
    floats = collections.Counter(n.op_type for n in g.node if not n.op_type.startswith(quantized))
    return requant, [f"{op}x{c}" for op, c in floats.most_common(4)]


def interleaved(paths: dict[str, Path], rounds: int, threads: int) -> dict[str, tuple[float, float, float, float]]:
    sess = {k: _session(p, threads) for k, p in paths.items()}
    return interleaved_runs({k: (lambda s=s, f=_inputs(s, 99): s.run(None, f)) for k, s in sess.items()}, rounds)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), required=True, help="zoo model names, comma-separated")
    ap.add_argument("--out", default=str(ROOT / "edgesdk-out" / "onnx_static_ops"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", type=lambda s: s.split(","), default=list(VARIANTS),
                    help=f"int8 files to time against fp32 (default all: {','.join(VARIANTS)})")
    args = ap.parse_args(argv)
    from edgesdk.converters.onnx_cpu import CNN_STATIC_OPS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          f"rounds; sdk op set: {', '.join(CNN_STATIC_OPS)}")
    variants = [v for v in VARIANTS if v in args.variants]
    print("| model | requantizations " + " / ".join(variants) + " | float ops left: " + " ; ".join(variants) + " | "
          + " | ".join(f"{VARIANTS[v]} / fp32" for v in variants) + " | fp32 p50 ms |")
    print("|---" * (len(variants) + 3) + "|")
    for name in args.models:
        src = fp32_artifact(name, "onnx-cpu", out, "model.onnx")
        paths = {"fp32": src, **{v: quantize(src, v) for v in variants}}
        left = [after_ort(paths[v]) for v in variants]
        t = interleaved(paths, args.rounds, args.threads)
        cells = [f"{t[v][1]:.3f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in variants]
        print(f"| {name} | {' / '.join(str(r) for r, _ in left)} | {' ; '.join(', '.join(f) or '-' for _, f in left)} | "
              f"{' | '.join(cells)} | {t['fp32'][0]:.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
