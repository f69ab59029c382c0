"""`edgesdk diff`: two runs of the same config show no regression; a run where one artifact is
really slower (a heavier model under the same name) names that artifact and only it; input
hashes and version changes are listed. Real pipelines, real runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import cli_in_process

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


def _mlp(d_in, hidden, depth, d_out):
    layers, d = [], d_in
    for _ in range(depth):
        layers += [nn.Linear(d, hidden), nn.ReLU()]
        d = hidden
    return nn.Sequential(*layers, nn.Linear(d, d_out)).eval()


def build_light():
    torch.manual_seed(0)
    return _mlp(32, 1024, 3, 4), (torch.randn(1, 32),)


def build_heavy():  # the same interface, ~15x the work
    torch.manual_seed(0)
    return _mlp(32, 2048, 8, 4), (torch.randn(1, 32),)


def teacher():
    torch.manual_seed(1)
    return _mlp(32, 64, 1, 4)


def features():
    return torch.randn(256, 32, generator=torch.Generator().manual_seed(2))


def _config(tmp: Path, out: str, model_fn: str) -> dict:
    return {"name": "diff", "model": {"source": f"{THIS}:{model_fn}", "name": "usernet"},
            "distill": {"family": "mlp", "teacher": f"{THIS}:teacher", "data": f"{THIS}:features", "steps": 20,
                        "students": {"student": {"model": "mlp", "hidden": 1024, "depth": 3}}},
            "targets": ["onnx-cpu"], "quantize": {"schemes": ["fp32"]},
            "profile": {"warmup": 10, "iters": 150, "per_op": False, "threads": 1},  # one core each: less contention noise
            "output": {"dir": str(tmp / out), "cache": str(tmp / "cache"), "report": False}}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from edgesdk.pipeline import pipeline
    tmp = tmp_path_factory.mktemp("diff")
    a = pipeline(_config(tmp, "a", "build_light"), progress=False)
    b = pipeline(_config(tmp, "b", "build_light"), progress=False)
    c = pipeline(_config(tmp, "c", "build_heavy"), progress=False)
    return a.results_json, b.results_json, c.results_json, tmp


def _cli(*args):
    return cli_in_process("diff", *map(str, args))


def test_same_config_twice_no_regression(runs):
    """Two runs of one config, each artifact profiled in its own child process. On a shared
    2-core CI machine the same 0.1 ms model measures up to ~1.3x apart between two processes
    (and a 10 us one up to 1.9x), with tight intervals within each run; nothing in two artifacts'
    samples can tell that apart from a change, so this test asks for a 50% effect. The slower
    model below is ~15x and is found at the default 10%."""
    from edgesdk import lockfile
    from edgesdk.diff import diff
    a, b, _, _ = runs
    d = diff(lockfile.read(a), lockfile.read(b), min_effect=0.5)
    assert d["regressions"] == [], d["latency"]
    assert d["inputs"] == [] and d["versions"] == [] and not d["added"] and not d["removed"]
    assert {t["artifact"] for t in d["latency"]} == {"model/usernet/onnx-cpu/fp32", "mlp/student/onnx-cpu/fp32"}
    r = _cli(a, b, "--min-effect", "0.5")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no latency regression" in r.stdout and "inputs (weights, graph, quantization config, calibration): " \
        "unchanged" in r.stdout


def test_slower_artifact_is_named(runs):
    from edgesdk import lockfile
    from edgesdk.diff import diff
    a, _, c, _ = runs
    # at a 50% effect, as above: the unchanged student is noise between processes (CI saw it
    # flagged at the default 10%); the heavier model is ~15x
    d = diff(lockfile.read(a), lockfile.read(c), min_effect=0.5)
    assert d["regressions"] == ["model/usernet/onnx-cpu/fp32"], d["latency"]
    changed = {(x["artifact"], x["input"]) for x in d["inputs"]}
    assert ("model/usernet/onnx-cpu/fp32", "weights") in changed and ("model/usernet/onnx-cpu/fp32", "graph") in changed
    assert not any(k.startswith("mlp/") for k, _ in changed)  # the student did not change
    assert any(m["metric"] == "size_bytes" for m in d["metrics"])
    r = _cli(a, c, "--min-effect", "0.5")
    assert r.returncode == 1
    assert "REGRESSION: model/usernet/onnx-cpu/fp32" in r.stdout
    r = _cli(a, c, "--json", "--min-effect", "0.5")
    assert r.returncode == 1 and json.loads(r.stdout)["regressions"] == ["model/usernet/onnx-cpu/fp32"]


def test_versions_and_machine_changes_listed(runs, tmp_path):
    from edgesdk import lockfile
    from edgesdk.diff import diff, format_diff
    a, b, _, _ = runs
    doc = lockfile.read(b)
    doc["versions"]["torch"] = "9.9.9"
    doc["machine"]["cpu"] = "Another CPU"
    d = diff(lockfile.read(a), doc)
    assert {"field": "torch", "a": lockfile.read(a)["versions"]["torch"], "b": "9.9.9"} in d["versions"]
    text = format_diff(d)
    assert "versions changed:" in text and "torch: " in text and "-> 9.9.9" in text and "Another CPU" in text
    bad = tmp_path / "x.json"
    bad.write_text("{}")
    r = _cli(a, bad)
    assert r.returncode == 2 and "not a pipeline results file" in r.stderr


def test_statistics_on_known_samples():
    """The decision rule on synthetic samples: noise-level shifts pass, a clear slowdown fails."""
    from edgesdk.diff import latency_test, mann_whitney_greater
    rng = np.random.default_rng(0)
    a = rng.lognormal(0, 0.2, 300)
    assert latency_test(a, rng.lognormal(0.03, 0.2, 300))["verdict"] == "no significant change"
    assert latency_test(a, rng.lognormal(0.7, 0.2, 300))["verdict"] == "regression"
    assert latency_test(a, rng.lognormal(-0.7, 0.2, 300))["verdict"] == "improvement"
    u, p = mann_whitney_greater([3, 4, 5], [1, 2, 2])
    assert u == 9 and p < 0.05
