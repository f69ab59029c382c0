"""int8 recipes per CPU target on public architectures: p50 int8 / fp32, side by side, and the gate.

Two phases, both resumable (results in ``--out/int8_recipes.{rows,timing}.json``):

    # convert fp32 + every int8 scheme of each target (and the pre-tuning recipe, ``int8_ops="all"``)
    cpu-shared python benchmarks/int8_recipes.py convert --models mobilenet_v3_small,bert-tiny
    # time them: per model and target, fp32 and every scheme interleaved in one process, same threads
    cpu-exclusive python benchmarks/int8_recipes.py time --threads 2 --rounds 8
    python benchmarks/int8_recipes.py report      # markdown table (ratio = median of per-round ratios)
    cpu-shared python benchmarks/int8_recipes.py ops --models bert-tiny   # where the time goes, per op type

``ops`` names the causes: per op type, its share of the profiled time (ONNX Runtime's profiler,
ExecuTorch's ETDump, through `runtime.profile`) and its node count; for LiteRT, which has no
per-op timing in its Python tooling, the op types by output dtype and the number of XNNPACK
delegate partitions after the interpreter applied the delegate.

The ratio compares, at the same thread count and inputs, one int8 artifact with the fp32 artifact of
the same model on the same target, both produced by `edgesdk.convert` and timed by
`runtime.profile.interleaved` (fp32 and every scheme take turns, order reversed every round).
``gate`` is the default accuracy gate (top-1 agreement >= 99% for class scores, min cosine >= 0.99
otherwise) judged on held-out inputs; with random weights many outputs are "not scorable".
Models come from `benchmarks/zoo_models.py` (random weights; ``minilm`` is the real MiniLM,
calibrated and gated on real sentences).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("onnx-cpu", "executorch-xnnpack", "litert-cpu")
MODELS = ("mobilenet_v3_small", "deit_tiny_patch16_224", "levit_128s", "whisper-tiny-encoder", "bert-tiny",
          "llama-tiny", "resnet18", "minilm")
SKIP = ("fp16", "int8-qat")      # not int8, or needs a QAT-trained model
BEFORE = "int8-static/all-ops"   # the pre-tuning recipe: every op the tool can quantize, quantized
CALIBRATION, EVAL = 16, 8


def schemes(target: str) -> list[str]:
    """fp32, every int8 scheme of the target, and the pre-tuning static recipe where it differs."""
    from edgesdk.converters.registry import get_converter
    conv = get_converter(target)
    out = [s for s in conv.quantization if s not in SKIP]
    return out + ([BEFORE] if "int8_ops" in conv.options else [])


# conversions and timings in two files, so a timing run can start while conversions go on
def _load(out: Path) -> dict:
    res = {"rows": {}, "timing": {}}
    for part in res:
        f = out / f"int8_recipes.{part}.json"
        if f.exists():
            res[part] = json.loads(f.read_text())
    return res


def _save(out: Path, res: dict, part: str) -> None:
    f = out / f"int8_recipes.{part}.json"
    tmp = f.with_suffix(".tmp")
    tmp.write_text(json.dumps(res[part], indent=1, default=str))
    tmp.replace(f)


def convert(args) -> int:
    import warnings

    import edgesdk
    from benchmarks.zoo import samples_like
    from benchmarks.zoo_models import build, enable_zoo_packages
    from edgesdk.converters.accuracy import judge
    from edgesdk.converters.programs import collect
    enable_zoo_packages()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.models:
        model, example, kw = build(name)
        ex = collect(model, example or None, kw.get("example_kwargs"))[0].example_inputs
        real = kw.pop("samples", None)
        cal, ev = (real[:16], real[16:]) if real else (samples_like(ex, CALIBRATION, 10), samples_like(ex, EVAL, 20))
        for target in args.targets:
            for scheme in schemes(target):
                if args.schemes and scheme not in args.schemes:
                    continue
                key = f"{name}|{target}|{scheme}"
                res = _load(out)
                if key in res["rows"] and not args.redo:
                    continue
                q, _, variant = scheme.partition("/")
                opts = dict(kw, verify_samples=1)
                if variant:
                    opts["int8_ops"] = "all"
                if q != "fp32":
                    # the gate is judged below on the recorded figures, so a failing artifact is still timed
                    opts.update(calibration=cal, eval_data=ev, max_drop=None)
                t0 = time.perf_counter()
                row = {"model": name, "target": target, "scheme": scheme}
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        art = edgesdk.convert(model, example or None, target, quantize=q, out_dir=out / "artifacts",
                                              name=f"{name}-{target}-{scheme.replace('/', '-')}", **opts)
                    row.update(status="ok", path=str(art.path), size_bytes=art.size_bytes)
                    if q != "fp32":
                        g = judge(art.verification, "default", False)
                        row["gate"] = {"passed": g.get("passed"), "drop": g.get("drop"),
                                       "basis": g.get("drop_basis"), "not_scorable": g.get("not_scorable")}
                except Exception as e:  # recorded, the next scheme still runs
                    row.update(status="failed", error=" ".join(f"{type(e).__name__}: {e}".split())[:400])
                row["convert_s"] = round(time.perf_counter() - t0, 1)
                print(json.dumps(row, default=str), flush=True)
                res = _load(out)
                res["rows"][key] = row
                _save(out, res, "rows")
    return 0


def time_all(args) -> int:
    from edgesdk.runtime.profile import interleaved
    out = Path(args.out)
    res = _load(out)
    groups: dict[tuple, list] = {}
    for key, r in res["rows"].items():
        if r["status"] == "ok" and (not args.models or r["model"] in args.models):
            groups.setdefault((r["model"], r["target"]), []).append(key)
    for (model, target), keys in sorted(groups.items()):
        keys.sort(key=lambda k: k.split("|")[2] != "fp32")  # fp32 first: the baseline
        if not keys or keys[0].split("|")[2] != "fp32":
            continue
        t0 = time.perf_counter()
        per = interleaved([(res["rows"][k]["path"], args.threads) for k in keys], rounds=args.rounds,
                          block_s=args.block_s)
        base = per[0]
        for k, samples in zip(keys, per):
            ratios = [a / b for a, b in zip(samples, base)]
            res["timing"][k] = {"p50_ms": statistics.median(samples), "blocks_ms": samples,
                                "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
                                "threads": args.threads, "rounds": args.rounds,
                                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        print(f"{model} {target}: {len(keys)} artifacts timed in {time.perf_counter() - t0:.0f}s", flush=True)
        _save(out, res, "timing")
    return 0


def report(args) -> int:
    out = Path(args.out)
    res = _load(out)
    print("| model | target | scheme | p50 ms | int8/fp32 (min–max) | size int8/fp32 | default gate; min cosine |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted(res["rows"].values(), key=lambda r: (r["model"], r["target"], r["scheme"] != "fp32", r["scheme"]))
    fp32 = {(r["model"], r["target"]): r for r in rows if r["scheme"] == "fp32"}
    for r in rows:
        key = f"{r['model']}|{r['target']}|{r['scheme']}"
        t = res["timing"].get(key)
        base = fp32.get((r["model"], r["target"]))
        if r["status"] != "ok":
            print(f"| {r['model']} | {r['target']} | {r['scheme']} | failed: {r['error'][:80]} | | | |")
            continue
        ratio = f"{t['ratio']:.2f}× ({t['ratio_min']:.2f}–{t['ratio_max']:.2f})" if t and r["scheme"] != "fp32" else ""
        size = f"{r['size_bytes'] / base['size_bytes']:.2f}" if base and r["scheme"] != "fp32" else ""
        g = r.get("gate") or {}
        gate = "" if r["scheme"] == "fp32" else ("pass" if g.get("passed") else "FAIL" if g.get("passed") is False
                                                 else "not scorable") + (f" ({g['basis']})" if g.get("basis") else "")
        if r["scheme"] != "fp32":  # cosine to fp32 PyTorch on held-out inputs: the embedding models' accuracy
            v = json.loads((Path(r["path"]) / "manifest.json").read_text())["verification"]
            gate += f"; min cosine {v['min_cosine']:.4f}" if v.get("min_cosine") is not None else ""
        print(f"| {r['model']} | {r['target']} | {r['scheme']} | {t['p50_ms']:.3f} | {ratio} | {size} | {gate} |"
              if t else f"| {r['model']} | {r['target']} | {r['scheme']} | not timed | | {size} | {gate} |")
    return 0


def _litert_ops(path: str) -> list[str]:
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter
    it = Interpreter(model_path=str(Path(path) / "model.tflite"), num_threads=2)
    it.allocate_tensors()
    dtype = {t["index"]: t["dtype"].__name__ for t in it.get_tensor_details()}
    ops = it._get_ops_details()
    by = Counter((o["op_name"], dtype.get(o["outputs"][0], "?") if len(o["outputs"]) else "-") for o in ops)
    parts = sum(1 for o in ops if o["op_name"] == "DELEGATE")
    return [f"delegate partitions: {parts}"] + [f"{op} ({dt}) x{n}" for (op, dt), n in by.most_common(10)]


def ops(args) -> int:
    from collections import defaultdict

    from edgesdk import runtime
    res = _load(Path(args.out))
    for key, r in sorted(res["rows"].items()):
        if r["status"] != "ok" or (args.models and r["model"] not in args.models) or r["target"] not in args.targets:
            continue
        print(f"== {key}")
        if r["target"] == "litert-cpu":
            for line in _litert_ops(r["path"]):
                print("   " + line)
            continue
        rep = runtime.profile(r["path"], warmup=3, iters=5, threads=args.threads, per_op=True, op_runs=10)
        agg = defaultdict(lambda: [0.0, 0])
        for o in rep.ops:
            agg[o["op_type"]][0] += o["share"]
            agg[o["op_type"]][1] += o["calls"]
        for op, (share, n) in sorted(agg.items(), key=lambda kv: -kv[1][0])[:8]:
            print(f"   {op:28s} {100 * share:5.1f}% of op time  x{n}")
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("phase", choices=("convert", "time", "report", "ops"))
    ap.add_argument("--models", type=lambda s: s.split(","), default=list(MODELS))
    ap.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS))
    ap.add_argument("--out", default=str(ROOT / "edgesdk-out" / "int8_recipes"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--block-s", type=float, default=0.2)
    ap.add_argument("--redo", action="store_true")
    ap.add_argument("--schemes", type=lambda s: s.split(","), default=None,
                    help=f"convert only these (comma-separated; e.g. fp32,int8-static,{BEFORE}); default: all")
    args = ap.parse_args(argv)
    return {"convert": convert, "time": time_all, "report": report, "ops": ops}[args.phase](args)


if __name__ == "__main__":
    sys.exit(main())
