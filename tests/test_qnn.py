"""qnn-htp on the HTP emulator: numerics, placement (and forced CPU fallback), EPContext, profiling."""

import json

import numpy as np
import pytest
import torch

from edgesdk import runtime
import edgesdk
from conftest import make_model
from edgesdk.runtime.qnn import parse_profile_csv

pytestmark = pytest.mark.skipif(
    not {t.name: t for t in edgesdk.targets()}["qnn-htp"].runs_here,
    reason="onnxruntime-qnn HTP emulator unavailable: " + str({t.name: t for t in edgesdk.targets()}["qnn-htp"].why_not))


def _calib(ex, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randn(t.shape, generator=g) for t in ex) for _ in range(n)]


@pytest.fixture(scope="module")
def conv_uint8(tmp_path_factory):
    model, ex = make_model("convnet")
    art = edgesdk.convert(model, ex, "qnn-htp", quantize="uint8-static", calibration=_calib(ex),
                      min_npu_fraction=0.95, out_dir=tmp_path_factory.mktemp("qnn"))
    return art, model, ex


def test_conv_net_runs_on_the_npu_emulator(conv_uint8):
    art, model, ex = conv_uint8
    place = art.manifest.extra["qnn"]["placement"]
    assert place["fraction"] >= 0.95 and place["cpu_fallback"] == []
    assert art.verification["min_cosine"] > 0.99
    sess = runtime.load(art.path)
    y = sess.run([ex[0].numpy()])[0]
    ref = model(*ex).detach().numpy()
    cos = float((y * ref).sum() / np.linalg.norm(y) / np.linalg.norm(ref))
    assert cos > 0.99


def test_epcontext_model_is_shipped_and_round_trips(conv_uint8):
    art = conv_uint8[0]
    ctx = art.manifest.extra["qnn"]["epcontext"]
    assert ctx["soc_model"] == "57" and ctx["htp_arch"] == "75" and ctx["roundtrip_max_abs_err"] <= 1e-6
    files = {f.path for f in art.manifest.files}
    assert {"model.onnx", "model_ctx.onnx"} <= files
    import onnx
    ops = {n.op_type for n in onnx.load(str(art.path / "model_ctx.onnx")).graph.node}
    assert "EPContext" in ops
    # no exporter stack traces (absolute paths of this checkout) in the graph that ships
    assert not any(n.metadata_props or n.doc_string for n in onnx.load(str(art.path / "model.onnx")).graph.node)


def test_the_runtime_runs_the_context_model_and_gets_the_compiled_models_bits(conv_uint8, monkeypatch):
    """A session opens the EPContext model the converter compiled (what a phone loads: no graph compile)
    and gives the bits of the QDQ model compiled here; with the switch off, or a context compiled for
    another SoC, it compiles the QDQ model."""
    import copy
    from edgesdk.runtime import qnn
    art, _, ex = conv_uint8
    x = [ex[0].numpy()]
    sess = runtime.load(art.path)
    assert sess.program("forward").program.file.name == "model_ctx.onnx"
    y = sess.run(x)
    monkeypatch.setattr(qnn, "USE_CONTEXT_MODEL", False)
    compiled = runtime.load(art.path)
    assert compiled.program("forward").program.file.name == "model.onnx"
    assert all(np.array_equal(a, b) for a, b in zip(y, compiled.run(x)))
    monkeypatch.setattr(qnn, "USE_CONTEXT_MODEL", True)
    spec = art.manifest.programs["forward"]
    assert qnn.context_model(art.path / "model.onnx", spec, art.manifest) == art.path / "model_ctx.onnx"
    other = copy.deepcopy(art.manifest)
    other.extra["qnn"]["epcontext"]["soc_model"] = "69"
    assert qnn.context_model(art.path / "model.onnx", spec, other) is None


def test_placement_hands_back_what_a_plain_session_computes(conv_uint8):
    """The EPContext round trip is checked against the placement run's outputs (no third run of the
    model): they are the bits a plain session of the model gives."""
    from edgesdk.runtime import qnn
    art, _, ex = conv_uint8
    arrays = [t.numpy() for t in ex]
    got: list = []
    qnn.placement(art.path / "model.onnx", arrays, outputs=got)
    sess = qnn.session(art.path / "model.onnx", threads=1)
    plain = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], arrays)))
    assert len(got) == len(plain) >= 1 and all(np.array_equal(a, b) for a, b in zip(got, plain))


@pytest.mark.parametrize("kind", ["convnet", "transformer"])
def test_uint16_activations_keep_cosine_above_099(tmp_path, kind):
    model, ex = make_model(kind)
    art = edgesdk.convert(model, ex, "qnn-htp", quantize="uint16-static", calibration=_calib(ex), out_dir=tmp_path)
    out = art.verification["outputs"][0]
    assert out["cosine_min"] >= 0.99, out
    assert art.manifest.extra["qnn"]["placement"]["fraction"] >= 0.95


def test_float_graph_runs_at_the_targets_precision(tmp_path):
    model, ex = make_model("convnet")
    art = edgesdk.convert(model, ex, "qnn-htp", out_dir=tmp_path)
    v = art.verification
    assert v["passed"] and v["atol"] == 1e-2 and v["max_abs_err"] < 1e-2


class DetNet(torch.nn.Module):
    """Linear layers around a determinant: the HTP has no Det, so it falls back to CPU."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.b(h) * torch.linalg.det(h.reshape(4, 4)).reshape(1, 1)


def test_forced_fallback_fails_min_npu_fraction_naming_the_op(tmp_path):
    torch.manual_seed(0)
    model, x = DetNet().eval(), torch.randn(1, 16)
    with pytest.raises(edgesdk.errors.ConversionError, match=r"below min_npu_fraction=0.95; fell back to CPU: .*\(Det\)"):
        edgesdk.convert(model, (x,), "qnn-htp", min_npu_fraction=0.95, out_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []
    art = edgesdk.convert(model, (x,), "qnn-htp", out_dir=tmp_path)  # without the bound it converts, and says so
    place = art.manifest.extra["qnn"]["placement"]
    assert place["on_cpu"] == 1 and place["cpu_fallback"][0]["op_type"] == "Det" and place["fraction"] < 1


def test_profile_is_labelled_simulated_with_qnn_per_op_rows(conv_uint8):
    rep = runtime.profile(conv_uint8[0].path, warmup=2, iters=10, op_runs=5)
    assert rep.device.startswith("qnn-htp (simulator on ")
    assert rep.label.startswith("simulated")
    assert rep.ops and all(r["backend"] == "QNN HTP (simulated)" for r in rep.ops)
    assert abs(sum(r["share"] for r in rep.ops) - 1) < 1e-6
    assert len(rep.extra["accelerator_execute_us"]) == 5
    assert "simulator" in json.loads(rep.to_json())["device"]


def test_unknown_option_is_rejected(tmp_path):
    model, ex = make_model("mlp")
    with pytest.raises(edgesdk.errors.ConfigError, match="qnn-htp also takes capture, htp_arch, min_npu_fraction, soc_model"):
        edgesdk.convert(model, ex, "qnn-htp", out_dir=tmp_path, min_npu=0.5)


def test_parse_recorded_qnn_profile(tmp_path):
    csv = tmp_path / "q.csv"
    csv.write_text(
        "Msg Timestamp,Message,Time,Unit of Measurement,Timing Source,Event Level,Event Identifier\n"
        "0,FINALIZE,22049,US,BACKEND,ROOT,QNN (finalize) time\n"
        "0,BACKEND,160902,CYCLES,BACKEND,ROOT,Accelerator (execute) time (cycles)\n"
        "0,NODE,12870,CYCLES,BACKEND,SUB-EVENT,Input OpId_2 (cycles)\n"
        "0,NODE,92056,CYCLES,BACKEND,SUB-EVENT,node_linear:OpId_18 (cycles)\n"
        "0,BACKEND,118842,US,BACKEND,ROOT,Accelerator (execute) time\n"
        "0,BACKEND,116074,CYCLES,BACKEND,ROOT,Accelerator (execute) time (cycles)\n"
        "0,NODE,72631,CYCLES,BACKEND,SUB-EVENT,node_linear:OpId_18 (cycles)\n"
        "0,BACKEND,90000,US,BACKEND,ROOT,Accelerator (execute) time\n")
    runs, exec_us = parse_profile_csv(str(csv))
    assert exec_us == [118842.0, 90000.0]
    assert runs == [{"Input": 12870.0, "node_linear": 92056.0}, {"node_linear": 72631.0}]


class RMSNormNet(torch.nn.Module):
    """An RMSNorm as Llama writes it (``x.pow(2).mean``), a cube, and a power by a runtime tensor."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 16), torch.nn.Linear(16, 16)

    def forward(self, x):
        h = self.a(x)
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)
        return self.b(h) + 0.01 * h.pow(3) + x.abs().pow(x.abs().mean())


def test_squares_become_multiplies_and_other_powers_stay(tmp_path):
    import onnx
    torch.manual_seed(0)
    model, x = RMSNormNet().eval(), torch.randn(1, 16)
    for scheme, kw in (("fp32", {}), ("uint16-static", {"calibration": [(torch.randn(1, 16),) for _ in range(16)]})):
        art = edgesdk.convert(model, (x,), "qnn-htp", quantize=scheme, out_dir=tmp_path / scheme, **kw)
        graph = onnx.load(str(art.path / "model.onnx")).graph
        consts = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
        consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t)
                       for n in graph.node if n.op_type == "Constant"})
        exponents = [consts.get(n.input[1]) for n in graph.node if n.op_type == "Pow"]
        assert len(exponents) == 2 and not any(e is not None and float(e) == 2.0 for e in exponents), exponents
        squared = art.manifest.extra["qnn"]["squares_as_mul"]
        assert len(squared) == 1
        assert art.verification["passed"], art.verification


def test_square_pows_leaves_the_outputs_unchanged(tmp_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
    from edgesdk.converters.qnn_htp import square_pows
    nodes = [helper.make_node("Constant", [], ["two_c"], value=numpy_helper.from_array(np.array(2.0, np.float32))),
             helper.make_node("Pow", ["x", "two_c"], ["p1"], name="by_constant_node"),
             helper.make_node("Pow", ["x", "two_i"], ["p2"], name="by_initializer"),
             helper.make_node("Pow", ["x", "three"], ["p3"], name="cube"),
             helper.make_node("Pow", ["x", "e"], ["p4"], name="by_input"),
             helper.make_node("Sum", ["p1", "p2", "p3", "p4"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
                                           helper.make_tensor_value_info("e", TensorProto.FLOAT, [])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
                              [numpy_helper.from_array(np.array([2.0], np.float32), "two_i"),
                               numpy_helper.from_array(np.array(3.0, np.float32), "three")])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    feed = {"x": np.random.default_rng(0).uniform(0.5, 2, (2, 3)).astype(np.float32), "e": np.array(2.0, np.float32)}
    before = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    assert square_pows(path) == ["by_constant_node", "by_initializer"]
    after = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_allclose(after, before, rtol=1e-6)
    ops = {n.name: (n.op_type, list(n.input)) for n in onnx.load(str(path)).graph.node}
    assert ops["by_constant_node"] == ("Mul", ["x", "x"]) and ops["by_initializer"] == ("Mul", ["x", "x"])
    assert ops["cube"][0] == ops["by_input"][0] == "Pow"
    assert square_pows(path) == []          # nothing left to do: the file is not written again
