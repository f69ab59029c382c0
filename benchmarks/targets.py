"""Every registered target on a conv net and a transformer block: artifact size, conversion
time, numeric error vs PyTorch, and (where the target runs here) p50 latency, interleaved.

    .venv/bin/python benchmarks/targets.py [--rounds 200] [--markdown]

Schemes: each target's natural one — fp32 for CPU targets, uint16-static for qnn-htp (the HTP
runs quantized graphs), fp16 for coreml-ane (the ANE computes in fp16) and litert-gpu (the GPU
default), fp32 for executorch-vulkan. Simulated / software-GPU rows are labelled; convert-only
targets have no latency (never a guessed one).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from benchmarks.runtime_overhead import bootstrap_median_ci, cpu_model  # noqa: E402
from conftest import make_model  # noqa: E402

SCHEME = {"qnn-htp": "uint16-static", "coreml-ane": "fp16", "litert-gpu": "fp16"}


def convert_all(kind: str, out: str) -> list[dict]:
    model, ex = make_model(kind)
    g = torch.Generator().manual_seed(0)
    calib = [tuple(torch.randn(t.shape, generator=g) for t in ex) for _ in range(16)]
    rows = []
    for t in edgesdk.targets():
        scheme = SCHEME.get(t.name, "fp32")
        t0 = time.perf_counter()
        try:
            art = edgesdk.convert(model, ex, t.name, quantize=scheme, out_dir=out, name=f"{kind}-{t.name}",
                              calibration=calib if scheme.endswith("static") else None)
        except edgesdk.errors.SdkError as e:
            rows.append({"model": kind, "target": t, "scheme": scheme, "error": str(e)[:200]})
            continue
        v = art.verification
        rows.append({"model": kind, "target": t, "scheme": scheme, "art": art, "size": art.size_bytes,
                     "convert_s": time.perf_counter() - t0, "max_abs_err": v.get("max_abs_err"),
                     "cosine": v.get("min_cosine"), "label": art.manifest.extra.get("runs_label", "")})
    return rows


def time_interleaved(rows: list[dict], rounds: int, warmup: int) -> None:
    runnable = [r for r in rows if "art" in r and r["target"].runs_here]
    sessions = [(r, runtime.load(r["art"].path)) for r in runnable]
    inputs = [runtime.example_inputs(s.inputs) for _, s in sessions]
    for (r, s), x in zip(sessions, inputs):
        for _ in range(warmup):
            s.run(x)
        r["samples"] = []
        r["threads"] = s.threads
    for i in range(rounds):
        order = list(range(len(sessions)))
        order = order[i % len(order):] + order[: i % len(order)]
        for j in order:
            r, s = sessions[j]
            t = time.perf_counter_ns()
            s.run(inputs[j])
            r["samples"].append((time.perf_counter_ns() - t) / 1e6)
    rng = np.random.default_rng(0)
    for r, _ in sessions:
        a = np.asarray(r["samples"])
        r["p50"] = float(np.median(a))
        r["p50_ci"] = bootstrap_median_ci(a, 500, rng)
        r["cv"] = float(a.std() / a.mean())


def table(rows: list[dict]) -> list[list[str]]:
    out = [["model", "target", "device", "runs here", "scheme", "size KiB", "convert s", "max abs err vs PyTorch",
            "cosine", "p50 ms [95% CI]", "CV"]]
    for r in rows:
        t = r["target"]
        if "error" in r:
            out.append([r["model"], t.name, t.device, t.runs, r["scheme"], "-", "-", f"FAILED: {r['error']}", "", "", ""])
            continue
        err = "structural only" if r["max_abs_err"] is None else f"{r['max_abs_err']:.2e}"
        cos = "" if r["cosine"] is None else f"{r['cosine']:.6f}"
        if "p50" in r:
            lo, hi = r["p50_ci"]
            lat = f"{r['p50']:.3f} [{lo:.3f}, {hi:.3f}]" + (f" ({r['label']})" if r["label"] else "")
            cv = f"{r['cv'] * 100:.0f}%" + (" (noisy)" if r["cv"] > 0.10 else "")
        else:
            lat, cv = "n/a (cannot run here)", ""
        out.append([r["model"], t.name, t.device, t.runs, r["scheme"], f"{r['size'] / 1024:.1f}", f"{r['convert_s']:.1f}",
                    err, cos, lat, cv])
    return out


def render(rows: list[list[str]], markdown: bool) -> str:
    head, body = rows[0], rows[1:]
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
                         + ["| " + " | ".join(r) + " |" for r in body])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--models", nargs="+", default=["convnet", "transformer"])
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    print(f"# {_dt.datetime.now(_dt.timezone.utc):%Y-%m-%d %H:%M} UTC · {cpu_model()} · torch {torch.__version__} · "
          f"threads {runtime.default_threads()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgesdk-targets-") as out:
        for kind in args.models:
            rs = convert_all(kind, out)
            time_interleaved(rs, args.rounds, args.warmup)
            rows += rs
        print(render(table(rows), args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
