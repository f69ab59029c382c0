"""Which op types LiteRT's int8-static recipe leaves float, and what that costs: delegate partitions
and p50 against fp32, side by side.

For each model (from `benchmarks/zoo_models.py`, random weights; its fp32 ``.tflite`` made by
`edgesdk.convert`), the fp32 graph is quantized with ai-edge-quantizer in these ways:

- ``all int8``: every op type the quantizer supports (its ``static_wi8_ai8`` recipe);
- ``before``: FULLY_CONNECTED and convolutions only (the SDK's recipe until 2026-12-02, and still its
  recipe for transformers, `converters.litert_cpu.TRANSFORMER_STATIC_OPS`);
- ``sdk``: the SDK's recipe for CNNs and MLPs (`converters.litert_cpu.STATIC_FLOAT_OPS` float, model
  I/O float);
- ``sdk but OP int8``: the SDK's recipe with one of its float op types quantized after all, for each
  such op type the model has: the partitions it adds are why that op type stays float.

``partitions`` counts the XNNPACK delegate nodes after LiteRT's interpreter applied its default
delegate (one partition = the whole graph in XNNPACK). ``time`` runs fp32, ``before`` and ``sdk``
interleaved in one process (2 threads, order rotated every round) and prints the median of the
per-round ratios against fp32, with min-max. Calibration: 8 random inputs (timings do not depend on
them; accuracy is the SDK's gate's job, not this script's).

    PYTHONPATH=. python benchmarks/litert_static_ops.py --models mobilenet_v3_small,bert-tiny

``--depthwise`` prints another table: the SDK's CNN recipe with every depthwise convolution int8, with
the SDK's choice float (kernels above 5x5, `converters.litert_cpu.FLOAT_DEPTHWISE_ABOVE`, or a depth
multiplier above 1) and with all of them float, each against fp32, interleaved the same way.

    PYTHONPATH=. python benchmarks/litert_static_ops.py --depthwise --models convnext_atto,mobilenet_v2

``--adds``: the SDK's CNN recipe with every ADD float (before 2026-12-03), with the ADDs XNNPACK would not
take in int8 float (a constant input, two input shapes, or a calibrated input-to-output scale ratio outside
XNNPACK's range: `converters.litert_cpu.float_add_scopes`, the SDK's choice) and with every ADD int8;
partitions and time against fp32.

    PYTHONPATH=. python benchmarks/litert_static_ops.py --adds --models mnasnet0_5,convnext_atto
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

def fp32_artifact(name: str, target: str, out: Path, filename: str) -> Path:
    """The zoo model's fp32 file on ``target``, converted by the SDK once and kept under ``out``."""
    dst = out / f"{name}-{target}-fp32" / filename
    if not dst.exists():
        import edgesdk
        from benchmarks.zoo_models import build, enable_zoo_packages
        enable_zoo_packages()
        model, example, kw = build(name)
        kw.pop("samples", None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            edgesdk.convert(model, example or None, target, quantize="fp32", out_dir=out,
                            name=f"{name}-{target}-fp32", verify_samples=1, **kw)
    return dst


def fp32_tflite(name: str, out: Path) -> Path:
    return fp32_artifact(name, "litert-cpu", out, "model.tflite")


def _calibration(src: Path, n: int = 8) -> dict:
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(src))
    sig = next(iter(it.get_signature_list()))
    rng = np.random.default_rng(0)

    def sample(d):
        if np.issubdtype(d["dtype"], np.floating):
            return rng.standard_normal(d["shape"]).astype(d["dtype"])
        return rng.integers(1, 100, d["shape"]).astype(d["dtype"])  # token ids
    inputs = it.get_signature_runner(sig).get_input_details()
    return {sig: [{k: sample(d) for k, d in inputs.items()} for _ in range(n)]}


# --depthwise: which depthwise convolutions the CNN recipe keeps float (`large_depthwise_scopes`: kernel side
# above this or a depth multiplier; None: none; 0: all)
DEPTHWISE_VARIANTS = {"dw-int8": None, "dw-sdk-float": 5, "dw-all-float": 0}
# --adds: every ADD float (the recipe until 2026-12-03), the ones XNNPACK would not take in int8 float
# (`float_add_scopes`: broadcast, or a scale ratio out of its range; the SDK's), every ADD int8
ADD_VARIANTS = ("add-all-float", "add-sdk-float", "add-int8")


def quantize(src: Path, dst: Path, variant: str, int8_op: str | None = None, redo: bool = False) -> Path:
    """Write ``dst`` quantized the ``variant`` way (``all``, ``before``, ``sdk``; ``int8_op``: that
    one of the SDK's float op types quantized after all); an existing ``dst`` is kept unless ``redo``."""
    if dst.exists() and not redo:
        return dst
    from ai_edge_quantizer import qtyping, quantizer, recipe

    from edgesdk.converters.litert_cpu import DYNAMIC_FLOAT_OPS, STATIC_FLOAT_OPS, keep_adds_float, static_quantizer
    if variant.startswith("dynamic"):  # int8-dynamic: before (depthwise float) or the SDK's float ops
        qt = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
        for op in ("DEPTHWISE_CONV_2D",) if variant == "dynamic-before" else DYNAMIC_FLOAT_OPS:
            qt.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                          algorithm_key="no_quantize")
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            qt.quantize().export_model(str(dst), overwrite=True)
        return dst
    if variant == "before":  # the recipe transformers keep
        qt, _ = static_quantizer(src, "transformer")
    elif variant == "sdk":
        qt, _ = static_quantizer(src, "conv", [op for op in STATIC_FLOAT_OPS if op != int8_op])
    elif variant in ADD_VARIANTS:
        qt, _ = static_quantizer(src, "conv", STATIC_FLOAT_OPS + (("ADD",) if variant == "add-all-float" else ()))
    elif variant in DEPTHWISE_VARIANTS:
        qt, _ = static_quantizer(src, "conv", float_depthwise_above=DEPTHWISE_VARIANTS[variant])
    else:
        qt = quantizer.Quantizer(str(src), recipe.static_wi8_ai8())
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        ranges = qt.calibrate(_calibration(src))
        if variant == "add-sdk-float":  # the SDK's rule, applied after calibration as quantize_tflite does
            keep_adds_float(qt, src, ranges)
        qt.quantize(ranges).export_model(str(dst), overwrite=True)
    return dst


def _interpreter(path: Path, threads: int = 2):
    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(path), num_threads=threads)
    it.allocate_tensors()
    rng = np.random.default_rng(1)
    for d in it.get_input_details():
        v = rng.standard_normal(d["shape"]) if np.issubdtype(d["dtype"], np.floating) else rng.integers(1, 100, d["shape"])
        it.set_tensor(d["index"], v.astype(d["dtype"]))
    return it


def op_types(path: Path) -> set[str]:
    from ai_edge_litert.interpreter import Interpreter
    return {o["op_name"] for o in Interpreter(model_path=str(path))._get_ops_details()}


def partitions(path: Path) -> int:
    return sum(o["op_name"] == "DELEGATE" for o in _interpreter(path)._get_ops_details())


def interleaved_runs(runs: dict, rounds: int) -> dict[str, tuple[float, float, float, float]]:
    """{name: (p50 ms, ratio to ``runs["fp32"]`` median, min, max)}: each callable in ``runs`` timed in turn
    (3 warm-up calls, then >= 5 calls and >= 0.2 s per turn), the order rotated by one every round.

    Rotated, not reversed: with the order reversed every round, the first and last callables follow
    themselves across every round boundary and the ones between never do, and a middle one read 4-9%
    slower than its own copy timed last (`onnx_static_ops.py`'s ``sdk again`` control, 8 ONNX Runtime CNNs,
    RESULTS.md "#17, fifteenth session"). Rotated, each callable sits at each place once in every ``len(runs)``
    rounds and always follows another one. With two callables the two orders are the same."""
    ms = {k: [] for k in runs}
    keys = list(runs)
    for r in range(rounds):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            for _ in range(3):
                runs[k]()
            n, t0 = 0, time.perf_counter()
            while n < 5 or time.perf_counter() - t0 < 0.2:
                runs[k]()
                n += 1
            ms[k].append((time.perf_counter() - t0) / n * 1e3)
    out = {}
    for k, v in ms.items():
        ratios = [a / b for a, b in zip(v, ms["fp32"])]
        out[k] = (statistics.median(v), statistics.median(ratios), min(ratios), max(ratios))
    return out


def interleaved(paths: dict[str, Path], rounds: int, threads: int) -> dict[str, tuple[float, float, float, float]]:
    """{variant: (p50 ms, ratio to fp32 median, min, max)} over ``rounds`` interleaved rounds."""
    return interleaved_runs({k: _interpreter(p, threads).invoke for k, p in paths.items()}, rounds)


def dynamic_table(args, out: Path) -> int:
    """int8-dynamic: depthwise convolutions float (before) vs every convolution float (the SDK)."""
    from edgesdk.converters.litert_cpu import DYNAMIC_FLOAT_OPS
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          f"rounds; int8-dynamic float op types: before DEPTHWISE_CONV_2D, sdk {', '.join(DYNAMIC_FLOAT_OPS)}")
    print("| model | dynamic before / fp32 | dynamic sdk / fp32 | size before / sdk vs fp32 | fp32 p50 ms |")
    print("|---|---|---|---|---|")
    for name in args.models:
        src = fp32_tflite(name, out)
        paths = {"fp32": src, **{v: quantize(src, src.parent / f"{v}.tflite", v, redo=args.redo)
                                 for v in ("dynamic-before", "dynamic-sdk")}}
        t = interleaved(paths, args.rounds, args.threads)
        size = " / ".join(f"{paths[v].stat().st_size / src.stat().st_size:.2f}" for v in ("dynamic-before", "dynamic-sdk"))
        cells = [f"{t[v][1]:.2f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in ("dynamic-before", "dynamic-sdk")]
        print(f"| {name} | {' | '.join(cells)} | {size} | {t['fp32'][0]:.3f} |", flush=True)
    return 0


def depthwise_table(args, out: Path) -> int:
    """int8-static with every depthwise convolution int8, those above 5x5 float, all float."""
    from edgesdk.converters.litert_cpu import large_depthwise_scopes
    names = list(DEPTHWISE_VARIANTS)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          "rounds; the SDK's CNN recipe with these depthwise convolutions float")
    print("| model | depthwise convs: the SDK's float ones / all | " + " | ".join(f"{v} / fp32" for v in names) + " | fp32 p50 ms |")
    print("|---|---|" + "---|" * len(names) + "---|")
    for name in args.models:
        src = fp32_tflite(name, out)
        paths = {"fp32": src, **{v: quantize(src, src.parent / f"{v}.tflite", v, redo=args.redo) for v in names}}
        t = interleaved(paths, args.rounds, args.threads)
        cells = [f"{t[v][1]:.2f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in names]
        print(f"| {name} | {len(large_depthwise_scopes(src))} / {len(large_depthwise_scopes(src, 0))} | "
              f"{' | '.join(cells)} | {t['fp32'][0]:.3f} |", flush=True)
    return 0


def adds_table(args, out: Path) -> int:
    """int8-static with every ADD float, the ones XNNPACK refuses float (the SDK), every ADD int8: partitions and
    time. The "broadcast" count is of the ADDs the rule keeps float before calibration."""
    from edgesdk.converters.litert_cpu import float_add_scopes
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.threads} threads, {args.rounds} interleaved "
          "rounds; the SDK's CNN recipe with these ADDs float")
    print("| model | ADDs: broadcast / all | partitions " + " / ".join(ADD_VARIANTS) + " | "
          + " | ".join(f"{v} / fp32" for v in ADD_VARIANTS) + " | fp32 p50 ms |")
    print("|---|---|---|" + "---|" * len(ADD_VARIANTS) + "---|")
    for name in args.models:
        src = fp32_tflite(name, out)
        paths = {"fp32": src, **{v: quantize(src, src.parent / f"{v}.tflite", v, redo=args.redo) for v in ADD_VARIANTS}}
        n_add = sum(o["op_name"] == "ADD" for o in _interpreter(src)._get_ops_details())
        parts = " / ".join(str(partitions(paths[v])) for v in ADD_VARIANTS)
        cells = ["" for _ in ADD_VARIANTS] + [""]
        if not args.no_time:
            t = interleaved(paths, args.rounds, args.threads)
            cells = [f"{t[v][1]:.2f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in ADD_VARIANTS] + [f"{t['fp32'][0]:.3f}"]
        print(f"| {name} | {len(float_add_scopes(src))} / {n_add} | {parts} | {' | '.join(cells)} |", flush=True)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=lambda s: s.split(","), required=True, help="zoo model names, comma-separated")
    ap.add_argument("--out", default=str(ROOT / "edgesdk-out" / "litert_static_ops"))
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-time", action="store_true", help="partitions only")
    ap.add_argument("--dynamic", action="store_true",
                    help="int8-dynamic instead: depthwise convolutions float (before) vs the SDK's DYNAMIC_FLOAT_OPS")
    ap.add_argument("--depthwise", action="store_true",
                    help="int8-static with depthwise convolutions int8, above 5x5 float, all float, against fp32")
    ap.add_argument("--redo", action="store_true", help="quantize again (default: reuse the files of an earlier run)")
    ap.add_argument("--adds", action="store_true",
                    help="int8-static with every ADD float, the ones XNNPACK refuses float (the SDK), all int8, against fp32")
    args = ap.parse_args(argv)
    from edgesdk.converters.litert_cpu import STATIC_FLOAT_OPS
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.dynamic:
        return dynamic_table(args, out)
    if args.depthwise:
        return depthwise_table(args, out)
    if args.adds:
        return adds_table(args, out)
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"{args.rounds} interleaved rounds; float op types of the SDK recipe: {', '.join(STATIC_FLOAT_OPS)}")
    print("| model | partitions: all int8 / before / sdk | sdk but one op type int8: partitions | "
          "before / fp32 | sdk (CNN recipe) / fp32 | fp32 p50 ms |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        src = fp32_tflite(name, out)
        d = src.parent
        paths = {v: quantize(src, d / f"{v}.tflite", v, redo=args.redo) for v in ("all", "before", "sdk")}
        present = op_types(src)
        sweep = []
        for op in STATIC_FLOAT_OPS:
            if op in present:
                p = quantize(src, d / f"sdk-{op}.tflite", "sdk", int8_op=op, redo=args.redo)
                sweep.append(f"{op} {partitions(p)}")
        parts = " / ".join(str(partitions(paths[v])) for v in ("all", "before", "sdk"))
        cells = ["", "", ""]
        if not args.no_time:
            t = interleaved({"fp32": src, "before": paths["before"], "sdk": paths["sdk"]}, args.rounds, args.threads)
            cells = [f"{t[v][1]:.2f}x ({t[v][2]:.2f}-{t[v][3]:.2f})" for v in ("before", "sdk")] + [f"{t['fp32'][0]:.3f}"]
        print(f"| {name} | {parts} | {', '.join(sweep) or '-'} | {' | '.join(cells)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
