"""Shared exports (`converters.export_memo`): conversions of one model that write the same
`.tflite` export it once inside `shared_exports`, and the artifacts are byte for byte what
separate exports give."""

import hashlib

import torch

import edgesdk
from conftest import make_model
from edgesdk.converters import export_memo, litert_cpu


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_export_serves_every_litert_conversion_with_identical_bytes(tmp_path, monkeypatch):
    model, ex = make_model("mlp")
    alone = edgesdk.convert(model, ex, "litert-cpu", out_dir=tmp_path / "alone", name="m")
    calls = []
    real = litert_cpu._export_tflite
    monkeypatch.setattr(litert_cpu, "_export_tflite", lambda *a: calls.append(1) or real(*a))
    with export_memo.shared_exports(tmp_path / "exports"):
        fp32 = edgesdk.convert(model, ex, "litert-cpu", out_dir=tmp_path / "shared", name="fp32")
        fp16 = edgesdk.convert(model, ex, "litert-cpu", quantize="fp16", out_dir=tmp_path / "shared", name="fp16")
        other, ex2 = make_model("mlp")
        with torch.no_grad():
            next(other.parameters()).add_(1.0)       # other weights: another export
        edgesdk.convert(other, ex2, "litert-cpu", out_dir=tmp_path / "shared", name="other")
    assert len(calls) == 2
    assert _sha(fp32.path / "model.tflite") == _sha(alone.path / "model.tflite")
    assert fp16.manifest.quantization["scheme"] == "fp16" and fp16.size_bytes < fp32.size_bytes
    edgesdk.convert(model, ex, "litert-cpu", out_dir=tmp_path / "after", name="m")  # outside the block: exports
    assert len(calls) == 3


def test_one_onnx_export_serves_onnx_cpu_and_qnn_htp_with_identical_bytes(tmp_path, monkeypatch):
    from edgesdk.converters import onnx_cpu
    model, ex = make_model("mlp")
    alone = {s: edgesdk.convert(model, ex, "onnx-cpu", quantize=s, out_dir=tmp_path / "alone", name=s)
             for s in ("fp32", "int8-dynamic")}
    calls = []
    real = onnx_cpu._export_onnx
    monkeypatch.setattr(onnx_cpu, "_export_onnx", lambda *a: calls.append(1) or real(*a))
    with export_memo.shared_exports(tmp_path / "exports"):
        shared = {s: edgesdk.convert(model, ex, "onnx-cpu", quantize=s, out_dir=tmp_path / "shared", name=s)
                  for s in ("fp32", "int8-dynamic")}
        npu = edgesdk.convert(model, ex, "qnn-htp", out_dir=tmp_path / "shared", name="npu")
    assert len(calls) == 1 and npu.manifest.verification["passed"]
    for s in alone:  # what a separate export gives, byte for byte (the quantized file too)
        assert _sha(shared[s].path / "model.onnx") == _sha(alone[s].path / "model.onnx")


def test_flops_are_counted_once_per_model_inside_shared_exports(tmp_path, monkeypatch):
    import copy
    import importlib
    convert_mod = importlib.import_module("edgesdk.converters.convert")   # the module, not the function
    model, ex = make_model("mlp")
    twin = copy.deepcopy(model)            # another module object, as in another worker process
    calls = []
    real = convert_mod.count_flops
    monkeypatch.setattr(convert_mod, "count_flops", lambda progs: calls.append(1) or real(progs))
    with export_memo.shared_exports(tmp_path / "exports"):
        a = edgesdk.convert(model, ex, "onnx-cpu", out_dir=tmp_path / "a", name="a")
        b = edgesdk.convert(twin, ex, "litert-cpu", out_dir=tmp_path / "b", name="b")
    assert len(calls) == 1
    assert a.manifest.extra["flops"] == b.manifest.extra["flops"]
    assert sum(a.manifest.extra["flops"]["per_program"].values()) > 0
    edgesdk.convert(model, ex, "onnx-cpu", out_dir=tmp_path / "c", name="c")   # outside: counted again
    assert len(calls) == 2
