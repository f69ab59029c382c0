"""Typed quantization configs: validated when made, and the same artifact as the string scheme
with the same keywords."""

import numpy as np
import pytest
import torch

import edgesdk
from edgesdk import runtime
from edgesdk.converters import quant_configs as qc
from edgesdk.errors import ConfigError


@pytest.mark.parametrize("make,match", [
    (lambda: qc.Int8Static(max_drop=-1), "max_drop=-1"),
    (lambda: qc.Int8Static(calibration="text"), "non-empty list of input tuples"),
    (lambda: qc.Int8Static(calibration=[]), "non-empty list"),
    (lambda: qc.Uint8Static(min_calibration=0), "min_calibration=0"),
    (lambda: qc.Int8Dynamic(exclude="head"), "list of module names"),
    (lambda: qc.Int8Static(auto_fallback="yes"), "True or False"),
])
def test_bad_options_fail_when_the_config_is_made(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_every_scheme_a_target_offers_has_a_config():
    offered = {s for t in edgesdk.targets() for s in t.quantization}
    assert offered <= set(qc.CONFIGS)
    assert all(qc.CONFIGS[s].scheme == s for s in qc.CONFIGS)


def test_resolve():
    assert qc.resolve("int8-dynamic", set()) == ("int8-dynamic", {})
    assert qc.resolve(qc.Int8Static(max_drop="off", exclude=("head",)), set()) == (
        "int8-static", {"max_drop": None, "exclude": ["head"]})
    with pytest.raises(ConfigError, match="calibration given both"):
        qc.resolve(qc.Int8Static(calibration=[(1,)]), {"calibration"})
    with pytest.raises(ConfigError, match="scheme name or a config"):
        qc.resolve(3, set())


def test_a_config_converts_like_its_string(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
    x = torch.randn(1, 16)
    calib = [(torch.randn(1, 16),) for _ in range(32)]
    typed = edgesdk.convert(model, (x,), "onnx-cpu", quantize=qc.Int8Static(calibration=calib, max_drop=0.05),
                            out_dir=tmp_path / "typed")
    plain = edgesdk.convert(model, (x,), "onnx-cpu", quantize="int8-static", calibration=calib, max_drop=0.05,
                            out_dir=tmp_path / "plain")
    assert typed.manifest.quantization["scheme"] == plain.manifest.quantization["scheme"] == "int8-static"
    assert typed.manifest.quantization["gate"]["max_drop"] == plain.manifest.quantization["gate"]["max_drop"]
    xs = np.random.default_rng(1).standard_normal((1, 16)).astype(np.float32)
    np.testing.assert_array_equal(runtime.load(typed.path).run([xs])[0], runtime.load(plain.path).run([xs])[0])
    with pytest.raises(ConfigError, match="max_drop given both"):
        edgesdk.convert(model, (x,), "onnx-cpu", quantize=qc.Int8Static(max_drop=0.1), max_drop=0.2,
                        out_dir=tmp_path / "twice")


def test_onnx_cpu_dispatches_each_scheme_by_its_config_type(tmp_path):
    """One quantizer per typed config, covering exactly the schemes onnx-cpu offers; a scheme it
    does not offer is refused by name before any work."""
    from edgesdk.converters import get_converter
    from edgesdk.converters.onnx_cpu import QUANTIZERS, quantize_onnx
    from edgesdk.converters.quant_configs import CONFIGS
    from edgesdk.runtime.errors import ConfigError
    assert {c.scheme for c in QUANTIZERS} == set(get_converter("onnx-cpu").quantization) - {"fp32"}
    assert all(CONFIGS[c.scheme] is c for c in QUANTIZERS)
    with pytest.raises(ConfigError, match="onnx-cpu cannot quantize with 'int4-weight'; it offers fp16, int8-dynamic"):
        quantize_onnx(tmp_path / "a.onnx", tmp_path / "b.onnx", "int4-weight", input_names=["x"], calibration=None,
                      exclude=[])
