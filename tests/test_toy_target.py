"""A target added from outside the SDK: a converter and a runtime backend, both defined in this
file, registered, then used through the public API with no other file touched. The toy target
runs a `torch.nn.Linear` with numpy from one `.npy` payload."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk import runtime
from edgesdk.converters.registry import TARGETS, Converter, register_target
from edgesdk.runtime.backends import Backend, register_backend, unregister_backend
from edgesdk.runtime.errors import ExecutionError, TargetUnavailableError
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec


class ToyConverter(Converter):
    name = "toy-numpy"
    device = "cpu"
    format = "npy"
    backend = "toy-numpy"
    description = "a Linear layer as one .npy file, run with numpy (test only)"

    def export(self, programs, workdir: Path, *, quantize, options):
        (prog,) = programs.values()
        lin = prog.module
        if not isinstance(lin, torch.nn.Linear):
            raise TypeError("the toy target exports a torch.nn.Linear only")
        # (out, in + 1): the weight with the bias as its last column
        table = torch.cat([lin.weight, lin.bias[:, None]], 1).detach().numpy().astype(np.float32)
        np.save(workdir / "model.npy", table, allow_pickle=False)
        return {"files": ["model.npy"], "programs": {prog.name: ("model.npy", prog.name)}, "extra": {}}


class _ToyProgram:
    thread_safe = True

    def __init__(self, table: np.ndarray):
        self.w, self.b = table[:, :-1], table[:, -1]

    def run(self, arrays):
        try:
            return [arrays[0] @ self.w.T + self.b]
        except ValueError as e:
            raise ExecutionError(f"toy backend: {e}") from None


class ToyBackend:
    NAME = "toy-numpy"

    @staticmethod
    def version():
        return np.__version__

    @staticmethod
    def open_program(path, spec, *, threads, manifest, cache):
        return _ToyProgram(np.load(path, allow_pickle=False))

    @staticmethod
    def manifest_for_file(path):
        table = np.load(path, allow_pickle=False)
        spec = ProgramSpec("forward", path.name, "forward", (TensorSpec("x", (1, table.shape[1] - 1), "float32"),),
                           (TensorSpec("y", (1, table.shape[0]), "float32"),))
        return Manifest(name=path.stem, target="toy-numpy", backend="toy-numpy", format="npy",
                        programs={"forward": spec}, files=[FileEntry(path.name, path.stat().st_size, "0" * 64)])

    @staticmethod
    def op_events(path, spec, arrays, runs, threads, manifest=None):
        return [], "the toy backend has no per-op timings"


@pytest.fixture
def toy_target():
    register_target(ToyConverter)
    register_backend("toy-numpy", ToyBackend, formats={".npy": "npy"})
    try:
        yield
    finally:
        TARGETS.unregister("toy-numpy")
        unregister_backend("toy-numpy")


def test_a_target_from_two_plugins_converts_runs_and_profiles(toy_target, tmp_path):
    listed = {t.name: t for t in edgesdk.targets()}
    assert listed["toy-numpy"].runs_here and listed["toy-numpy"].backend == "toy-numpy"

    torch.manual_seed(0)
    model, x = torch.nn.Linear(8, 4), torch.randn(1, 8)
    art = edgesdk.convert(model, (x,), "toy-numpy", out_dir=tmp_path)  # verified against PyTorch on the way
    manifest = json.loads((art.path / "manifest.json").read_text())
    assert manifest["backend"] == "toy-numpy" and manifest["format"] == "npy"

    sess = runtime.load(art.path)
    assert sess.backend_name == "toy-numpy" and sess.verified and isinstance(ToyBackend, Backend)
    (y,) = sess.run([x.numpy()])
    np.testing.assert_allclose(y, model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    rep = runtime.profile(art.path, warmup=1, iters=3)
    assert rep.p50_ms > 0 and len(rep.samples_ms) == 3


def test_the_toy_is_gone_after_unregistering(tmp_path):
    assert "toy-numpy" not in {t.name for t in edgesdk.targets()}
    with pytest.raises(edgesdk.errors.ConfigError, match="Unknown target 'toy-numpy'"):
        edgesdk.convert(torch.nn.Linear(2, 2), (torch.randn(1, 2),), "toy-numpy", out_dir=tmp_path)


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
    """Each registered backend whose library is installed provides what `Backend` lists."""
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
