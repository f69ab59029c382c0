"""The report of a small real pipeline run (mlp family on its embedded teacher and data, two CPU
targets, fp32 + int8, isolated profiles with a thread sweep): self-contained HTML with plots
(latency, Pareto, size, memory, throughput, threads, per-op), the recommendation, markdown,
lockfile, and the page loaded in headless Chromium (Debian `chromium`, installed by
`make browser`) with every image decoded and no console errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]

CHECK = """<script>
window.__errs = [];
window.addEventListener('error', e => window.__errs.push(String(e.message || e.type)), true);
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const d = document.createElement('pre'); d.id = 'edgesdk-check';
  d.textContent = JSON.stringify({images: imgs.length,
    loaded: imgs.filter(i => i.complete && i.naturalWidth > 0).length,
    widths: imgs.map(i => i.naturalWidth), errors: window.__errs});
  document.body.appendChild(d);
});
</script>"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from edgesdk.pipeline import pipeline
    tmp = tmp_path_factory.mktemp("report")
    cfg = {"name": "report-test", "distill": {"family": "mlp", "students": {"mlp-small": {"model": "mlp-small"}}},
           "targets": ["onnx-cpu", "litert-cpu"], "quick": True,
           "quantize": {"schemes": ["fp32", "int8-static"], "max_drop": 0.2},
           "profile": {"iters": 30, "threads": "auto"},
           "output": {"dir": str(tmp / "out"), "cache": str(tmp / "cache")}}
    return pipeline(cfg, progress=False), tmp


def chromium(args: list[str], tmp: Path, timeout: int = 90) -> subprocess.CompletedProcess:
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed: run `make browser` (apt-get install chromium)")
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_report_files(run):
    res, _ = run
    assert [r["status"] for r in res.rows] == ["ok"] * 4
    for r in res.rows:  # quality measured on the artifact itself, against the fp32 student and the teacher
        assert 0.5 < r["quality"] <= 1 and r["metric"] == "accuracy" and r["reference_quality"] > 0.9
    html = res.report_html.read_text()
    assert re.search(r"https?://", html) is None and "<script" not in html  # self-contained, no scripts
    imgs = re.findall(r'<img src="data:image/png;base64,', html)
    assert len(imgs) >= 7  # latency, Pareto, size, memory, throughput, threads, per-op
    for ident in ("latency-mlp", "pareto-mlp", "size", "memory", "throughput", "threads"):
        assert f'id="{ident}"' in html and (res.out_dir / "plots" / f"{ident}.png").is_file()
    assert any(p.name.startswith("ops-") for p in (res.out_dir / "plots").iterdir())
    md = res.report_md.read_text()
    assert "| family | model | target |" in md and "![Latency distribution per target" in md
    results = json.loads(res.results_json.read_text())
    assert len(results["artifacts"]) == 4 and results["families"][0]["family"] == "mlp"


def test_report_memory_throughput_and_recommendation(run):
    """Memory is the artifact's own (isolated child, torch-free backends), every profile carries
    FLOPs / GFLOP/s / % of peak and its thread sweep, and the recommendation follows edgesdk.auto's rule."""
    res, _ = run
    results = json.loads(res.results_json.read_text())
    for a in results["artifacts"]:
        m = a["memory"]
        assert m["mode"] == "isolated" and 0 < m["init_mb"] <= a["mem_peak_mb"] + 1e-9 < 200, m
        assert m["rss_before_load_mb"] < 400  # the child holds the runtime + backend, not torch and the SDK
        assert a["flops"] == 2 * (64 * 128 + 128 * 10) and a["gflops_per_s"] > 0 and 0 < a["pct_of_peak"] < 100
        assert a["threads_sweep"]["chosen"] == a["threads"] and a["settled"] in (True, False)
    rec = results["recommendations"]
    assert len(rec) == 1 and rec[0]["pick"] is not None
    picked = [a for a in results["artifacts"] if a.get("recommended")]
    assert len(picked) == 1 and picked[0]["target"] == rec[0]["pick"]["target"]
    for t in ("onnx-cpu", "litert-cpu"):  # never slower than fp32 on its target
        mine = {a["scheme"]: a for a in results["artifacts"] if a["target"] == t}
        pick = next(a for a in mine.values() if a.get("target_pick"))
        assert pick["scheme"] == "fp32" or pick["p50_ms"] <= mine["fp32"]["p50_ms"]
    html = res.report_html.read_text()
    assert "<h2>Recommendation</h2>" in html and "★" in html and "memory MB load / peak" in html


def test_report_in_headless_chromium(run, tmp_path):
    res, _ = run
    page = tmp_path / "check.html"
    page.write_text(res.report_html.read_text().replace("<head>", "<head>" + CHECK, 1))
    p = chromium(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
                 tmp_path)
    assert p.returncode == 0, p.stderr[-2000:]
    m = re.search(r'<pre id="edgesdk-check">([^<]*)</pre>', p.stdout)
    assert m, "the check script did not run: " + p.stdout[-500:]
    check = json.loads(m.group(1).replace("&quot;", '"'))
    assert check["images"] >= 4 and check["loaded"] == check["images"], check
    assert all(w > 300 for w in check["widths"]), check
    assert check["errors"] == []
    console = [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln]
    assert console == [], console
    # the untouched report too: no console messages at all, and a screenshot that is not blank
    shot = tmp_path / "report.png"
    p = chromium(["--enable-logging=stderr", "--v=0", "--hide-scrollbars", "--window-size=1280,1600",
                  f"--screenshot={shot}", res.report_html.as_uri()], tmp_path)
    assert p.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000, p.stderr[-1000:]
    assert [ln for ln in p.stderr.splitlines() if ":CONSOLE" in ln] == []


def test_top_ops_plots_drawn_in_a_child_are_the_ones_drawn_here(run, monkeypatch):
    """With many artifacts the top-ops plots are drawn by a child Python beside the other plots: the
    same plots, byte for byte; a child that cannot start leaves them to this process."""
    from edgesdk import report_plots
    res, _ = run
    results = json.loads(res.results_json.read_text())
    monkeypatch.setattr(report_plots, "SPLIT_OPS_AT", 10**9)
    here = report_plots.plots(results)
    monkeypatch.setattr(report_plots, "SPLIT_OPS_AT", 1)
    monkeypatch.setattr("edgesdk.runtime.machine.usable_cores", lambda: 2)
    started = []
    real = report_plots._ops_elsewhere
    monkeypatch.setattr(report_plots, "_ops_elsewhere", lambda rows: started.append(len(rows)) or real(rows))
    split = report_plots.plots(results)
    n_ops = sum(p["id"].startswith("ops-") for p in here)
    assert n_ops >= 2 and started == [n_ops]
    assert [(p["id"], p["png"]) for p in split] == [(p["id"], p["png"]) for p in here]
    from edgesdk.lockfile import rows as typed_rows
    with_ops = [r for r in typed_rows(results) if r.get("ops")]
    assert real(with_ops)() == [report_plots.plot_ops(r) for r in with_ops]  # the child drew them itself
    monkeypatch.setattr("sys.executable", "/nonexistent/python")
    assert real(with_ops)() is None
    assert [(p["id"], p["png"]) for p in report_plots.plots(results)] == [(p["id"], p["png"]) for p in here]


def test_subset_notes_name_each_emulated_device_once():
    """Rows scored on a subset (generation on the NPU emulator or a software GPU) get one † note
    per target and subset, naming the device's kind; rows on the whole set get none."""
    from edgesdk.report import _quality, _subset_notes
    sub = {"samples": "10 of 40 held-out functions", "fp32_quality": 0.53}
    arts = [{"target": "qnn-htp", "runs": "simulated", "quality": 0.53, "quality_drop": 0.0, "quality_subset": sub},
            {"target": "litert-gpu", "runs": "software GPU", "quality": 0.52, "quality_drop": 0.01,
             "quality_subset": sub},
            {"target": "litert-gpu", "runs": "software GPU", "quality": 0.53, "quality_drop": 0.0,
             "quality_subset": sub},
            {"target": "onnx-cpu", "runs": "yes", "quality": 0.50, "quality_drop": 0.0}]
    notes = _subset_notes(arts)
    assert len(notes) == 2 and notes[0].startswith("† quality on 10 of 40 held-out functions (litert-gpu, software GPU")
    assert "(qnn-htp, simulated" in notes[1] and all("fp32 PyTorch on the same subset" in n for n in notes)
    assert _quality(arts[1]).endswith(" †") and not _quality(arts[3]).endswith("†")
