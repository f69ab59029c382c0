"""The report's plots (matplotlib, PNG bytes): latency per target, quality vs latency with its
Pareto front, sizes, memory, throughput, threads and top ops. `plots(results)` makes them all;
`edgesdk.report` lays them out in HTML and Markdown."""

from __future__ import annotations

import io
import math

_TARGET_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"]
_MARKERS = {"fp32": "o", "fp16": "s", "int8-static": "^", "int8-dynamic": "v", "uint8-static": "D",
            "uint16-static": "P", "int4-weight": "X", "int8-weight": "<", "palettize4": ">", "int8-qat": "*"}


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


# From this many top-ops plots on (one per profiled artifact), with a second usable core, a child
# Python draws them while this process draws the rest of the report's plots (the demo: 24 of 34
# plots, ~3 of ~8 s; the report is the last thing a run does, with every other core idle).
SPLIT_OPS_AT = 8


def _ops_child() -> None:
    """Child side of `_ops_elsewhere`: rows (JSON on stdin) -> their top-ops PNGs (base64 JSON on stdout)."""
    import base64
    import json
    import sys
    rows = json.load(sys.stdin)
    json.dump([base64.b64encode(plot_ops(r) or b"").decode("ascii") for r in rows], sys.stdout)


def _ops_elsewhere(rows: list[dict]):
    """Start a child Python drawing ``plot_ops`` of each row; returns ``result() -> [png or None]``,
    or None from ``result()`` when the child could not (the caller draws them itself)."""
    import base64
    import json
    import os
    import subprocess
    import sys
    import threading
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    payload = json.dumps([{k: r.get(k) for k in ("model", "target", "scheme", "ops")} for r in rows]).encode()
    box: dict = {}

    def talk() -> None:
        proc = None
        try:
            proc = subprocess.Popen([sys.executable, "-c", "from edgesdk.report_plots import _ops_child; _ops_child()"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
            out, _ = proc.communicate(payload, timeout=300)
            box["out"] = out if proc.returncode == 0 else None
        except Exception:  # noqa: BLE001 - no child here (or it hung): the caller draws these plots
            if proc is not None:
                proc.kill()
                proc.wait()

    thread = threading.Thread(target=talk, name="edgesdk-plots", daemon=True)
    thread.start()

    def result() -> list | None:
        thread.join()
        try:
            pngs = [base64.b64decode(x) for x in json.loads(box.get("out") or b"null") or []]
        except ValueError:
            return None
        return [p or None for p in pngs] if len(pngs) == len(rows) else None
    return result


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


def plots(results: dict) -> list[dict]:
    """Every plot of a pipeline's ``results`` as {id, title, png, section}."""
    from edgesdk.lockfile import rows as typed_rows
    rows = typed_rows(results)
    colors = _color_map(r["target"] for r in rows)
    fams = {f["family"]: f for f in results.get("families", [])}
    out = []
    with_ops = [r for r in rows if r.get("ops")]
    from edgesdk.runtime.machine import usable_cores
    elsewhere = _ops_elsewhere(with_ops) if len(with_ops) >= SPLIT_OPS_AT and usable_cores() > 1 else None
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
    drawn = (elsewhere() if elsewhere else None) or [plot_ops(r) for r in with_ops]
    by_row = {id(r): png for r, png in zip(with_ops, drawn)}
    for r in rows:
        png = by_row.get(id(r))
        if png:
            ident = "ops-" + "".join(c if c.isalnum() else "-" for c in r["key"])
            out.append({"id": ident, "title": f"Top-10 ops — {r['model']} · {r['target']} · {r['scheme']}",
                        "png": png, "section": "ops", "key": r["key"]})
    return out
