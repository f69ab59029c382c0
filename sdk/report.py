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
import math
from pathlib import Path

from edgesdk import report_plots

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
    return s + (" †" if r.get("quality_subset") else "")


def _subset_notes(arts) -> list[str]:
    """One line per subset that some rows' quality was measured on (generation on an emulated device:
    the NPU emulator, a software GPU)."""
    subsets = sorted({(r["target"], r.get("runs", "emulated"), r["quality_subset"]["samples"],
                       bool(r["quality_subset"].get("scored_from"))) for r in arts if r.get("quality_subset")})
    return [f"† quality on {samples} ({target}, {runs}: one generation takes seconds on this emulated device); "
            f"Δ against fp32 PyTorch on the same subset"
            + ("; the latency columns time these same runs (the first one is the cold run)" if timed else "")
            for target, runs, samples, timed in subsets]


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


# ----------------------------------------------------------------------------- plots


# ----------------------------------------------------------------------------- render


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
                 + "".join(f"<li>{e(LABEL_NOTES[n])}</li>" for n in notes)
                 + "".join(f"<li>{e(t)}</li>" for t in _subset_notes(arts)) + "</ul>")
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
    lines += [""] + [f"- {LABEL_NOTES[n]}" for n in notes] + [f"- {t}" for t in _subset_notes(arts)]
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
    plots = report_plots.plots(results)
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
