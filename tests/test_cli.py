"""The `edgesdk` command line: targets, convert, run, profile; errors are one actionable line."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from edgesdk.cli import main

EDGESDK = str(Path(sys.executable).parent / "edgesdk")

USER_MODEL = textwrap.dedent('''
    import torch
    from torch import nn

    class Unseen(nn.Module):
        """Ordinary layers the SDK has never seen: conv, norm, attention, linear."""
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(8, 32, 3, padding=1)
            self.norm = nn.LayerNorm(32)
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.out = nn.Linear(32, 3)

        def forward(self, signal):                      # (B, 8, T)
            h = self.conv(signal).transpose(1, 2)       # (B, T, 32)
            h = self.norm(h)
            h = h + self.attn(h, h, h, need_weights=False)[0]
            return self.out(h.mean(dim=1))              # (B, 3)

    def build():
        torch.manual_seed(0)
        return Unseen().eval(), (torch.randn(1, 8, 24),)
''')


@pytest.fixture(scope="module")
def user_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    (d / "make_model.py").write_text(USER_MODEL)
    return d


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_targets_json(capsys):
    assert main(["targets", "--json"]) == 0
    rows = _json(capsys)
    assert {r["name"] for r in rows} >= {"onnx-cpu", "executorch-xnnpack", "litert-cpu"}
    assert all({"device", "format", "quantization", "runs_here", "why_not"} <= set(r) for r in rows)


def test_unseen_model_converts_runs_and_profiles_everywhere(user_model, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["convert", f"{user_model}/make_model.py:build", "--target", "all", "--out", str(out),
                 "--json", "-q"]) == 0
    results = _json(capsys)
    from edgesdk import converters
    import edgesdk
    assert {r["target"] for r in results} == set(converters.target_names())
    for r in results:  # a target that cannot take the model said so itself, and the others went on
        assert "skipped" not in r or r["skipped"].startswith(f"{r['target']} cannot take this model: "), r
    results = [r for r in results if "skipped" not in r]
    runs = {t.name for t in edgesdk.targets() if t.runs_here}
    for r in results:
        if r["target"] in runs:
            atol, rtol = converters.get_converter(r["target"]).default_tolerance.get("fp32", (1e-4, 1e-4))
            assert r["max_abs_err"] < atol + rtol, r
        else:  # convert-only targets are validated structurally and say why they cannot run
            assert r["max_abs_err"] is None and r["verification_kind"].startswith("structural only")
    results = [r for r in results if r["target"] in runs]

    x = np.random.default_rng(3).standard_normal((1, 8, 24)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    sys.path.insert(0, str(user_model))
    import make_model
    model, _ = make_model.build()
    ref = model(torch.from_numpy(x)).detach().numpy()
    for r in results:
        assert main(["run", r["path"], "--inputs", str(tmp_path / "x.npy"), "--out", str(tmp_path / "y.npz"),
                     "--json"]) == 0
        assert _json(capsys)["outputs"]["output"]["shape"] == [1, 3]
        atol, rtol = converters.get_converter(r["target"]).default_tolerance.get("fp32", (1e-4, 1e-4))
        with np.load(tmp_path / "y.npz") as z:
            np.testing.assert_allclose(z["output"], ref, atol=atol + rtol)
        assert main(["profile", r["path"], "--iters", "20", "--warmup", "2", "--json", "--no-per-op"]) == 0
        rep = _json(capsys)
        assert rep["schema"] == "edgesdk.profile/1" and len(rep["samples_ms"]) == 20
        assert rep["stats"]["p50_ms"] > 0


def test_pt2_input_and_readable_profile(tmp_path, capsys):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2)).eval()
    ep = torch.export.export(model, (torch.randn(3, 6),))
    torch.export.save(ep, str(tmp_path / "tiny.pt2"))
    assert main(["convert", str(tmp_path / "tiny.pt2"), "-t", "onnx-cpu", "-o", str(tmp_path), "-q"]) == 0
    line = capsys.readouterr().out
    assert "tiny-onnx-cpu" in line and "verified" in line
    assert main(["profile", str(tmp_path / "tiny-onnx-cpu"), "--iters", "10", "-q"]) == 0
    text = capsys.readouterr().out
    assert "p50" in text and "p99" in text and "per-op" in text and "onnx-cpu" in text
    np.savez(tmp_path / "in.npz", input=np.ones((3, 6), np.float32))
    assert main(["run", str(tmp_path / "tiny-onnx-cpu"), "-i", str(tmp_path / "in.npz")]) == 0
    assert "output: float32[3, 2]" in capsys.readouterr().out


@pytest.mark.parametrize("argv,needle", [
    (["convert", "x.py:build", "--target", "onnx"], "Unknown target 'onnx'. Available: coreml-ane, "),
    (["run", "does/not/exist"], "no such file or directory"),
    (["convert", "nomodule_xyz:build", "-t", "onnx-cpu"], "cannot import 'nomodule_xyz'"),
    (["profile", "does/not/exist"], "no such file or directory"),
])
def test_errors_are_one_line_with_exit_2(argv, needle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.py").write_text(USER_MODEL)
    assert main(argv + ["-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err


def test_console_script_exit_codes_and_help(converted, tmp_path):
    art = converted("mlp", "onnx-cpu")[0]
    np.save(tmp_path / "bad.npy", np.zeros((2, 31), np.float32))
    r = subprocess.run([EDGESDK, "run", str(art.path), "-i", str(tmp_path / "bad.npy")],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "shape [2, 31], expected [2, 32]" in r.stderr
    r = subprocess.run([EDGESDK, "run", str(art.path), "-i", str(tmp_path / "bad.npy"), "--debug"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "Traceback" in r.stderr
    for cmd in ("targets", "convert", "run", "profile", "demo", "deploy", "diff"):
        h = subprocess.run([EDGESDK, cmd, "--help"], capture_output=True, text=True)
        assert h.returncode == 0 and "usage: edgesdk" in h.stdout


def test_demo_profiles_every_target_that_runs_here_and_labels_simulators(tmp_path, capsys):
    import edgesdk
    assert main(["demo", "--quick", "--family", "mlp", "--out", str(tmp_path / "out"), "--cache",
                 str(tmp_path / "cache"), "--iters", "5", "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = out["artifacts"]
    assert {r["target"] for r in rows} == {t.name for t in edgesdk.targets() if t.runs_here}
    for r in rows:
        if r["status"] == "skipped":  # a target that cannot take the student says so itself
            assert f"{r['target']} cannot take this model: " in r["message"], r
            continue
        assert r["status"] == "ok" and r["p50_ms"] > 0 and r["quality"] > 0.8
        if r["runs"] in ("simulated", "software GPU"):
            assert r["label"]  # never presented as device latency
    assert out["report_html"].endswith("report.html")
