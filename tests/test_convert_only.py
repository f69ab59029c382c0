"""Targets that convert here but cannot run here: artifacts are checked for validity, not skipped.

Parametrized over the registry: every target whose `runs` is "convert-only" on this machine,
over model shapes and over its quantization schemes (all schemes on the conv net, fp32 and
fp16 on the transformer block, to keep the file fast).
"""

import json
import platform

import numpy as np
import pytest
import torch

from edgesdk import runtime
import edgesdk
from conftest import TokenClassifier, make_model
from edgesdk.runtime.manifest import sha256_file
from edgesdk.cli import main

CONVERT_ONLY = [t for t in edgesdk.targets() if t.runs == "convert-only"]
BY_NAME = {t.name: t for t in edgesdk.targets()}
CASES = [(t.name, kind, q) for t in CONVERT_ONLY for kind in ("convnet", "transformer") for q in t.quantization
         if kind == "convnet" or q in ("fp32", "fp16")]
# ExecuTorch Vulkan's transformer in fp32 takes ~12 s to lower and its fp16 twin goes the same path
CASES = [pytest.param(c, marks=pytest.mark.slow) if c == ("executorch-vulkan", "transformer", "fp32") else c
         for c in CASES]


def _case_id(c):
    return "-".join(c)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("convert-only")
    cache = {}

    def get(target, kind, quantize):
        if (target, kind, quantize) not in cache:
            model, ex = make_model(kind)
            cache[target, kind, quantize] = edgesdk.convert(model, ex, target, quantize=quantize, out_dir=root,
                                                        name=f"{kind}-{target}-{quantize}")
        return cache[target, kind, quantize]
    return get


def test_convert_only_targets_are_registered():
    names = {t.name for t in CONVERT_ONLY}
    if platform.system() != "Darwin":
        assert "coreml-ane" in names
    for t in CONVERT_ONLY:
        assert not t.runs_here and t.why_not, t
        assert t.device in ("npu", "gpu") and t.quantization[0] == "fp32"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_artifact_is_structurally_valid(artifacts, case):
    target, kind, quantize = case
    art = artifacts(target, kind, quantize)
    why = BY_NAME[target].why_not
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["target"] == target and m["format"] == BY_NAME[target].format
    assert m["quantization"]["scheme"] == quantize
    v = m["verification"]
    assert v["kind"].startswith("structural only") and why in v["kind"]
    assert v["passed"] is True and v["max_abs_err"] is None
    assert m["versions"]["torch"].startswith("2.13")
    # every payload file is hashed, and the hashes are right
    assert m["files"] and all(f["size"] > 0 for f in m["files"])
    for f in m["files"]:
        assert sha256_file(art.path / f["path"]) == f["sha256"], f["path"]
    prog = m["programs"]["forward"]
    assert prog["file"] in {f["path"] for f in m["files"]}
    if quantize != "fp32":
        gate = m["quantization"]["gate"]
        assert gate["passed"] is None and "not evaluated" in gate["drop_basis"]

    if target == "coreml-ane":
        assert prog["file"] == "model.mlpackage/Manifest.json"
        assert any(f["path"].endswith("weights/weight.bin") for f in m["files"])
        assert v["io_check"].startswith("passed") and v["compute_units"] == "CPU_AND_NE"
        assert v["precision"] == ("float32" if quantize == "fp32" else "float16")
        hist = v["op_histogram"]
        assert hist.get("conv" if kind == "convnet" else "linear", 0) >= 1
        if quantize == "int8-weight":
            assert hist.get("constexpr_affine_dequantize", 0) >= 1
        if quantize == "palettize4":
            assert hist.get("constexpr_lut_to_dense", 0) >= 1
        assert m["coreml"]["programs"]["forward"]["inputs"][0]["name"] == prog["inputs"][0]["name"]
    if target == "executorch-vulkan":
        p = m["partition"]["forward"]
        assert p["delegated_nodes"] > 0 and 0 < v["delegated_fraction"] <= 1
        assert v["methods"]["forward"]["delegate_ids"] == ["VulkanBackend"]
        for row in p["not_delegated"]:
            assert row["reason"], row
        if kind == "transformer":  # attention's scalar multiply has no Vulkan kernel in 1.5.1
            assert any(r["reason"] == "no operator implementation" for r in p["not_delegated"])
        assert m["vulkan"]["compile_options"] == ({"force_fp16": True} if quantize == "fp16" else {})


@pytest.mark.parametrize("case", [c for c in CASES if c[1] == "convnet" and c[2] == "fp32"], ids=_case_id)
def test_load_says_why_it_cannot_run(artifacts, case, tmp_path):
    target = case[0]
    art = artifacts(*case)
    with pytest.raises(runtime.TargetUnavailableError) as e:
        runtime.load(art.path)
    assert BY_NAME[target].why_not in str(e.value)
    with pytest.raises(runtime.TargetUnavailableError):
        runtime.profile(art.path, iters=1, warmup=0)
    # the integrity check still comes first: a tampered payload is an IntegrityError
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(art.path, bad)
    victim = bad / art.manifest.files[-1].path
    victim.write_bytes(victim.read_bytes()[:-1])
    with pytest.raises(runtime.IntegrityError):
        runtime.load(bad)


@pytest.mark.parametrize("target", [t.name for t in CONVERT_ONLY])
def test_targets_json_explains_convert_only(target, capsys):
    assert main(["targets", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows[target]
    assert row["runs"] == "convert-only" and row["runs_here"] is False and row["why_not"]
    assert main(["targets"]) == 0
    assert "convert-only" in capsys.readouterr().out


class _TwoPrograms(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.enc, self.dec = torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)

    def edge_programs(self):
        return {"encode": (torch.nn.Sequential(self.enc, torch.nn.Tanh()), (torch.randn(1, 8),)),
                "step": (self.dec, (torch.randn(1, 16),))}


@pytest.mark.parametrize("target", [t.name for t in CONVERT_ONLY])
def test_several_programs(target, tmp_path):
    torch.manual_seed(0)
    art = edgesdk.convert(_TwoPrograms().eval(), None, target, out_dir=tmp_path)
    assert set(art.manifest.programs) == {"encode", "step"}
    assert art.verification["kind"].startswith("structural only")
    files = {p.file for p in art.manifest.programs.values()}
    if target == "coreml-ane":  # one package per program
        assert files == {"encode.mlpackage/Manifest.json", "step.mlpackage/Manifest.json"}
    else:
        assert files == {"model.pte"}
        assert set(art.verification["methods"]) == {"encode", "step"}


@pytest.mark.skipif("executorch-vulkan" not in BY_NAME, reason="ExecuTorch not installed")
def test_vulkan_pattern_graphs_are_built_once_and_leave_the_rng_alone():
    """Vulkan's fusion pattern graphs are built once per process (its registry held uncached builders
    that re-exported them for every partition); building them draws nothing from torch's global RNG."""
    from executorch.backends.vulkan.patterns.pattern_registry import fusable_patterns

    from edgesdk.converters.executorch_vulkan import _build_pattern_library_once
    _build_pattern_library_once()
    _build_pattern_library_once()  # idempotent: no cache around a cache
    builders = [e.get_graphs_fn for e in fusable_patterns.values() if e.get_graphs_fn is not None]
    assert builders and all(getattr(fn, "_edgesdk_once", False) for fn in builders)
    for fn in builders:
        before = torch.random.get_rng_state()
        first = fn()
        assert torch.equal(torch.random.get_rng_state(), before)
        assert fn() is first and first and all(isinstance(g, torch.fx.GraphModule) for g in first)


@pytest.mark.skipif("coreml-ane" not in {t.name for t in CONVERT_ONLY}, reason="coreml-ane runs here")
def test_coreml_int64_and_bool_inputs_are_cast(tmp_path):
    torch.manual_seed(0)
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    art = edgesdk.convert(TokenClassifier().eval(), (ids, mask), "coreml-ane", out_dir=tmp_path)
    io = art.manifest.extra["coreml"]["programs"]["forward"]
    assert [r["dtype"] for r in io["inputs"]] == ["INT32", "FLOAT32"]
    assert [r["dtype"] for r in io["outputs"]] == ["FLOAT32", "INT32"]
    casts = art.verification["programs"]["forward"]["io_check"]["casts"]
    assert any("ids" in c and "int64" in c for c in casts) and any("mask" in c for c in casts)


@pytest.mark.skipif("coreml-ane" not in {t.name for t in CONVERT_ONLY}, reason="coreml-ane runs here")
def test_coreml_leaves_no_package_in_the_temp_folder(tmp_path, monkeypatch):
    """coremltools writes the in-memory models it makes (a conversion's, a compression's) as
    packages in the temp folder and removes them only at interpreter exit: a pool worker that is
    killed, or a notebook that converts all day, kept them all (~2 MB each)."""
    import tempfile
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    model, ex = make_model("convnet")
    art = edgesdk.convert(model, ex, "coreml-ane", quantize="int8-weight", out_dir=tmp_path / "out")
    assert art.manifest.quantization["scheme"] == "int8-weight"
    assert (art.path / "model.mlpackage" / "Manifest.json").is_file()
    assert sorted(p.name for p in temp.iterdir() if p.suffix == ".mlpackage") == []


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML predict needs macOS (coremltools' native "
                                                          "library exists only there)")
def test_coreml_predicts_on_macos(tmp_path):
    model, ex = make_model("convnet")
    art = edgesdk.convert(model, ex, "coreml-ane", out_dir=tmp_path)  # fp32: verified numerically here
    assert art.verification["passed"] and art.verification["max_abs_err"] is not None
    sess = runtime.load(art.path)
    (y,) = sess.run([ex[0].numpy()])
    np.testing.assert_allclose(y, model(*ex).detach().numpy(), atol=1e-3, rtol=1e-3)
    rep = runtime.profile(art.path, warmup=1, iters=5)
    assert len(rep.samples_ms) == 5 and rep.ops == [] and "Core ML" in rep.ops_note
    q = edgesdk.convert(model, ex, "coreml-ane", quantize="fp16", out_dir=tmp_path)
    assert q.manifest.quantization["gate"]["drop"] is not None


@pytest.mark.skipif("coreml-ane" not in {t.name for t in CONVERT_ONLY}, reason="coreml-ane runs here")
def test_coreml_validation_rejects_broken_packages(artifacts, tmp_path):
    """What `validate` checks: the spec loads, weight blobs exist, no unlisted files."""
    import shutil

    from edgesdk import converters
    art = artifacts("coreml-ane", "convnet", "fp32")
    conv = converters.get_converter("coreml-ane")
    for breakage in ("weights", "spec", "extra"):
        bad = tmp_path / breakage
        shutil.copytree(art.path, bad)
        data = bad / "model.mlpackage" / "Data" / "com.apple.CoreML"
        if breakage == "weights":
            (data / "weights" / "weight.bin").write_bytes(b"")
        elif breakage == "spec":
            (data / "model.mlmodel").write_bytes(b"not a protobuf")
        else:
            (data / "unlisted.bin").write_bytes(b"x")
        with pytest.raises(runtime.ConversionError):
            conv.validate(bad, {}, art.manifest)
    assert conv.validate(art.path, {}, art.manifest)["io_check"].startswith("passed")


def test_coreml_runtime_casts_positionally():
    """runtime.coreml's predict wrapper (macOS only), exercised here with a stand-in model."""
    from edgesdk.runtime import coreml
    from edgesdk.runtime.manifest import ProgramSpec, TensorSpec

    class Stub:
        def predict(self, feed):
            self.feed = feed
            return {"y_cm": feed["ids_cm"].astype(np.float32) * 2, "top_cm": np.array([1, 0], np.int32),
                    "flag_cm": np.array([1.0, 0.0], np.float32)}
    spec = ProgramSpec("forward", "model.mlpackage/Manifest.json", "forward",
                       (TensorSpec("ids", (2,), "int64"), TensorSpec("mask", (2,), "bool")),
                       (TensorSpec("y", (2,), "float32"), TensorSpec("top", (2,), "int64"),
                        TensorSpec("flag", (2,), "bool")))
    io = {"inputs": [{"name": "ids_cm", "dtype": "INT32"}, {"name": "mask_cm", "dtype": "FLOAT32"}],
          "outputs": [{"name": "y_cm", "dtype": "FLOAT16"}, {"name": "top_cm", "dtype": "INT32"},
                      {"name": "flag_cm", "dtype": "FLOAT32"}]}
    stub = Stub()
    prog = coreml.Program(stub, spec, io, "x")
    y, top, flag = prog.run([np.array([3, 4], np.int64), np.array([True, False])])
    assert stub.feed["ids_cm"].dtype == np.int32 and stub.feed["mask_cm"].dtype == np.float32
    assert y.dtype == np.float32 and top.dtype == np.int64 and flag.dtype == np.bool_
    np.testing.assert_array_equal(y, [6, 8])
    np.testing.assert_array_equal(flag, [True, False])
    with pytest.raises(runtime.InputError, match="int32"):
        prog.run([np.array([2**40, 0], np.int64), np.array([True, True])])
    if platform.system() != "Darwin":
        assert coreml.unavailable() == coreml.RUN_REASON


def test_coreml_converts_pooling_with_the_default_stride(tmp_path):
    """torch.max_pool2d(x, 2) leaves the stride implicit; coremltools needs it spelled out."""
    class Pool(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)

        def forward(self, image):
            return torch.max_pool2d(torch.relu(self.conv(image)), 2).flatten(1)

    art = edgesdk.convert(Pool().eval(), (torch.randn(2, 1, 8, 8),), "coreml-ane", quantize="fp16", out_dir=tmp_path)
    assert art.verification["kind"].startswith("structural only")
    assert art.verification["op_histogram"]
