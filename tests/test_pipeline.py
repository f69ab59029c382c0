"""`edgesdk.pipeline` / `edgesdk deploy`: a user model defined here (not in the repo's models), strict
config keys, the accuracy gate, and the content-addressed training cache. Real conversions,
real runtimes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import cli_in_process

ROOT = Path(__file__).resolve().parents[1]
THIS = Path(__file__).resolve()


class UserNet(nn.Module):
    """A model the SDK has never seen: a gated two-branch MLP."""

    def __init__(self, d_in=16, d=32, d_out=6):
        super().__init__()
        self.a, self.b = nn.Linear(d_in, d), nn.Linear(d_in, d)
        self.head = nn.Linear(d, d_out)

    def forward(self, x):  # (B, d_in) -> (B, d_out)
        return self.head(torch.tanh(self.a(x)) * torch.sigmoid(self.b(x)))


class VectorNet(UserNet):
    """Same, with a 1-D output: the gate measures 1 - cosine, which int8 never keeps at exactly 0."""

    def forward(self, x):  # (1, d_in) -> (d_out,)
        return super().forward(x).flatten()


def build():
    torch.manual_seed(0)
    # wide enough that int8 weights outweigh a quantized file's fixed cost (scales, Q/DQ nodes): at
    # d=32 (1.3 K parameters) the fp32 and int8-static files are within 40 bytes of each other
    return UserNet(d=128).eval(), (torch.randn(1, 16),)


def build_vector():
    torch.manual_seed(0)
    return VectorNet().eval(), (torch.randn(1, 16),)


def teacher():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 5)).eval()


def features():
    g = torch.Generator().manual_seed(2)
    return torch.randn(400, 16, generator=g)


def calibration():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(1, 16, generator=g),) for _ in range(32)]


def _cli(*args):
    return cli_in_process(*args)


def test_deploy_yaml_user_model(tmp_path):
    """`edgesdk deploy deploy.yaml` on a model defined in this test file: converted, verified,
    quantized with calibration data, profiled, with report and lockfile."""
    cfg = tmp_path / "deploy.yaml"
    cfg.write_text(f"""
name: user-model
model:
  source: {THIS}:build
  name: usernet
targets: [onnx-cpu]
quantize:
  schemes: [fp32, int8-static]
  max_drop: 0.5
calibration:
  data: {THIS}:calibration
profile:
  warmup: 2
  iters: 20
output:
  dir: {tmp_path / 'out'}
  cache: {tmp_path / 'cache'}
""")
    r = _cli("deploy", str(cfg), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    rows = {a["scheme"]: a for a in out["artifacts"]}
    assert set(rows) == {"fp32", "int8-static"}
    for a in rows.values():
        assert a["status"] == "ok" and a["family"] == "model" and a["model"] == "usernet"
        assert a["p50_ms"] > 0 and a["size_bytes"] > 0 and a["quality"] is not None
    assert rows["int8-static"]["gate"]["passed"] is True
    assert rows["int8-static"]["calibration"]["samples"] == 24  # 32 given, a quarter held out for the gate
    assert rows["int8-static"]["size_bytes"] < rows["fp32"]["size_bytes"]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["schema"] == "edgesdk.results/1"
    art = results["artifacts"][0]
    assert set(art["hashes"]) >= {"weights", "graph", "quant_config", "calibration"}
    assert len(art["samples_ms"]) == 20
    assert results["versions"]["torch"] and results["machine"]["cpu"]
    assert (tmp_path / "out" / "report.html").is_file() and (tmp_path / "out" / "report.md").is_file()


def test_unknown_keys_rejected(tmp_path):
    from edgesdk.errors import ConfigError  # noqa: F401  (re-exported typed error)
    from edgesdk.runtime.errors import ConfigError as CE
    from edgesdk.pipeline import PipelineConfig

    with pytest.raises(CE, match="unknown key 'quantise'.*valid keys: name, model, distill, targets, quantize"):
        PipelineConfig.from_dict({"model": "x:y", "quantise": {}})
    with pytest.raises(CE, match=r"quantize: unknown key 'maxdrop'; valid keys: schemes, max_drop"):
        PipelineConfig.from_dict({"model": "x:y", "quantize": {"maxdrop": 0.1}})
    with pytest.raises(CE, match="distill: unknown key 'stepz'; valid keys: family, teacher, data, steps"):
        PipelineConfig.from_dict({"distill": {"family": "mlp", "stepz": 3}})
    with pytest.raises(CE, match="deploys nothing"):
        PipelineConfig.from_dict({"targets": ["onnx-cpu"]})
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model: x:y\nprofile: {iters: 10, warmups: 3}\n")
    r = _cli("deploy", str(cfg))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and "profile: unknown key 'warmups'; valid keys: enabled, warmup" in r.stderr


def test_unknown_target_and_family():
    from edgesdk.runtime.errors import ConfigError
    from edgesdk.pipeline import pipeline
    with pytest.raises(ConfigError, match="Unknown student family 'nope'. Available: .*mlp"):
        pipeline({"distill": {"family": "nope"}, "targets": ["onnx-cpu"], "output": {"report": False}}, progress=False)
    with pytest.raises(ConfigError, match="unknown target 'onnx'. Available: .*onnx-cpu"):
        pipeline({"model": f"{THIS}:build", "targets": ["onnx"]}, progress=False)


def test_gate_rejects_and_reports(tmp_path):
    """max_drop 0: the int8 artifact fails the gate; the run records it and goes on (strict: error)."""
    from edgesdk.pipeline import pipeline
    cfg = {"model": {"source": f"{THIS}:build_vector", "name": "vec"}, "targets": ["onnx-cpu"],
           "quantize": {"schemes": ["fp32", "int8-dynamic"], "max_drop": 0.0},
           "profile": {"warmup": 1, "iters": 5, "per_op": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "report": False}}
    res = pipeline(cfg, progress=False)
    rows = {r["scheme"]: r for r in res.rows}
    assert rows["fp32"]["status"] == "ok"
    bad = rows["int8-dynamic"]
    assert bad["status"] == "rejected" and bad["gate"]["passed"] is False and bad["gate"]["drop"] > 0
    assert "exceeds max_drop 0" in bad["message"] and not res.ok
    assert not (tmp_path / "out" / "artifacts" / "vec-onnx-cpu-int8-dynamic").exists()
    cfg["quantize"]["on_fail"] = "error"
    from edgesdk.runtime.errors import ToleranceError
    with pytest.raises(ToleranceError, match="exceeds max_drop"):
        pipeline(cfg, progress=False)


def test_deploy_strict_exits_2_naming_the_rejected_artifact_and_keeps_the_report(tmp_path):
    """`edgesdk deploy --strict` (and `edgesdk demo` by default, through the same check) exits 2 and
    names each artifact it did not deliver, after writing the lockfile; without it the run exits 0."""
    cfg = {"model": {"source": f"{THIS}:build_vector", "name": "vec"}, "targets": ["onnx-cpu"],
           "quantize": {"schemes": ["fp32", "int8-dynamic"], "max_drop": 0.0},
           "profile": {"warmup": 1, "iters": 5, "per_op": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "report": False}}
    path = tmp_path / "deploy.json"
    path.write_text(json.dumps(cfg))
    lenient = cli_in_process("deploy", str(path), "--quiet")
    assert lenient.returncode == 0, lenient.stderr
    strict = cli_in_process("deploy", str(path), "--quiet", "--strict")
    assert strict.returncode == 2
    assert "1 artifact(s) not delivered (--strict): vec/onnx-cpu/int8-dynamic (rejected: " in strict.stderr
    assert "exceeds max_drop 0" in strict.stderr and "vec/onnx-cpu/fp32" not in strict.stderr
    rows = {r["scheme"]: r["status"] for r in json.loads((tmp_path / "out" / "results.json").read_text())["artifacts"]}
    assert rows == {"fp32": "ok", "int8-dynamic": "rejected"}


def test_distill_cache_hit_second_run(tmp_path):
    """Family mlp with the user's teacher and features: trained once, reused the second time
    (content-addressed, safetensors only), conversions reused too; a config change retrains."""
    from edgesdk.pipeline import pipeline
    cfg = {"name": "cache", "distill": {"family": "mlp", "teacher": f"{THIS}:teacher", "data": f"{THIS}:features",
                                        "steps": 40, "students": {"mlp-tiny": {"model": "mlp", "hidden": 32,
                                                                                "depth": 1}}},
           "targets": ["onnx-cpu"], "quantize": {"schemes": ["fp32"]},
           "profile": {"warmup": 1, "iters": 5, "per_op": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "report": False}}
    first = pipeline(cfg, progress=False)
    assert first.families[0]["cache_misses"] == ["student-mlp-tiny"] and first.families[0]["cache_hits"] == []
    row = first.rows[0]
    assert row["status"] == "ok" and row["metric"] == "top-1 agreement with the teacher"
    assert 0.3 < row["quality"] <= 1.0 and row["reference_quality"] == 1.0
    second = pipeline(cfg, progress=False)
    assert second.families[0]["cache_hits"] == ["student-mlp-tiny"] and second.families[0]["cache_misses"] == []
    assert second.rows[0]["conversion_cached"] is True
    assert second.rows[0]["hashes"] == first.rows[0]["hashes"]
    assert second.rows[0]["quality"] == first.rows[0]["quality"]
    files = [p for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert any(p.name == "weights.safetensors" for p in files)
    assert not any(p.suffix in (".pt", ".pth", ".pkl", ".bin") for p in files)
    cfg["distill"]["steps"] = 41
    third = pipeline(cfg, progress=False)
    assert third.families[0]["cache_misses"] == ["student-mlp-tiny"]


def test_a_quantized_conversion_is_cached_per_deployment_cpu(tmp_path, monkeypatch):
    """int8 recipes follow the deployment CPU (`EDGESDK_CPU_INT8_DOT`, else /proc/cpuinfo: ExecuTorch keeps
    depthwise convolutions float without int8 dot products), so a quantized conversion cached for one kind of
    CPU is not handed back for the other: two entries in the cache (a second run on the same kind of CPU is a hit,
    as `test_distill_cache_hit_second_run` checks)."""
    from edgesdk.pipeline import pipeline
    cfg = {"name": "cpu-key", "model": f"{THIS}:build", "targets": ["onnx-cpu"],
           "quantize": {"schemes": ["int8-static"], "max_drop": None}, "calibration": {"data": f"{THIS}:calibration"},
           "profile": {"enabled": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "report": False}}
    cached = []
    for dot in ("1", "0"):
        monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", dot)
        (row,) = pipeline(cfg, progress=False).rows
        assert row["status"] in ("ok", "convert-only"), row.get("message")
        cached.append(row["conversion_cached"])
    assert cached == [False, False]
    assert len(list((tmp_path / "cache" / "artifacts" / "onnx-cpu").iterdir())) == 2


def test_schemes_and_recommended():
    import edgesdk
    from edgesdk.pipeline import recommended_scheme, schemes_for
    ts = {t.name: t for t in edgesdk.targets()}
    for t in ts.values():  # every registered target has a recommended scheme it offers (or fp32 only)
        rec = recommended_scheme(t)
        assert rec is None or rec in t.quantization
    assert schemes_for(ts["onnx-cpu"], "recommended") == (["fp32", "int8-static"], [])
    assert schemes_for(ts["onnx-cpu"], "recommended", quick=True) == (["int8-static"], [])
    assert schemes_for(ts["litert-gpu"], ["fp32", "int8-static"]) == (["fp32"], ["int8-static"])
    assert schemes_for(ts["qnn-htp"], {"qnn-htp": ["uint16-static"]}) == (["uint16-static"], [])


def test_deploy_pt2(tmp_path):
    """A torch.export.save()d program is a model source too (file references resolve next to the YAML)."""
    model, ex = build()
    torch.export.save(torch.export.export(model, ex), str(tmp_path / "usernet.pt2"))
    (tmp_path / "deploy.yaml").write_text(
        "model: usernet.pt2\ntargets: [onnx-cpu]\nquantize: {schemes: fp32}\n"
        f"profile: {{warmup: 1, iters: 5, per_op: false}}\noutput: {{dir: {tmp_path / 'out'}, "
        f"cache: {tmp_path / 'cache'}, report: false}}\n")
    from edgesdk.pipeline import pipeline
    res = pipeline(tmp_path / "deploy.yaml", progress=False)
    (row,) = res.rows
    assert row["status"] == "ok" and row["model"] == "usernet" and row["max_abs_err"] < 1e-4
    assert row["metric"] == "min cosine vs fp32" and row["quality"] > 0.9999
