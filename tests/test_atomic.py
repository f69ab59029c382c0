"""A conversion publishes a complete, verified artifact or nothing."""

import os

import pytest
import torch

from edgesdk import runtime
import edgesdk


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 4)).eval()


def _listing(d):
    return sorted(os.listdir(d))


def test_tolerance_failure_leaves_nothing_and_keeps_previous(tmp_path):
    model, x = _mlp(), torch.randn(1, 16)
    good = edgesdk.convert(model, (x,), "onnx-cpu", out_dir=tmp_path, name="m")
    before = (good.path / "manifest.json").read_bytes()
    # a tolerance no float pipeline meets: the converted model must be refused
    with pytest.raises(edgesdk.errors.ToleranceError) as e:
        edgesdk.convert(model, (x * 1000,), "onnx-cpu", out_dir=tmp_path, name="m", atol=0.0, rtol=0.0)
    assert "forward.output: max |diff|" in str(e.value) and e.value.report["passed"] is False
    assert _listing(tmp_path) == ["m"]  # no partial directory left behind
    assert (good.path / "manifest.json").read_bytes() == before
    runtime.load(good.path)


def test_export_failure_is_a_conversion_error(tmp_path):
    class DataDependent(torch.nn.Module):
        def forward(self, x):
            n = int(x.sum().item() > 0) + 1  # data-dependent shape: not exportable
            return x.repeat(n, 1)

    with pytest.raises(edgesdk.errors.ConversionError, match="export failed"):
        edgesdk.convert(DataDependent(), (torch.ones(1, 4),), "executorch-xnnpack", out_dir=tmp_path)
    assert _listing(tmp_path) == []


def test_reconversion_replaces_atomically(tmp_path):
    model, x = _mlp(), torch.randn(1, 16)
    a = edgesdk.convert(model, (x,), "litert-cpu", out_dir=tmp_path, name="m")
    with torch.no_grad():
        model[0].weight.mul_(2)
    b = edgesdk.convert(model, (x,), "litert-cpu", out_dir=tmp_path, name="m")
    assert a.path == b.path and _listing(tmp_path) == ["m"]
    out = runtime.load(b.path).run([x.numpy()])[0]
    torch.testing.assert_close(torch.from_numpy(out), model(x).detach(), atol=1e-5, rtol=0)


def test_stale_partials_of_dead_processes_are_cleaned(tmp_path):
    stale = tmp_path / ".m.partial-999999999-deadbeef"
    stale.mkdir()
    (stale / "model.onnx").write_bytes(b"half")
    edgesdk.convert(_mlp(), (torch.randn(1, 16),), "onnx-cpu", out_dir=tmp_path, name="m")
    assert _listing(tmp_path) == ["m"]


def test_bad_arguments(tmp_path):
    model, x = _mlp(), torch.randn(1, 16)
    with pytest.raises(edgesdk.errors.ConfigError, match="example input 0 is a int"):
        edgesdk.convert(model, [1, 2], "onnx-cpu", out_dir=tmp_path)
    with pytest.raises(edgesdk.errors.ConfigError, match="fails on its example inputs"):
        edgesdk.convert(model, (torch.randn(1, 15),), "onnx-cpu", out_dir=tmp_path)
    with pytest.raises(edgesdk.errors.ConfigError, match="artifact name"):
        edgesdk.convert(model, (x,), "onnx-cpu", out_dir=tmp_path, name="../evil")
    with pytest.raises(edgesdk.errors.ConfigError, match="calibration"):
        edgesdk.convert(model, (x,), "onnx-cpu", out_dir=tmp_path, calibration=[(x,)])
    assert not tmp_path.exists() or _listing(tmp_path) == []
