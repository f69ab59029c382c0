"""Inputs are validated before they reach native code: clear InputError naming expected vs received."""

import numpy as np
import pytest

from edgesdk import runtime
import edgesdk

TARGETS = [t.name for t in edgesdk.targets() if t.runs_here]  # inputs are checked by a loaded session


@pytest.fixture(params=TARGETS)
def sess(request, converted):
    return runtime.load(converted("mlp", request.param)[0].path)


def test_wrong_count(sess):
    x = np.zeros((2, 32), np.float32)
    with pytest.raises(runtime.InputError, match=r"takes 1 inputs, got 2.*input: float32\[2, 32\]"):
        sess.run([x, x])


def test_wrong_name(sess):
    with pytest.raises(runtime.InputError, match=r"unknown inputs \['y'\], missing \['input'\]"):
        sess.run({"y": np.zeros((2, 32), np.float32)})


def test_wrong_shape_and_rank(sess):
    with pytest.raises(runtime.InputError, match=r"shape \[2, 31\], expected \[2, 32\]"):
        sess.run([np.zeros((2, 31), np.float32)])
    with pytest.raises(runtime.InputError, match=r"shape \[64\], expected \[2, 32\]"):
        sess.run([np.zeros((64,), np.float32)])


def test_wrong_dtype_says_how_to_cast(sess):
    with pytest.raises(runtime.InputError, match=r"dtype float64, expected float32 \(cast with .astype\(np.float32\)\)"):
        sess.run([np.zeros((2, 32), np.float64)])


def test_nan_policy(converted):
    path = converted("mlp", "onnx-cpu")[0].path
    x = np.zeros((2, 32), np.float32)
    x[1, 3] = np.nan
    with pytest.raises(runtime.InputError, match="NaN or Inf"):
        runtime.load(path).run([x])
    out = runtime.load(path, nan_policy="allow").run([x])[0]
    assert np.isnan(out[1]).all() and np.isfinite(out[0]).all()
    with pytest.raises(runtime.ConfigError, match="nan_policy"):
        runtime.load(path, nan_policy="ignore")


def test_non_contiguous_and_wrong_endian_are_handled(sess):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((2, 64)).astype(np.float32)
    strided = base[:, ::2]
    assert not strided.flags.c_contiguous
    ref = sess.run([np.ascontiguousarray(strided)])[0]
    np.testing.assert_array_equal(sess.run([strided])[0], ref)
    big_endian = np.ascontiguousarray(strided).astype(">f4")
    np.testing.assert_array_equal(sess.run([big_endian])[0], ref)


def test_not_an_array(sess):
    with pytest.raises(runtime.InputError, match="expected a numpy array"):
        sess.run([object()])
    with pytest.raises(runtime.InputError, match="list of numpy arrays or a dict"):
        sess.run("x")


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(runtime.ConfigError, match="no such file"):
        runtime.load(tmp_path / "nope")
    (tmp_path / "model.bin").write_bytes(b"123")
    with pytest.raises(runtime.ConfigError, match="unrecognised file type"):
        runtime.load(tmp_path / "model.bin")
    with pytest.raises(runtime.ConfigError, match="has no manifest.json"):
        runtime.load(tmp_path)


def test_unknown_target_lists_valid_ones():
    import edgesdk
    import torch
    with pytest.raises(edgesdk.errors.ConfigError) as e:
        edgesdk.convert(torch.nn.Linear(2, 2), (torch.randn(1, 2),), "onnx", out_dir="unused")
    assert "Unknown target 'onnx'. Available: " in str(e.value)
    for name in TARGETS:
        assert name in str(e.value)


def test_unknown_scheme_lists_the_targets_schemes():
    import edgesdk
    import torch
    with pytest.raises(edgesdk.errors.ConfigError, match="Available for onnx-cpu: fp32"):
        edgesdk.convert(torch.nn.Linear(2, 2), (torch.randn(1, 2),), "onnx-cpu", quantize="int3", out_dir="unused")
