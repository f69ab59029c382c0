"""`edgesdk demo` / `make demo`: a built-in model converted to every target that runs here,
verified against PyTorch and profiled, with one summary table.
"""

from __future__ import annotations

import torch

import models
import runtime
import sdk
from sdk.progress import Progress

DEMO_MODEL = {"in_dim": 256, "hidden": 512, "depth": 3, "out_dim": 10}


def run_demo(out_dir="edgesdk-out/demo", iters: int = 200, warmup: int = 20, progress: Progress | None = None) -> list[dict]:
    progress = progress or Progress()
    torch.manual_seed(0)
    model = models.create("mlp", **DEMO_MODEL).eval()
    x = torch.randn(1, DEMO_MODEL["in_dim"])
    n_params = sum(p.numel() for p in model.parameters())
    progress.stage(f"built-in model: mlp {DEMO_MODEL} ({n_params / 1e6:.2f} M parameters), input {list(x.shape)}")
    rows = []
    for t in sdk.targets():
        if not t.runs_here:
            progress.stage(f"{t.name}: skipped ({t.why_not})")
            continue
        art = sdk.convert(model, (x,), t.name, out_dir=out_dir, name=f"mlp-{t.name}",
                          progress=lambda s, n=t.name: progress.stage(f"{n}: {s}"))
        progress.stage(f"{t.name}: profiling ({warmup} warm-up + {iters} runs)")
        rep = runtime.profile(art.path, warmup=warmup, iters=iters, progress=progress.bar(f"{t.name} runs"))
        top = rep.ops[0] if rep.ops else None
        rows.append({
            "target": t.name, "device": t.device, "runs": t.runs, "label": rep.label,
            "path": str(art.path), "size_kib": art.size_bytes / 1024,
            "max_abs_err": art.verification["max_abs_err"], "load_ms": rep.load_ms, "first_run_ms": rep.first_run_ms,
            "p50_ms": rep.p50_ms, "p90_ms": rep.p90_ms, "p99_ms": rep.p99_ms, "cv": rep.cv, "noisy": rep.noisy,
            "threads": rep.threads, "peak_rss_mb": rep.peak_rss_mb,
            "top_op": f"{top['op_type']} {top['share'] * 100:.0f}%" if top else "n/a",
            "profile": rep.to_dict(),
        })
    if progress.enabled:
        print(format_table(rows))
        print(f"\nartifacts in {out_dir}; profile one with: edgesdk profile {rows[0]['path'] if rows else out_dir}")
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'target':<20} {'runs':<13} {'size KiB':>9} {'max err':>9} {'load ms':>8} {'cold ms':>8} {'p50 ms':>8} "
            f"{'p90 ms':>8} {'p99 ms':>8} {'CV':>6} {'thr':>4}  top op")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['target']:<20} {r['runs']:<13} {r['size_kib']:>9.1f} {r['max_abs_err']:>9.1e} {r['load_ms']:>8.2f} "
            f"{r['first_run_ms']:>8.3f} {r['p50_ms']:>8.4f} {r['p90_ms']:>8.4f} {r['p99_ms']:>8.4f} "
            f"{r['cv'] * 100:>5.1f}% {r['threads']:>4}  {r['top_op']}" + ("  NOISY" if r["noisy"] else ""))
    labels = sorted({f"{r['target']}: {r['label']}" for r in rows if r.get("label")})
    if labels:
        lines.append("labels (these latencies are not a device's): " + "; ".join(labels))
    return "\n".join(lines)
