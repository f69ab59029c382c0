"""A target added from outside the SDK: its two files, a converter (tests/plugins/targets/) and a
runtime backend (tests/plugins/backends/), loaded through ``EDGESDK_TARGETS`` /
``EDGESDK_BACKENDS`` by the conftest (no other file names them).
The toy runs chains of `nn.Linear` / ReLU with numpy; the parametrized suites (test_convert,
test_inputs...) pick it up, and skip with its own reason the models it cannot take."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk import runtime
from edgesdk.converters.registry import TARGETS
from edgesdk.runtime.backends import BACKENDS, Backend
from edgesdk.runtime.errors import ConfigError, TargetUnavailableError, UnsupportedModelError
from edgesdk.runtime.plugins import KINDS, load_plugins

from conftest import ROOT, TransformerBlock


def test_a_plugin_target_converts_runs_and_profiles(tmp_path):
    listed = {t.name: t for t in edgesdk.targets()}
    assert listed["toy-numpy"].runs_here and listed["toy-numpy"].backend == "toy-numpy"

    torch.manual_seed(0)
    model, x = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)), torch.randn(3, 8)
    art = edgesdk.convert(model, (x,), "toy-numpy", out_dir=tmp_path)  # verified against PyTorch on the way
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["backend"] == "toy-numpy" and manifest["format"] == "toy"
    assert manifest["verification"]["passed"] and manifest["verification"]["max_abs_err"] < 1e-5

    sess = runtime.load(art.path)
    assert sess.backend_name == "toy-numpy" and sess.verified
    assert isinstance(BACKENDS.get("toy-numpy").load("toy artifacts"), Backend)
    (y,) = sess.run([x.numpy()])
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    rep = runtime.profile(art.path, warmup=1, iters=3)
    assert rep.p50_ms > 0 and len(rep.samples_ms) == 3 and rep.ops == []
    # in a fresh interpreter (what edgesdk.auto and the pipeline profile in): the backend's
    # plug-in loads from the inherited variable before the manifest's format is checked
    rep = runtime.profile(art.path, warmup=1, iters=3, isolate=True)
    assert rep.p50_ms > 0 and len(rep.samples_ms) == 3


def test_a_model_the_target_cannot_take_is_a_typed_error_before_export(tmp_path):
    """The target declares what it takes; anything else is refused up front, naming the ops it
    lacks and the targets to try."""
    with pytest.raises(UnsupportedModelError, match=r"toy-numpy cannot take this model: GELU, LayerNorm, "
                                                    r"MultiheadAttention, add, getitem, branches .*; it runs chains "
                                                    r"of nn.Linear and ReLU only; fix: pick another target "
                                                    r"\(cpu: .*onnx-cpu") as e:
        edgesdk.convert(TransformerBlock().eval(), (torch.randn(1, 4, 64),), "toy-numpy", out_dir=tmp_path)
    assert isinstance(e.value, edgesdk.errors.ConversionError)
    with pytest.raises(UnsupportedModelError, match=r"inputs \(int64\); it takes one float32 tensor"):
        edgesdk.convert(torch.nn.Embedding(4, 2), (torch.tensor([[1, 2]]),), "toy-numpy", out_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # nothing was exported


def test_plugins_load_in_subprocesses_and_a_broken_one_says_which(tmp_path, monkeypatch):
    """A fresh interpreter (the CLI, a pipeline worker) loads the same plug-ins from the variables;
    one that fails to import is a ConfigError naming it and where it came from."""
    env = KINDS["backends"][0]
    r = subprocess.run([sys.executable, "-m", "edgesdk.cli", "targets", "--json"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), env: ""}, timeout=120)
    assert r.returncode == 0, r.stderr
    toy = {t["name"]: t for t in json.loads(r.stdout)}["toy-numpy"]  # the converter loaded; its backend not
    assert not toy["runs_here"] and "its runtime backend 'toy-numpy' is not registered here" in toy["why_not"]
    bad = tmp_path / "broken_plugin.py"
    bad.write_text("raise RuntimeError('no device here')\n")
    monkeypatch.setenv(env, f"{os.environ[env]}{os.pathsep}{bad}")
    with pytest.raises(ConfigError, match=r"backend plug-in '.*broken_plugin.py' \(from EDGESDK_BACKENDS\) failed to "
                                          r"import: RuntimeError: no device here; fix: "):
        load_plugins("backends", force=True)
    with pytest.raises(ConfigError, match="broken_plugin.py"):  # said again on the next look-up
        runtime.load(tmp_path)
    monkeypatch.setenv(env, os.environ[env].rsplit(os.pathsep, 1)[0])
    assert load_plugins("backends", force=True)  # the others stay loaded


def test_unregistering_the_plugin_removes_it(tmp_path):
    conv, entry = TARGETS.get("toy-numpy"), BACKENDS.get("toy-numpy")
    TARGETS.unregister("toy-numpy")
    try:
        assert "toy-numpy" not in {t.name for t in edgesdk.targets()}
        with pytest.raises(edgesdk.errors.ConfigError, match="Unknown target 'toy-numpy'"):
            edgesdk.convert(torch.nn.Linear(2, 2), (torch.randn(1, 2),), "toy-numpy", out_dir=tmp_path)
    finally:
        TARGETS.register("toy-numpy", conv)
    assert BACKENDS.get("toy-numpy") is entry


def test_a_manifest_names_a_backend_that_is_not_registered(tmp_path):
    """An artifact whose backend this install lacks fails with a typed error that says so."""
    art = edgesdk.convert(torch.nn.Linear(4, 2), (torch.randn(1, 4),), "onnx-cpu", out_dir=tmp_path)
    path = art.path / "manifest.json"
    d = json.loads(path.read_text())
    assert d["backend"] == "onnxruntime"
    d["backend"] = "my-npu"
    path.write_text(json.dumps(d))
    with pytest.raises(TargetUnavailableError, match="backend 'my-npu' is not registered here"):
        runtime.load(art.path)
    del d["backend"]  # a manifest written before the field: the target's backend opens it
    path.write_text(json.dumps(d))
    assert runtime.load(art.path).backend_name == "onnxruntime"


def test_every_builtin_backend_meets_the_protocol():
    """Each registered backend (plug-ins included) whose library is installed provides what
    `Backend` lists."""
    import importlib
    import importlib.util

    from edgesdk.runtime.backends import BACKENDS
    checked = []
    for name, entry in BACKENDS.items():
        if entry.package and importlib.util.find_spec(entry.package) is None:
            continue
        assert isinstance(importlib.import_module(entry.module), Backend), name
        checked.append(name)
    assert {"onnxruntime", "litert"} <= set(checked)


def test_a_manifest_records_its_converters_own_tools():
    """Versions are the toolchain's plus the target's own export and runtime packages (qnn-htp:
    onnxruntime-qnn; coreml-ane: coremltools), keyed by distribution name."""
    import importlib.util

    from edgesdk.converters import get_converter
    from edgesdk.converters.convert import tool_versions
    for target, dist, module in (("qnn-htp", "onnxruntime-qnn", "onnxruntime_qnn"), ("coreml-ane", "coremltools",
                                                                                      "coremltools")):
        conv = get_converter(target)
        got = tool_versions(conv.convert_packages + conv.run_packages)
        assert (dist in got) == (importlib.util.find_spec(module) is not None)
        assert dist not in tool_versions()


def test_adding_the_plugin_target_touches_no_existing_file():
    """Its two files in tests/plugins/ are all it takes: nothing else in the packages, tests,
    scripts or benchmarks names it (this test file aside)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import arch_metrics
    assert arch_metrics.plugin_targets()["toy-numpy"] == {
        "own": ["tests/plugins/backends/toy_numpy.py", "tests/plugins/targets/toy_numpy.py"], "elsewhere": []}
