"""Is `auto`'s pick the fastest artifact that passed the gate? Re-measured side by side.

Models: the demo's students (mlp-small, mlp-256, encdec, mamba; trained by the demo's families,
cached) and three public vision architectures (ResNet-18, MobileNetV2, MobileNetV3-Small at
224x224, plain-torch definitions in `benchmarks/vision_archs.py`, random weights with
BatchNorm statistics set from random images). Candidates: every CPU target that runs here
(onnx-cpu, executorch-xnnpack, litert-cpu) x every scheme it offers (calibrated schemes with
64 calibration samples for the students, 32 random images for the vision models; generation
models take uncalibrated schemes only), each behind the SDK's default accuracy gate (top-1
agreement >= 99% for classifier outputs, min cosine >= 0.99 otherwise: what `edgesdk.convert`
applies unless told otherwise).

Two stages, so conversions can share the machine while the measurements cannot:

    python benchmarks/auto_pick.py convert            # cpu-shared: convert + gate every candidate
    cpu-exclusive python benchmarks/auto_pick.py measure [--models mlp-small,mlp-256]

``measure`` runs `edgesdk.auto.measure_and_choose` on every model's converted candidates (each
profiled in an isolated child at its best thread count: exactly what ``target="auto"`` does)
and then re-measures all of them side by side in one process: rounds of short blocks, one
block per candidate per round (loaded at the thread count auto chose, order reversed every
other round; as many rounds as auto's own side-by-side step, `edgesdk.auto.CONFIRM_ROUNDS`, so
both sides are measured the same way). It prints, per model, the pick, the best candidate of
the re-measurement and pick/best (target <= 1.05; also the median of the per-round ratios), and
pick/fp32 on the pick's target (target <= 1.0), and how many head-to-head rounds auto's pick
rested on.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CPU_TARGETS = ["onnx-cpu", "executorch-xnnpack", "litert-cpu"]
VISION = ("resnet18", "mobilenet_v2", "mobilenet_v3_small")
MAX_DROP = "default"  # the SDK's default gate, as `edgesdk.convert(target="auto")` applies it


def _say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- stage 1: convert

def convert_demo(out: Path, families: list[str]) -> dict:
    """The demo's students through the pipeline, every CPU target x every scheme, not profiled."""
    import edgesdk
    from edgesdk.demo import demo_config
    cfg = demo_config(out_dir=out / "demo", cache_dir=out / "cache", families=families)
    cfg.targets = CPU_TARGETS
    cfg.quantize.schemes = "auto"
    cfg.quantize.max_drop = MAX_DROP
    cfg.profile.enabled = False
    cfg.output.report = False
    res = edgesdk.pipeline(cfg)
    from edgesdk.auto import gate_verdict
    from edgesdk.converters import Artifact
    models: dict = {}
    for r in res.rows:
        c = {"target": r["target"], "device": r["device"], "runs": r["runs"], "scheme": r["scheme"],
             "path": r.get("path"), "size_bytes": r.get("size_bytes"), "picked": False, "latency_ms": None,
             "threads": None}
        if r["status"] == "ok":
            passed, quality = gate_verdict(Artifact.open(r["path"]).manifest)
            c.update(status="converted" if passed else "rejected", why="" if passed else quality, quality=quality)
        else:
            c.update(status=r["status"] if r["status"] in ("rejected", "failed", "skipped") else "failed",
                     why=(r.get("message") or r["status"])[:300], quality=None)
        models.setdefault(r["model"], {"family": r["family"], "candidates": []})["candidates"].append(c)
    return models


def convert_vision(out: Path, names, resolution: int) -> dict:
    from benchmarks.vision_archs import build, images
    from edgesdk.auto import convert_candidates
    models = {}
    for name in names:
        _say(f"{name}: converting every candidate")
        model, x = build(name, resolution)
        cands = convert_candidates(model, x, "auto", device="cpu", cand_dir=out / "vision" / name,
                                   calibration=images(32, resolution, seed=1), eval_data=images(16, resolution, seed=2),
                                   progress=lambda m, n=name: _say(f"{n} {m}"))
        models[name] = {"family": "vision", "resolution": resolution, "candidates": cands}
    return models


# ----------------------------------------------------------------------------- stage 2: measure

def side_by_side(cands: list[dict], rounds: int) -> dict:
    """Every candidate in short blocks per round (`runtime.profile.interleaved`): block medians."""
    from edgesdk.runtime.profile import interleaved
    blocks = interleaved([(c["path"], c["threads"]) for c in cands], rounds=rounds)
    return {id(c): b for c, b in zip(cands, blocks)}


def measure(out: Path, iters: int, rounds: int, only: list[str] | None = None) -> list[dict]:
    from edgesdk.auto import measure_and_choose
    data = json.loads((out / "candidates.json").read_text())
    summary = []
    for model, entry in data["models"].items():
        if only and model not in only:
            continue
        cands = copy.deepcopy(entry["candidates"])
        _say(f"{model}: auto's profiling of {sum(c['status'] == 'converted' for c in cands)} candidates")
        pick = measure_and_choose(cands, iters=iters, threads="auto", isolate=True,
                                  progress=lambda m, n=model: _say(f"{n} {m}"))
        measured = [c for c in cands if c["status"] in ("measured", "lost") or c.get("picked")]
        if pick is None or not measured:
            summary.append({"model": model, "pick": None, "candidates": cands})
            continue
        _say(f"{model}: side by side, {len(measured)} candidates x {rounds} rounds")
        per = side_by_side(measured, rounds)
        med = {id(c): float(np.median(per[id(c)])) for c in measured}
        best = min(measured, key=lambda c: med[id(c)])
        fp32 = next((c for c in measured if c["target"] == pick["target"] and c["scheme"] == "fp32"), None)
        # per round: the pick against the fastest candidate of that round, and against fp32 on its target
        r_best = [per[id(pick)][i] / min(per[id(c)][i] for c in measured) for i in range(rounds)]
        r_fp32 = [per[id(pick)][i] / per[id(fp32)][i] for i in range(rounds)] if fp32 else None
        for c in measured:
            c["remeasured_ms"] = med[id(c)]
        summary.append({
            "model": model, "family": entry["family"], "pick": f"{pick['target']} {pick['scheme']}",
            "pick_threads": pick["threads"], "auto_ms": pick["latency_ms"], "pick_ms": med[id(pick)],
            "best": f"{best['target']} {best['scheme']}", "best_ms": med[id(best)],
            "pick_over_best": med[id(pick)] / med[id(best)], "pick_over_best_rounds": r_best,
            "pick_over_best_paired": float(np.median([a / b for a, b in zip(per[id(pick)], per[id(best)])])),
            "pick_rounds": len(pick.get("rounds_ms") or []),
            "fp32_ms": med[id(fp32)] if fp32 else None,
            "pick_over_fp32": med[id(pick)] / med[id(fp32)] if fp32 else None, "pick_over_fp32_rounds": r_fp32,
            "n_measured": len(measured), "n_candidates": len(cands), "candidates": cands})
    return summary


def _f(x, fmt="{:.4g}"):
    return "–" if x is None else fmt.format(x)


def print_tables(summary: list[dict], meta: dict) -> None:
    print(f"# auto pick vs the best candidate, re-measured side by side ({meta['date']}; {meta['cpu']}, "
          f"{meta['cores']} usable cores; {meta['rounds']} rounds)\n")
    print("| model | candidates (measured) | auto's pick (threads) | auto's rounds | pick ms | best re-measured | "
          "best ms | pick / best (worst round) | paired median | fp32 on pick's target ms | pick / fp32 (worst round) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for s in summary:
        if s.get("pick") is None:
            print(f"| {s['model']} | – | no candidate passed and profiled | | | | | | | | |")
            continue
        print(f"| {s['model']} | {s['n_candidates']} ({s['n_measured']}) | {s['pick']} ({s['pick_threads']}) | "
              f"{s['pick_rounds'] or '–'} | {_f(s['pick_ms'])} | {s['best']} | {_f(s['best_ms'])} | "
              f"{_f(s['pick_over_best'], '{:.3f}')} ({_f(max(s['pick_over_best_rounds']), '{:.3f}')}) | "
              f"{_f(s['pick_over_best_paired'], '{:.3f}')} | {_f(s['fp32_ms'])} | "
              f"{_f(s['pick_over_fp32'], '{:.3f}')} "
              f"({_f(max(s['pick_over_fp32_rounds']) if s['pick_over_fp32_rounds'] else None, '{:.3f}')}) |")
    ok = [s for s in summary if s.get("pick")]
    within = sum(s["pick_over_best"] <= 1.05 for s in ok)
    never = sum((s["pick_over_fp32"] or 0) <= 1.0 for s in ok)
    print(f"\npick within 5% of the best re-measured candidate: {within}/{len(ok)}; pick not slower than fp32 on "
          f"its target (median of rounds): {never}/{len(ok)}\n")
    for s in summary:
        print(f"\n## {s['model']}\n\n| target | scheme | status | auto latency ms | re-measured ms | threads | why |\n"
              "|---|---|---|---|---|---|---|")
        for c in sorted(s["candidates"], key=lambda c: (c.get("remeasured_ms") is None, c.get("remeasured_ms") or 0)):
            print(f"| {c['target']} | {c['scheme']} | {'★ pick' if c.get('picked') else c['status']} | "
                  f"{_f(c.get('latency_ms'))} | {_f(c.get('remeasured_ms'))} | {c.get('threads') or '–'} | "
                  f"{(c.get('why') or '').replace('|', '/')[:160]} |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stage", choices=["convert", "measure"])
    p.add_argument("--out", default=str(ROOT / "edgesdk-out" / "bench-auto"))
    p.add_argument("--families", default="mlp,encdec,mamba", help="demo families (comma-separated; '' for none)")
    p.add_argument("--vision", default=",".join(VISION), help="vision architectures ('' for none)")
    p.add_argument("--resolution", type=int, default=224)
    p.add_argument("--iters", type=int, default=100, help="timed runs per candidate in auto's profile")
    from edgesdk.auto import CONFIRM_ROUNDS
    p.add_argument("--rounds", type=int, default=CONFIRM_ROUNDS,
                   help="side-by-side rounds (default: as many as auto's own side-by-side step)")
    p.add_argument("--models", default="", help="measure: only these models (comma-separated; default all); "
                                                "each run writes summary-<models>.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage == "convert":
        from edgesdk.runtime.profile import json_safe
        models = {}
        fams = [f for f in args.families.split(",") if f]
        if fams:
            models.update(convert_demo(out, fams))
        models.update(convert_vision(out, [v for v in args.vision.split(",") if v], args.resolution))
        (out / "candidates.json").write_text(json.dumps(json_safe({"models": models}), indent=1))
        _say(f"wrote {out / 'candidates.json'}")
        return 0
    import datetime

    from edgesdk.runtime.machine import cpu_name, usable_cores
    only = [m for m in args.models.split(",") if m]
    summary = measure(out, args.iters, args.rounds, only)
    meta = {"date": datetime.date.today().isoformat(), "cpu": cpu_name(), "cores": usable_cores(),
            "rounds": args.rounds}
    name = "summary.json" if not only else f"summary-{'-'.join(only)}.json"
    (out / name).write_text(json.dumps({"meta": meta, "summary": summary}, indent=1, default=str))
    print_tables(summary, meta)
    return 0


if __name__ == "__main__":
    sys.exit(main())
