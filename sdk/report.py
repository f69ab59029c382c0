"""Render a pipeline's results: ``report.html`` (self-contained: plots inlined as base64 PNG, no
scripts, no external URLs), ``report.md`` (plots as files under ``plots/``) from ``results.json``.

Plots (matplotlib, Agg): latency distribution per target (box plots of the raw samples, one
figure per family), quality vs latency with the Pareto front per family, size by scheme, the
artifacts' own memory (load and peak during runs), achieved throughput (GFLOP/s and % of this
machine's GEMM peak), latency against thread count where threads were swept, and the top-10 ops
of every artifact whose backend reports per-op times. A recommendation section lists, per
model, every candidate with why it lost (`edgesdk.auto`'s rule).

Example::

    from edgesdk import lockfile, report
    html, md = report.render(lockfile.read("edgesdk-out/demo/results.json"), "edgesdk-out/demo")
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from pathlib import Path

LABEL_NOTES = {
    "simulated": "simulated: the numerics are the NPU's (QNN HTP emulator), the latency is the emulator's on this "
                 "CPU, not a phone's",
    "software GPU": "software GPU: the real GPU kernels run on lavapipe, Mesa's CPU Vulkan driver; the latency is a "
                    "CPU's, not a phone GPU's",
    "convert-only": "convert-only: a verified artifact (structure, I/O, op coverage) that cannot run on this machine; "
                    "no latency or quality measured here",
}
STATUS_NOTES = {"rejected": "rejected by the accuracy gate (max_drop)", "failed": "conversion failed",
                "skipped": "scheme not offered by the target"}
_TARGET_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]
_MARKERS = {"fp32": "o", "fp16": "s", "int8-static": "^", "int8-dynamic": "v", "uint8-static": "D",
            "uint16-static": "P", "int4-weight": "X", "int8-weight": "<", "palettize4": ">", "int8-qat": "*"}


# ----------------------------------------------------------------------------- helpers

def _f(x, fmt="{:.3f}", none="–"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return none
    return fmt.format(x)


def _ms(x):
    if x is None:
        return "–"
    return f"{x:.4f}" if x < 1 else f"{x:.3f}" if x < 100 else f"{x:.1f}"


def _kib(b):
    return "–" if b is None else f"{b / 1024:.1f}"


def _quality(r) -> str:
    q = r.get("quality")
    if q is None:
        return "–"
    s = f"{q:.4f}"
    d = r.get("quality_drop")
    if d is not None:
        s += " (±0)" if abs(d) < 5e-5 else f" ({-d:+.4f})"
    return s


def _placement(r) -> str:
    p = r.get("placement")
    if not p:
        return "–"
    if p.get("fraction") is None:
        return f"{p['kind']}: partial"
    return f"{p['kind']} {p['fraction'] * 100:.0f}%"


def _runs(r) -> str:
    return {"yes": "runs here"}.get(r["runs"], r["runs"])


def _status(r) -> str:
    s = r["status"]
    return "ok" if s == "ok" else s


def _color_map(names):
    return {n: _TARGET_COLORS[i % len(_TARGET_COLORS)] for i, n in enumerate(sorted(set(names)))}


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt
    plt.close(fig)
    return buf.getvalue()


def _pyplot():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    plt.rcParams.update({"font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both latency (lower) and quality (higher),
    sorted by latency."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], -math.inf
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


# ----------------------------------------------------------------------------- plots

def plot_latency(rows: list[dict], title: str, colors: dict) -> bytes | None:
    rows = [r for r in rows if r.get("samples_ms")]
    if not rows:
        return None
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: (r["target"], r["model"], r["scheme"]), reverse=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.32 * len(rows) + 1.2))
    data = [r["samples_ms"] for r in rows]
    bp = ax.boxplot(data, vert=False, whis=(1, 99), showfliers=True, patch_artist=True,
                    flierprops={"markersize": 2, "alpha": 0.4}, medianprops={"color": "black"})
    for patch, r in zip(bp["boxes"], rows):
        patch.set_facecolor(colors[r["target"]])
        patch.set_alpha(0.75)
    ax.set_yticks(range(1, len(rows) + 1))
    ax.set_yticklabels([f"{r['target']} · {r['scheme']} · {r['model']}"
                        + ({"simulated": " (sim)", "software GPU": " (sw GPU)"}.get(r["runs"], "")) for r in rows])
    ax.set_xscale("log")
    ax.set_xlabel("latency per run (ms, log scale; box: p25–p75, whiskers: p1–p99)")
    ax.set_title(title)
    return _png(fig)


def plot_pareto(rows: list[dict], title: str, colors: dict, metric: str, reference: float | None,
                reference_label: str | None) -> bytes | None:
    pts = [r for r in rows if r.get("p50_ms") is not None and r.get("quality") is not None]
    if not pts:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    seen = set()
    for r in pts:
        lab = r["target"] if r["target"] not in seen else None
        seen.add(r["target"])
        ax.scatter(r["p50_ms"], r["quality"], color=colors[r["target"]], marker=_MARKERS.get(r["scheme"], "o"),
                   s=46, label=lab, edgecolor="black", linewidth=0.4, zorder=3)
    models = sorted({r["model"] for r in pts})
    if len(models) > 1:
        for r in pts:
            ax.annotate(r["model"], (r["p50_ms"], r["quality"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", alpha=0.7)
    front = pareto_front([(r["p50_ms"], r["quality"]) for r in pts])
    fx = [pts[i]["p50_ms"] for i in front]
    fy = [pts[i]["quality"] for i in front]
    ax.step(fx, fy, where="post", color="black", linewidth=1.2, alpha=0.7, label="Pareto front", zorder=2)
    if reference is not None:
        short = (reference_label or "teacher").split(" (")[0][:40]
        ax.axhline(reference, color="gray", linestyle="--", linewidth=1, label=f"reference {reference:.4g}: {short}")
    for s in sorted({r["scheme"] for r in pts}):
        ax.scatter([], [], marker=_MARKERS.get(s, "o"), color="white", edgecolor="black", label=f"scheme {s}")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency (ms, log scale)")
    ax.set_ylabel(metric or "quality")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), framealpha=0.9)
    return _png(fig)


def plot_sizes(rows: list[dict]) -> bytes | None:
    rows = [r for r in rows if r.get("size_bytes")]
    if not rows:
        return None
    plt = _pyplot()
    models = sorted({(r["family"], r["model"]) for r in rows})
    schemes = sorted({r["scheme"] for r in rows}, key=lambda s: (s != "fp32", s))
    scolors = {s: _TARGET_COLORS[i % len(_TARGET_COLORS)] for i, s in enumerate(schemes)}
    fig, axes = plt.subplots(len(models), 1, figsize=(8.5, 2.4 * len(models) + 0.4), squeeze=False)
    for ax, (fam, model) in zip(axes[:, 0], models):
        mine = [r for r in rows if (r["family"], r["model"]) == (fam, model)]
        targets = sorted({r["target"] for r in mine})
        present = [s for s in schemes if any(r["scheme"] == s for r in mine)]
        w = 0.8 / max(len(present), 1)
        for j, s in enumerate(present):
            xs, ys = [], []
            for i, t in enumerate(targets):
                r = next((r for r in mine if r["target"] == t and r["scheme"] == s), None)
                if r:
                    xs.append(i + (j - (len(present) - 1) / 2) * w)
                    ys.append(r["size_bytes"] / 1024)
            ax.bar(xs, ys, width=w, color=scolors[s], label=s)
        ax.set_xticks(range(len(targets)))
        ax.set_xticklabels(targets, fontsize=8, rotation=15, ha="right")
        ax.set_ylabel("KiB")
        ax.set_title(f"size by scheme: {fam} / {model}")
        ax.legend(fontsize=7, ncol=len(present))
    fig.tight_layout()
    return _png(fig)


def plot_ops(r: dict) -> bytes | None:
    ops = r.get("ops") or []
    if not ops:
        return None
    plt = _pyplot()
    ops = ops[:10][::-1]
    fig, ax = plt.subplots(figsize=(6.5, 0.28 * len(ops) + 1.0))
    ax.barh(range(len(ops)), [o["mean_ms"] * max(o.get("calls", 1), 1) * 1e3 for o in ops], color="#4c72b0")
    ax.set_yticks(range(len(ops)))
    ax.set_yticklabels([f"{o['op_type'][:24]} · {o['name'][-28:]}" for o in ops], fontsize=7)
    for i, o in enumerate(ops):
        ax.text(0, i, f" {o['share'] * 100:.0f}%", va="center", fontsize=6, color="white")
    ax.set_xlabel("µs per run")
    ax.set_title(f"top ops: {r['model']} · {r['target']} · {r['scheme']}", fontsize=9)
    return _png(fig)


def _label(r) -> str:
    return f"{r['model']} · {r['target']} · {r['scheme']}"


def plot_memory(rows: list[dict]) -> bytes | None:
    """The artifacts' own memory: load (init) and peak during the timed runs, side by side."""
    rows = [r for r in rows if r.get("mem_init_mb") is not None]
    if not rows:
        return None
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: (r["family"], r["model"], r["target"], r["scheme"]), reverse=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(rows) + 1.4))
    ys = range(len(rows))
    ax.barh([y + 0.2 for y in ys], [max(r["mem_peak_mb"], 0) for r in rows], height=0.4, color="#dd8452",
            label="peak during timed runs")
    ax.barh([y - 0.2 for y in ys], [max(r["mem_init_mb"], 0) for r in rows], height=0.4, color="#4c72b0",
            label="after load (init)")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([_label(r) + ("" if (r.get("memory") or {}).get("mode") == "isolated" else " (in-process)")
                        for r in rows], fontsize=7)
    ax.set_xlabel("MB over the process's RSS before load (isolated child: the artifact's own)")
    ax.set_title("Memory of each artifact")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


def plot_throughput(rows: list[dict]) -> bytes | None:
    """GFLOP/s achieved at the p50 per artifact, annotated with % of this machine's GEMM peak."""
    rows = [r for r in rows if r.get("gflops_per_s") is not None]
    if not rows:
        return None
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: (r["family"], r["model"], r["target"], r["scheme"]), reverse=True)
    colors = _color_map(r["target"] for r in rows)
    fig, ax = plt.subplots(figsize=(8.5, 0.3 * len(rows) + 1.4))
    vals = [r["gflops_per_s"] for r in rows]
    ax.barh(range(len(rows)), vals, color=[colors[r["target"]] for r in rows], alpha=0.85)
    for i, r in enumerate(rows):
        pct = r.get("pct_of_peak")
        ax.text(vals[i], i, f" {vals[i]:.3g}" + ("" if pct is None else f" ({pct:.1f}% of peak)"), va="center",
                fontsize=6)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([_label(r) + (" (prefill)" if r.get("generation") else "") for r in rows], fontsize=7)
    wide = max(vals) / max(min(vals), 1e-12) > 30
    if wide:
        ax.set_xscale("log")
    ax.set_xlim(right=max(vals) * (3 if wide else 1.35))
    ax.set_xlabel("GFLOP/s at the p50" + (" (log scale)" if wide else "")
                  + "; in brackets: % of this machine's fp32 GEMM peak at the same thread count")
    ax.set_title("Achieved throughput (FLOPs counted from the exported graph)")
    return _png(fig)


def plot_threads(rows: list[dict]) -> bytes | None:
    """p50 against thread count for every artifact whose threads were swept (threads: auto)."""
    rows = [r for r in rows if (r.get("threads_sweep") or {}).get("rows")]
    if not rows:
        return None
    plt = _pyplot()
    colors = _color_map(r["target"] for r in rows)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for r in rows:
        sw = r["threads_sweep"]
        xs = [x["threads"] for x in sw["rows"]]
        ys = [x["p50_ms"] for x in sw["rows"]]
        ax.plot(xs, ys, marker=_MARKERS.get(r["scheme"], "o"), color=colors[r["target"]], alpha=0.8, linewidth=1)
        ax.scatter([sw["chosen"]], [ys[xs.index(sw["chosen"])]], s=70, facecolor="none", edgecolor="black", zorder=3)
    for t, c in colors.items():
        ax.plot([], [], color=c, label=t)
    for sch in sorted({r["scheme"] for r in rows}):
        ax.scatter([], [], marker=_MARKERS.get(sch, "o"), color="white", edgecolor="black", label=f"scheme {sch}")
    ax.scatter([], [], s=70, facecolor="none", edgecolor="black", label="chosen")
    ax.set_yscale("log")
    from matplotlib.ticker import ScalarFormatter
    for axis in (ax.yaxis,):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(ScalarFormatter())
    ax.set_xticks(sorted({x["threads"] for r in rows for x in r["threads_sweep"]["rows"]}))
    ax.set_xlabel("intra-op threads")
    ax.set_ylabel("p50 ms (log scale)")
    ax.set_title("Latency against thread count (threads: auto)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _png(fig)


# ----------------------------------------------------------------------------- render

def _plots(results: dict) -> list[dict]:
    """Every plot as {id, title, png, section}."""
    rows = _rows(results)
    colors = _color_map(r["target"] for r in rows)
    fams = {f["family"]: f for f in results.get("families", [])}
    out = []
    for fam in sorted({r["family"] for r in rows}):
        mine = [r for r in rows if r["family"] == fam]
        info = fams.get(fam, {})
        png = plot_latency(mine, f"latency distribution per target: {fam}", colors)
        if png:
            out.append({"id": f"latency-{fam}", "title": f"Latency distribution per target — {fam}", "png": png,
                        "section": fam})
        metric = next((r["metric"] for r in mine if r.get("metric")), None)
        ref = info.get("reference_quality", next((r.get("reference_quality") for r in mine), None))
        png = plot_pareto(mine, f"quality vs latency: {fam}", colors, metric, ref,
                          info.get("reference") or next((r.get("reference") for r in mine), None))
        if png:
            out.append({"id": f"pareto-{fam}", "title": f"Quality vs latency, Pareto front — {fam}", "png": png,
                        "section": fam})
    png = plot_sizes(rows)
    if png:
        out.append({"id": "size", "title": "Size by scheme", "png": png, "section": "size"})
    for ident, title, fn in (("memory", "Memory of each artifact (its own: isolated child process)", plot_memory),
                             ("throughput", "Achieved throughput: GFLOP/s and % of this machine's GEMM peak",
                              plot_throughput),
                             ("threads", "Latency against thread count (threads: auto)", plot_threads)):
        png = fn(rows)
        if png:
            out.append({"id": ident, "title": title, "png": png, "section": "machine"})
    for r in rows:
        png = plot_ops(r)
        if png:
            ident = "ops-" + "".join(c if c.isalnum() else "-" for c in r["key"])
            out.append({"id": ident, "title": f"Top-10 ops — {r['model']} · {r['target']} · {r['scheme']}",
                        "png": png, "section": "ops", "key": r["key"]})
    return out


def _rows(results: dict) -> list:
    """The results' artifacts as typed rows (`edgesdk.pipeline.Row`)."""
    from edgesdk.lockfile import rows
    return rows(results)


def ordered(artifacts: list) -> list:
    """Report order: per family and model, what runs here first, then convert-only targets."""
    return sorted(artifacts, key=lambda r: (r["family"], r["model"], r["runs"] == "convert-only", r["target"],
                                            r["scheme"] != "fp32", r["scheme"]))


def summary_rows(results: dict) -> list[list[str]]:
    rows = []
    for r in ordered(_rows(results)):
        rows.append([r["family"], r["model"], r["target"], _runs(r), r["scheme"], _status(r), _quality(r),
                     _kib(r.get("size_bytes")), _ms(r.get("p50_ms")) + (" ⚠" if r.get("settled") is False else ""),
                     _ms(r.get("p90_ms")), _ms(r.get("p99_ms")), _ms(r.get("first_run_ms")), _memory(r),
                     _throughput(r), _placement(r)])
    return rows


HEADERS = ["family", "model", "target", "runs", "scheme", "status", "quality (Δ vs fp32)", "size KiB", "p50 ms",
           "p90 ms", "p99 ms", "cold ms", "memory MB load / peak", "GFLOP/s (% peak)", "placement"]


def _memory(r) -> str:
    """The artifact's own memory: load (init) and peak during the timed runs, over RSS before load."""
    if r.get("mem_init_mb") is None:
        return "–"
    star = "" if (r.get("memory") or {}).get("mode") == "isolated" else " (in-process)"
    return f"{r['mem_init_mb']:.1f} / {r['mem_peak_mb']:.1f}{star}"


def _throughput(r) -> str:
    g = r.get("gflops_per_s")
    if g is None:
        return "–"
    pct = r.get("pct_of_peak")
    return f"{g:.3g}" + ("" if pct is None else f" ({pct:.1f}%)")

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;
padding:0 16px;line-height:1.4}
h1{font-size:22px;margin-bottom:4px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
h3{font-size:15px}table{border-collapse:collapse;font-size:12px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 6px;text-align:right;white-space:nowrap}
th{background:#f3f3f3}td.l,th.l{text-align:left}tr.rejected td,tr.failed td{background:#fff1f0}
tr.convert-only td{color:#777}.tag{display:inline-block;padding:0 5px;border-radius:3px;font-size:11px}
.sim{background:#fde9c8}.sw{background:#dcecfb}.co{background:#eee}.bad{background:#f8d0cc}
.meta{color:#555;font-size:13px}.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots figure{margin:0}figcaption{font-size:12px;color:#555}img{max-width:100%;border:1px solid #eee}
code{background:#f5f5f5;padding:0 3px}.notes li{font-size:13px}details{margin:8px 0}
"""


def _tag(r) -> str:
    cls = {"simulated": "sim", "software GPU": "sw", "convert-only": "co"}.get(r["runs"])
    t = f'<span class="tag {cls}">{_html.escape(_runs(r))}</span>' if cls else _html.escape(_runs(r))
    return t


def _status_html(r) -> str:
    s = r["status"]
    if s in ("rejected", "failed"):
        return f'<span class="tag bad" title="{_html.escape(r.get("message", ""))}">{s}</span>'
    return _html.escape(s)


def _img(p: dict) -> str:
    b64 = base64.b64encode(p["png"]).decode()
    return (f'<figure id="{p["id"]}"><img src="data:image/png;base64,{b64}" alt="{_html.escape(p["title"])}">'
            f'<figcaption>{_html.escape(p["title"])}</figcaption></figure>')


GEN_HEADERS = ["family", "model", "target", "scheme", "prompt", "new tokens", "TTFT p50 ms", "TTFT p90 ms",
               "per token p50 ms", "tokens/s", "state KiB"]


def generation_rows(results: dict) -> list[list[str]]:
    """Generation artifacts (prefill + step): time to first token, time per token, state size."""
    out = []
    for r in ordered(_rows(results)):
        g = r.get("generation")
        if not g:
            continue
        tp = g.get("tpot_ms") or {}
        out.append([r["family"], r["model"], r["target"], r["scheme"], str(g.get("prompt_tokens")),
                    str(g.get("new_tokens")), _ms(g["ttft_ms"]["p50"]), _ms(g["ttft_ms"]["p90"]),
                    _ms(tp.get("p50")), _f(g.get("tokens_per_s"), "{:.0f}"), _f(g.get("state_bytes", 0) / 1024, "{:.1f}")])
    return out


def render_html(results: dict, plots: list[dict]) -> str:
    e = _html.escape
    arts = _rows(results)
    m, v = results.get("machine", {}), results.get("versions", {})
    parts = ["<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>{e(results['name'])} — edgesdk report</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(results['name'])}: teacher → on-device students</h1>",
             f"<p class=\"meta\">{e(results['created_at'])} · {e(m.get('cpu', '?'))} ({m.get('usable_cores')} usable "
             f"cores, {e(m.get('os', ''))}) · torch {e(str(v.get('torch')))} · executorch {e(str(v.get('executorch')))} · "
             f"onnxruntime {e(str(v.get('onnxruntime')))} · ai-edge-litert {e(str(v.get('ai-edge-litert')))} · QNN "
             f"{e(str(v.get('qnn-sdk')))} · coremltools {e(str(v.get('coremltools')))}<br>run {e(results.get('run_id', ''))}"
             f" · total {results.get('timings', {}).get('total_s', 0):.0f}s · training cache: "
             f"{results.get('cache', {}).get('hits', 0)} hit(s), {results.get('cache', {}).get('misses', 0)} trained</p>"]
    # families
    fams = results.get("families", [])
    if fams:
        parts.append("<h2>Students</h2><ul class=\"notes\">")
        for f in fams:
            ref = f.get("reference_quality")
            parts.append(f"<li><b>{e(f['family'])}</b>: {e(f.get('description', ''))}. Students: "
                         f"{e(', '.join(f.get('students', [])))}. Reference: {e(f.get('reference') or '')} — "
                         f"{e(f.get('metric') or 'quality')} {_f(ref, '{:.4f}')}. "
                         f"{'cached' if not f.get('cache_misses') else 'trained'} in {f.get('seconds', 0):.1f}s.</li>")
        parts.append("</ul>")
    # summary table
    parts.append("<h2>Summary: every model × target × scheme</h2><table><tr>"
                 + "".join(f'<th class="{"l" if i < 6 else ""}">{e(h)}</th>' for i, h in enumerate(HEADERS)) + "</tr>")
    for r, cells in zip(ordered(arts), summary_rows(results)):
        cls = r["status"] if r["status"] in ("rejected", "failed") else ("convert-only" if r["runs"] == "convert-only" else "")
        cells = [e(c) for c in cells]
        cells[3], cells[5] = _tag(r), _status_html(r)
        parts.append(f'<tr class="{cls}">' + "".join(f'<td class="{"l" if i < 6 else ""}">{c}</td>'
                                                    for i, c in enumerate(cells)) + "</tr>")
    parts.append("</table>")
    notes = sorted({r["runs"] for r in arts if r["runs"] in LABEL_NOTES})
    parts.append("<ul class=\"notes\">"
                 "<li>quality: the family's metric on held-out data, measured on the artifact itself through the "
                 "runtime (PyTorch for the fp32 reference); Δ is against the same student in fp32 PyTorch. "
                 "For your own model without a quality function: agreement with fp32 (1 − gate drop) or min cosine.</li>"
                 "<li>latency: warm runs after an adaptive warm-up (until the median of the last window stops "
                 "moving), raw samples in results.json; ⚠ = the timings never settled (see below); cold = the "
                 "first run after load; memory = the artifact's own, measured in a child process that holds only "
                 "the runtime and the backend: resident high-water mark after load and during the timed runs, "
                 "minus RSS before load; GFLOP/s = FLOPs per run (matmul/conv/attention counted from the exported "
                 "graph) at the p50 (for generation artifacts: the prefill, at the time to first token), and its "
                 "share of this machine's fp32 GEMM peak at the same thread count; "
                 "placement = share of compute on the NPU (QNN), in the delegate (XNNPACK/Vulkan) or on the "
                 "GPU.</li>"
                 + "".join(f"<li>{e(LABEL_NOTES[n])}</li>" for n in notes) + "</ul>")
    gen = generation_rows(results)
    if gen:
        parts.append("<h2>Generation: time to first token and per token</h2><p class=\"meta\">For generation "
                     "artifacts the summary's latency columns are times to first token (prefill, plus the first "
                     "decode step for encoder-decoders). Per token: every later step. State: the KV caches or "
                     "recurrent state decoding keeps per sequence.</p><table><tr>"
                     + "".join(f'<th class="{"l" if i < 4 else ""}">{e(h)}</th>' for i, h in enumerate(GEN_HEADERS))
                     + "</tr>")
        for cells in gen:
            parts.append("<tr>" + "".join(f'<td class="{"l" if i < 4 else ""}">{e(c)}</td>' for i, c in enumerate(cells))
                         + "</tr>")
        parts.append("</table>")
    bad = [r for r in arts if r["status"] in ("rejected", "failed", "skipped")]
    if bad:
        parts.append("<h3>Rejected, failed or skipped</h3><ul class=\"notes\">")
        for r in bad:
            parts.append(f"<li><code>{e(r['key'])}</code> — {e(STATUS_NOTES.get(r['status'], r['status']))}: "
                         f"{e(r.get('message', ''))}</li>")
        parts.append("</ul>")
    parts += _recommendation_html(results)
    unsettled = [r for r in arts if r.get("settled") is False]
    if unsettled:
        parts.append("<h3>Timings that never settled</h3><ul class=\"notes\">")
        for r in unsettled:
            st = r.get("steady_state") or {}
            parts.append(f"<li><code>{e(r['key'])}</code>: {e('; '.join(st.get('flags') or []))}. Likely cause: "
                         f"{e('; '.join(st.get('causes') or ['unknown']))}</li>")
        parts.append("</ul>")
    # plots per family
    for fam in sorted({p["section"] for p in plots if p["section"] not in ("size", "ops", "machine")}):
        parts.append(f"<h2>{e(fam)}: latency and quality</h2><div class=\"plots\">")
        parts += [_img(p) for p in plots if p["section"] == fam]
        parts.append("</div>")
    parts += ["<h2>Size</h2><div class=\"plots\">"] + [_img(p) for p in plots if p["section"] == "size"] + ["</div>"]
    machine = [p for p in plots if p["section"] == "machine"]
    if machine:
        parts += ["<h2>Memory, throughput and threads</h2><div class=\"plots\">"] + [_img(p) for p in machine] \
            + ["</div>"]
    ops = [p for p in plots if p["section"] == "ops"]
    if ops:
        parts.append("<h2>Per-op time (top 10)</h2><p class=\"meta\">From each backend's own profiler (ONNX Runtime, "
                     "ExecuTorch ETDump, QNN); LiteRT's Python API reports none.</p><div class=\"plots\">")
        parts += [_img(p) for p in ops]
        parts.append("</div>")
    # lockfile
    parts.append("<h2>Lockfile (results.json)</h2><details><summary>input hashes per artifact</summary><table><tr>"
                 "<th class=\"l\">artifact</th><th class=\"l\">weights</th><th class=\"l\">graph</th>"
                 "<th class=\"l\">quant config</th><th class=\"l\">calibration</th></tr>")
    for r in arts:
        h = r.get("hashes") or {}
        parts.append("<tr>" + "".join(f'<td class="l"><code>{e(str(x)[:12]) if x else "–"}</code></td>' if i else
                                      f'<td class="l">{e(r["key"])}</td>'
                                      for i, x in enumerate([r["key"], h.get("weights"), h.get("graph"),
                                                             h.get("quant_config"), h.get("calibration")])) + "</tr>")
    parts.append("</table></details><details><summary>versions and machine</summary><table>")
    for k, val in list(v.items()) + [(f"machine.{k}", x) for k, x in m.items()]:
        parts.append(f'<tr><td class="l">{e(k)}</td><td class="l">{e(str(val))}</td></tr>')
    parts.append("</table></details>")
    parts.append("<p class=\"meta\">Compare two runs: <code>edgesdk diff A/results.json B/results.json</code>.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def render_md(results: dict, plots: list[dict], plot_dir: str = "plots") -> str:
    arts = _rows(results)
    m, v = results.get("machine", {}), results.get("versions", {})
    lines = [f"# {results['name']}: teacher → on-device students", "",
             f"{results['created_at']} · {m.get('cpu')} ({m.get('usable_cores')} usable cores, {m.get('os')}) · "
             f"torch {v.get('torch')} · executorch {v.get('executorch')} · onnxruntime {v.get('onnxruntime')} · "
             f"ai-edge-litert {v.get('ai-edge-litert')} · QNN {v.get('qnn-sdk')}", ""]
    for f in results.get("families", []):
        lines.append(f"- **{f['family']}**: students {', '.join(f.get('students', []))}; reference "
                     f"{f.get('reference')}: {f.get('metric')} {_f(f.get('reference_quality'), '{:.4f}')}")
    lines += ["", "| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in summary_rows(results)]
    notes = sorted({r["runs"] for r in arts if r["runs"] in LABEL_NOTES})
    lines += [""] + [f"- {LABEL_NOTES[n]}" for n in notes]
    gen = generation_rows(results)
    if gen:
        lines += ["", "## Generation: time to first token and per token", "",
                  "| " + " | ".join(GEN_HEADERS) + " |", "|" + "|".join("---" for _ in GEN_HEADERS) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in gen]
    bad = [r for r in arts if r["status"] in ("rejected", "failed", "skipped")]
    if bad:
        lines += ["", "## Rejected, failed or skipped", ""]
        lines += [f"- `{r['key']}`: {r.get('message', '')}" for r in bad]
    lines += _recommendation_md(results)
    lines += ["", "## Plots", ""]
    lines += [f"![{p['title']}]({plot_dir}/{p['id']}.png)" for p in plots]
    return "\n".join(lines) + "\n"


REC_HEADERS = ["", "target", "scheme", "size KiB", "latency ms", "why"]


def _rec_rows(rec: dict) -> list[list[str]]:
    cands = sorted(rec["candidates"], key=lambda c: (not c.get("picked"), c.get("latency_ms") is None,
                                                     c.get("latency_ms") or 0))
    return [["★" if c.get("picked") else "", c["target"], c["scheme"], _kib(c.get("size_bytes")),
             _ms(c.get("latency_ms")), c.get("why") or c.get("status") or ""] for c in cands]


def _rec_intro(rec: dict) -> str:
    p = rec.get("pick")
    per = ", ".join(f"{t}: {s}" for t, s in sorted(rec.get("per_target", {}).items()))
    head = (f"{rec['family']} / {rec['model']}: " + (f"{p['target']} {p['scheme']} ({p['why']})" if p else
                                                     "no artifact passed and was measured here"))
    return head + (f". Per target: {per}." if per else "")


_REC_NOTE = ("The recommendation (edgesdk.auto's rule, as for target=\"auto\"): the fastest profiled artifact that "
             "passed its gate; a quantized scheme never slower than the same model's fp32 on its target; within 3% "
             "the smaller artifact. Latency: p50 per run, or for generation artifacts a whole generation (TTFT + "
             "tokens × time per token).")


def _recommendation_html(results: dict) -> list[str]:
    recs = results.get("recommendations") or []
    if not recs:
        return []
    e = _html.escape
    parts = [f"<h2>Recommendation</h2><p class=\"meta\">{e(_REC_NOTE)}</p>"]
    for rec in recs:
        parts.append(f"<h3>{e(_rec_intro(rec))}</h3><table><tr>"
                     + "".join(f'<th class="{"l" if i in (1, 2, 5) else ""}">{e(h)}</th>' for i, h in enumerate(REC_HEADERS))
                     + "</tr>")
        for cells in _rec_rows(rec):
            parts.append("<tr>" + "".join(f'<td class="{"l" if i in (1, 2, 5) else ""}">{e(c)}</td>'
                                          for i, c in enumerate(cells)) + "</tr>")
        parts.append("</table>")
    return parts


def _recommendation_md(results: dict) -> list[str]:
    recs = results.get("recommendations") or []
    if not recs:
        return []
    lines = ["", "## Recommendation", "", _REC_NOTE]
    for rec in recs:
        lines += ["", f"**{_rec_intro(rec)}**", "", "| " + " | ".join(REC_HEADERS) + " |",
                  "|" + "|".join("---" for _ in REC_HEADERS) + "|"]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in _rec_rows(rec)]
    return lines


def render(results: dict, out_dir) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.md`` and ``plots/*.png`` under ``out_dir``; returns the two paths."""
    import os
    out = Path(out_dir)
    plots = _plots(results)
    pdir = out / "plots"
    pdir.mkdir(parents=True, exist_ok=True)
    for old in pdir.glob("*.png"):
        old.unlink()
    for p in plots:
        (pdir / f"{p['id']}.png").write_bytes(p["png"])
    html_path, md_path = out / "report.html", out / "report.md"
    for path, text in ((html_path, render_html(results, plots)), (md_path, render_md(results, plots))):
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    return html_path, md_path
