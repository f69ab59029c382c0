"""`edgesdk demo` / `make demo`: the whole product on embedded defaults, with no downloads.

The demo is an ordinary pipeline config shipped with the SDK (``sdk/demo.yaml``): for each
student family, the embedded default teacher and data -> distilled students (cached) -> each
target's recommended quantization (with the accuracy gate) -> every registered target ->
verified -> profiled where it runs here -> ``report.html`` / ``report.md`` / ``results.json``.
A summary table goes to stdout at the end, with the path of the report.

Example::

    from edgesdk.demo import run_demo
    res = run_demo(out_dir="edgesdk-out/demo", quick=True)
    print(res.report_html)
"""

from __future__ import annotations

from pathlib import Path

from edgesdk.pipeline import PipelineConfig, PipelineResult, pipeline
from edgesdk.progress import Progress

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def demo_config(out_dir=None, iters: int | None = None, warmup: int | None = None,
                cache_dir=None, families: list[str] | None = None) -> PipelineConfig:
    """The shipped demo config with command-line overrides applied."""
    cfg = PipelineConfig.load(DEMO_CONFIG)
    if out_dir is not None:
        cfg.output.dir = str(out_dir)
    if cache_dir is not None:
        cfg.output.cache = str(cache_dir)
    if iters is not None:
        cfg.profile.iters = iters
    if warmup is not None:
        cfg.profile.warmup = warmup
    if families:
        from edgesdk.runtime.errors import ConfigError
        have = [d.family for d in cfg.distill]
        unknown = [f for f in families if f not in have]
        if unknown:
            raise ConfigError(f"--family {', '.join(unknown)}: not in the demo; available: {', '.join(have)}")
        cfg.distill = [d for d in cfg.distill if d.family in families]
    return cfg


def run_demo(out_dir=None, iters: int | None = None, warmup: int | None = None, quick: bool = False,
             progress: Progress | None = None, cache_dir=None, families: list[str] | None = None,
             executor: str | None = None) -> PipelineResult:
    progress = progress or Progress()
    cfg = demo_config(out_dir, iters, warmup, cache_dir, families)
    progress.stage(f"demo: {', '.join(d.family for d in cfg.distill)} students -> every target "
                   f"({'quick smoke run' if quick else 'full run'}; config {DEMO_CONFIG})")
    res = pipeline(cfg, progress=progress, quick=quick, executor=executor)
    if progress.enabled:
        print(format_table(res.rows))
        print(f"\nreport: {res.report_html}\n        {res.report_md}\nlockfile: {res.results_json} "
              f"(compare two runs with: edgesdk diff A/results.json B/results.json)")
        print(f"total {res.timings['total_s']:.0f}s (distill {res.timings['distill_s']:.0f}s, convert "
              f"{res.timings['convert_s']:.0f}s, profile {res.timings['profile_s']:.0f}s); training cache: "
              f"{res.cache['hits']} hit(s), {res.cache['misses']} trained in {res.cache['dir']}")
    return res


def _ms(x) -> str:
    return f"{x:>8.4f}" if isinstance(x, (int, float)) else f"{'–':>8}"


def format_table(rows: list[dict]) -> str:
    head = (f"{'family':<8} {'model':<12} {'target':<19} {'runs':<13} {'scheme':<13} {'status':<9} {'quality':>8} "
            f"{'Δ fp32':>7} {'size KiB':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'cold ms':>8} {'mem MB':>7} "
            f"{'placement':<12}")
    lines = [head, "-" * len(head)]
    for r in rows:
        q = r.get("quality")
        d = r.get("quality_drop")
        p = r.get("placement") or {}
        place = f"{p['kind']} {p['fraction'] * 100:.0f}%" if p.get("fraction") is not None else (p.get("kind") or "–")
        size = "–" if r.get("size_bytes") is None else f"{r['size_bytes'] / 1024:.1f}"
        # the artifact's own memory: peak during the timed runs over RSS before load
        peak = "–" if r.get("mem_peak_mb") is None else f"{r['mem_peak_mb']:.1f}"
        qs = "–" if q is None else f"{q:.4f}"
        ds = "–" if d is None else ("±0" if abs(d) < 5e-4 else f"{-d:+.3f}")
        lines.append(
            f"{r['family'][:8]:<8} {r['model'][:12]:<12} {r['target']:<19} {r['runs']:<13} {r['scheme']:<13} "
            f"{r['status']:<9} {qs:>8} {ds:>7} {size:>9} {_ms(r.get('p50_ms'))} "
            f"{_ms(r.get('p90_ms'))} {_ms(r.get('p99_ms'))} {_ms(r.get('first_run_ms'))} "
            f"{peak:>7} {place:<12}"
            + ("  NOISY" if r.get("noisy") else "") + ("  UNSETTLED" if r.get("settled") is False else "")
            + ("  ★ recommended" if r.get("recommended") else ""))
    labels = sorted({f"{r['target']}: {r['label']}" for r in rows if r.get("label") and r["status"] == "ok"})
    if labels:
        lines.append("labels (these latencies are not a device's): " + "; ".join(labels))
    co = sorted({r["target"] for r in rows if r["runs"] == "convert-only"})
    if co:
        lines.append(f"convert-only (verified artifacts, cannot run here): {', '.join(co)}")
    bad = [r for r in rows if r["status"] in ("rejected", "failed")]
    for r in bad:
        lines.append(f"{r['status']}: {r['model']} {r['target']} {r['scheme']}: {r['message'][:200]}")
    return "\n".join(lines)
