"""The generation families in the pipeline (what `make demo` runs for #6 and #7), smoke-sized:
distil a few steps, convert to onnx-cpu (fp32 + the recommended uncalibrated scheme), score the
artifact through the runtime's generation loop, profile TTFT / per-token, report the numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import edgesdk

FAMILIES = {
    "encdec": {"steps": 4, "options": {"eval_pairs": 3, "prompt_lengths": [32, 64]}},
    "mamba": {"steps": 3, "options": {"windows": 2, "continuation": 8, "prompt_lengths": [32, 64]}},
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_generation_family_through_the_pipeline(family, tmp_path):
    cfg = {"name": f"smoke-{family}", "distill": [{"family": family, **FAMILIES[family]}],
           "targets": ["onnx-cpu"], "quantize": {"schemes": "recommended", "max_drop": 0.5},
           "profile": {"warmup": 1, "iters": 3, "per_op": False, "threads": 1},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}}
    res = edgesdk.pipeline(cfg, progress=False)
    rows = {r["scheme"]: r for r in res.rows}
    assert set(rows) == {"fp32", "int8-dynamic"}, [(r["scheme"], r["status"], r.get("message")) for r in res.rows]
    for r in rows.values():
        assert r["status"] == "ok", r.get("message")
        g = r["generation"]
        assert g["ttft_ms"]["count"] == 3 and g["tpot_ms"]["p50"] > 0 and g["state_bytes"] > 0
        assert len(r["samples_ms"]) == 3 and r["quality"] is not None
    # fp32 through the runtime generates/scores exactly as the PyTorch programs do
    assert rows["fp32"]["quality"] == pytest.approx(rows["fp32"]["fp32_quality"], abs=1e-9)
    fam = res.families[0]
    assert fam["reference_quality"] is not None and 0 <= fam["reference_quality"] <= 1
    results = json.loads(res.results_json.read_text())
    assert results["artifacts"][0]["generation"]["prompt_tokens"] == 64
    html = res.report_html.read_text()
    assert "Generation: time to first token and per token" in html


@pytest.mark.slow  # trains a tiny Mamba and runs the HTP emulator and the software GPU: ~60-120 s
def test_emulated_device_generation_quality_on_the_familys_subset(tmp_path):
    """On an emulated device (the NPU emulator, a software GPU) a generation takes seconds: the row
    scores the family's spread subset of held-out windows, against fp32 PyTorch on that same
    subset, times three runs of that subset after the cold one on one thread, reads the quality from
    those runs, and says so in the row and report. A CPU target keeps the whole set and its profile settings."""
    from edgesdk.families.base import spread
    assert spread(list(range(12)), 4) == [0, 3, 6, 9] and spread([1, 2], 5) == [1, 2]
    from edgesdk.pipeline.execute import EMULATED_RUNS
    emulated = [t.name for t in edgesdk.targets() if t.name in ("qnn-htp", "litert-gpu") and t.runs in EMULATED_RUNS]
    if not emulated:
        pytest.skip("neither the HTP emulator nor a software GPU runs here")
    cfg = {"name": "smoke-mamba-npu", "distill": [{"family": "mamba", "steps": 3, "options": {
               "windows": 3, "continuation": 6, "prompt_lengths": [32], "emulator_windows": 1}}],
           "targets": emulated + ["onnx-cpu"], "quantize": {"schemes": ["fp32"]},
           "profile": {"warmup": 2, "iters": 5, "per_op": False, "threads": 1, "isolate": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache")}}
    res = edgesdk.pipeline(cfg, progress=False)
    rows = {r["target"]: r for r in res.rows}
    assert all(r["status"] == "ok" for r in res.rows), [(r["target"], r.get("message")) for r in res.rows]
    md = res.report_md.read_text()
    cpu = rows["onnx-cpu"]
    for name in emulated:
        row = rows[name]
        assert row["quality_subset"]["samples"] == "1 of 3 held-out windows"
        sub = row["quality_subset"]["fp32_quality"]
        assert row["quality_drop"] == pytest.approx(sub - row["quality"], abs=1e-12)
        assert row["warmup"] == 0 and row["iters"] == 3 and len(row["samples_ms"]) == 3  # the cold run warms
        assert f"† quality on 1 of 3 held-out windows ({name}, {row['runs']}" in md
        # timed on the subset's window and scored from those runs (pipeline.replay), as the family's
        # function through the artifact scores it
        assert row["quality_subset"]["scored_from"] == "the profile's timed runs" and row["generation"]["workload"] == 1
        assert "the latency columns time these same runs" in md
    assert cpu.get("quality_subset") is None and cpu["quality"] == pytest.approx(cpu["fp32_quality"], abs=1e-9)
    assert cpu["iters"] == 5 and len(cpu["samples_ms"]) == 5
    # an fp32 generation artifact judged by its tokens (fp16 compute) was judged on the family's
    # held-out prompts, not random ones
    for r in res.rows:
        tokens = json.loads((Path(r["path"]) / "manifest.json").read_text())["verification"].get("tokens")
        assert tokens is None or tokens["prompts"].endswith("held-out prompts (eval_data)"), tokens
