"""Convert -> load -> compare -> profile, for every registered target and several model shapes."""

import json

import numpy as np
import pytest
import torch

from edgesdk import converters
from edgesdk import runtime
from edgesdk.runtime.manifest import FORMATS
import edgesdk
from conftest import MODELS, TokenClassifier

TARGETS = [t.name for t in edgesdk.targets() if t.runs_here]  # convert-only targets: test_convert_only.py


def _tol(target):
    return converters.get_converter(target).default_tolerance.get("fp32", (1e-4, 1e-4))


def test_registry_lists_the_cpu_targets():
    names = {t.name for t in edgesdk.targets()}
    assert {"onnx-cpu", "executorch-xnnpack", "litert-cpu"} <= names
    for t in edgesdk.targets():
        assert t.device in ("cpu", "npu", "gpu")
        assert t.format in set(FORMATS.values())  # a format some runtime backend registered
        assert t.quantization[0] == "fp32"
        assert t.runs_here == (t.why_not is None)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_convert_matches_pytorch(converted, kind, target):
    art, model, ex = converted(kind, target)
    m = json.loads((art.path / "manifest.json").read_text())
    for key in ("schema", "name", "target", "format", "programs", "files", "versions", "created_at", "verification"):
        assert key in m, key
    assert m["target"] == target and m["verification"]["passed"] is True
    assert m["verification"]["inputs_per_program"] == 4
    assert m["versions"]["torch"].startswith("2.13")
    assert all(len(f["sha256"]) == 64 and f["size"] > 0 for f in m["files"])

    sess = runtime.load(art.path)
    assert sess.verified and sess.target == target
    assert [s.shape for s in sess.inputs] == [tuple(t.shape) for t in ex]
    x = [t.numpy() for t in ex]
    y = sess.run(x)
    with torch.no_grad():
        ref = model(*ex)
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert len(y) == len(ref)
    atol, rtol = _tol(target)
    for a, b in zip(y, ref):
        np.testing.assert_allclose(a, b.numpy(), atol=atol + rtol * float(b.abs().max()), rtol=0)
    # the same inputs by name give the same outputs
    by_name = sess.run({s.name: a for s, a in zip(sess.inputs, x)})
    for a, b in zip(by_name, y):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("target", TARGETS)
def test_profile_report(converted, target):
    art = converted("transformer", target)[0]
    rep = runtime.profile(art.path, warmup=2, iters=30)
    assert len(rep.samples_ms) == 30 and all(s > 0 for s in rep.samples_ms)
    assert rep.load_ms > 0 and rep.first_run_ms > 0 and rep.peak_rss_mb > 0
    assert min(rep.samples_ms) <= rep.p50_ms <= rep.p90_ms <= rep.p99_ms <= max(rep.samples_ms)
    assert rep.threads == runtime.default_threads() and rep.target == target
    assert rep.noisy == (rep.cv > 0.10)
    if not rep.ops:  # LiteRT's Python APIs expose no per-op timing: the report says so
        assert target.startswith("litert") and rep.ops_note
    else:  # ONNX Runtime profiler / ExecuTorch ETDump give real rows
        assert rep.ops and abs(sum(r["share"] for r in rep.ops) - 1.0) < 1e-6
        assert all(r["total_ms"] >= 0 and r["calls"] >= 1 for r in rep.ops)
    again = runtime.ProfileReport.from_json(rep.to_json())
    assert again.samples_ms == rep.samples_ms and again.p99_ms == rep.p99_ms
    assert json.loads(rep.to_json())["stats"]["count"] == 30


@pytest.mark.parametrize("target", TARGETS)
def test_bare_model_file(converted, target):
    art = converted("mlp", target)[0]
    model_file = art.path / art.manifest.default_program.file
    sess = runtime.load(model_file)
    assert not sess.verified
    x = np.random.default_rng(0).standard_normal(tuple(sess.inputs[0].shape)).astype(np.float32)
    # a bare .onnx runs on ONNX Runtime's CPU provider, so qnn-htp's differs by the HTP's precision
    np.testing.assert_allclose(sess.run([x])[0], runtime.load(art.path).run([x])[0], atol=max(1e-6, _tol(target)[0]))
    with pytest.raises(runtime.IntegrityError):
        runtime.load(model_file, require_verified=True)
    # manifest.json path works the same as the directory
    assert runtime.load(art.path / "manifest.json").verified


@pytest.mark.parametrize("target", TARGETS)
def test_int64_ids_bool_mask_and_int_outputs(tmp_path, target):
    torch.manual_seed(0)
    model = TokenClassifier().eval()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 4:] = False
    art = edgesdk.convert(model, (ids, mask), target, out_dir=tmp_path)
    spec = {s.name: s for s in art.manifest.default_program.inputs}
    assert spec["ids"].dtype == "int64" and spec["mask"].dtype == "bool"
    assert spec["ids"].value_range == (int(ids.min()), int(ids.max()))
    sess = runtime.load(art.path)
    logits, top = sess.run([ids.numpy(), mask.numpy()])
    ref_logits, ref_top = model(ids, mask)
    assert top.dtype == np.int64  # LiteRT stores int32; the runtime widens back to the manifest's dtype
    np.testing.assert_array_equal(top, ref_top.numpy())
    np.testing.assert_allclose(logits, ref_logits.detach().numpy(), atol=max(1e-5, _tol(target)[0]))
    if target == "litert-cpu":
        big = ids.numpy().copy()
        big[0, 0] = 2**40
        with pytest.raises(runtime.InputError, match="int32"):
            sess.run([big, mask.numpy()])


class TwoPrograms(torch.nn.Module):
    """A model exporting two entry points through the converters' protocol."""

    def __init__(self):
        super().__init__()
        self.enc = torch.nn.Linear(8, 16)
        self.dec = torch.nn.Linear(16, 4)

    def edge_programs(self):
        enc, dec = self.enc, self.dec

        class Encode(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.enc = enc

            def forward(self, src):
                return torch.tanh(self.enc(src))

        class Step(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.dec = dec

            def forward(self, memory, scale):
                return self.dec(memory) * scale

        return {"encode": (Encode(), (torch.randn(1, 8),)),
                "step": (Step(), (torch.randn(1, 16), torch.ones(1, 1)))}


@pytest.mark.parametrize("target", TARGETS)
def test_several_programs_in_one_artifact(tmp_path, target):
    torch.manual_seed(0)
    model = TwoPrograms().eval()
    art = edgesdk.convert(model, None, target, out_dir=tmp_path)
    assert set(art.manifest.programs) == {"encode", "step"}
    sess = runtime.load(art.path)
    src = np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32)
    (mem,) = sess.run([src], program="encode")
    (out,) = sess.run({"memory": mem, "scale": np.full((1, 1), 2.0, np.float32)}, program="step")
    ref = model.dec(torch.tanh(model.enc(torch.from_numpy(src)))) * 2.0
    np.testing.assert_allclose(out, ref.detach().numpy(), atol=max(1e-5, _tol(target)[0]))
    with pytest.raises(runtime.ConfigError, match="encode"):
        sess.run([src], program="nope")
