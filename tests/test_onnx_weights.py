"""ONNX weight passes: the tied embedding / head table in int8, and no exporter metadata in the files we ship.

Real exports and ONNX Runtime sessions; the tied table is the pattern the shipped generation students have
(``lm_head.weight = wte.weight``)."""

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

import edgesdk
from edgesdk.converters.onnx_weights import quantize_tied_table

V, D = 300, 64


class TiedLM(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(V, D)
        self.mix = nn.Linear(D, D)
        self.lm_head = nn.Linear(D, V, bias=False)
        self.lm_head.weight = self.wte.weight  # tied

    def forward(self, ids):  # ids (B, T) -> logits (B, T, V)
        return self.lm_head(torch.tanh(self.mix(self.wte(ids))))


class TiedLM2D(TiedLM):
    def forward(self, ids):  # ids (B, T) -> logits (B*T, V): a head on 2-D input exports as a Gemm
        return self.lm_head(torch.tanh(self.mix(self.wte(ids))).reshape(-1, D))


@pytest.fixture(scope="module")
def tied_onnx(tmp_path_factory):
    from edgesdk.converters.onnx_cpu import export_onnx
    from edgesdk.converters.programs import collect
    path = tmp_path_factory.mktemp("tied") / "m.onnx"
    export_onnx(collect(TiedLM().eval(), (torch.randint(0, V, (1, 7)),))[0], path)
    return path


def _float_tables(model) -> list:
    return [list(i.dims) for i in model.graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT and sorted(i.dims) == sorted([V, D])]


def test_the_tied_table_is_read_as_int8_rows_and_the_head_gets_its_own_copy(tied_onnx):
    import onnxruntime as ort
    m = onnx.load(str(tied_onnx))
    assert _float_tables(m) == [[V, D]]                    # one shared fp32 table before
    done = quantize_tied_table(m)
    assert [d["shape"] for d in done] == [[V, D]]
    assert _float_tables(m) == [[D, V]]                    # only the head's copy, for the quantizer
    q = next(numpy_helper.to_array(i) for i in m.graph.initializer if i.name.endswith("_int8_rows"))
    assert q.dtype == np.int8 and q.shape == (V, D) and np.abs(q).max(axis=1).min() == 127  # per-row scale
    ids = np.array([[0, 5, 299, 17, 5, 42, 1]], dtype=np.int64)
    ref = ort.InferenceSession(str(tied_onnx)).run(None, {"ids": ids})[0]
    got = ort.InferenceSession(m.SerializeToString()).run(None, {"ids": ids})[0]
    # exactly the model with its embedding rows dequantized (the head still reads fp32 here)
    net = TiedLM().eval()
    w = net.wte.weight.detach().numpy()
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    deq = torch.from_numpy((np.clip(np.rint(w / scale), -127, 127) * scale).astype(np.float32))
    with torch.no_grad():
        want = net.lm_head(torch.tanh(net.mix(deq[torch.from_numpy(ids)]))).numpy()
    assert np.abs(got - want).max() < 1e-5
    assert 0 < np.abs(got - ref).max() < 0.05 * np.abs(ref).max()  # the int8 rows moved it, a little


def test_int8_dynamic_onnx_has_no_fp32_embedding_and_no_node_metadata(tmp_path):
    model = TiedLM().eval()
    ids = torch.randint(0, V, (1, 7))
    fp32 = edgesdk.convert(model, (ids,), "onnx-cpu", out_dir=tmp_path, name="fp32")
    q = edgesdk.convert(model, (ids,), "onnx-cpu", quantize="int8-dynamic", out_dir=tmp_path, name="q",
                        calibration=None, max_drop=None)
    for art in (fp32, q):
        m = onnx.load(str(art.path / "model.onnx"))
        assert not any(n.metadata_props or n.doc_string for n in m.graph.node)
        assert not m.graph.value_info                      # inner shapes: ONNX Runtime infers them
    m = onnx.load(str(q.path / "model.onnx"))
    assert _float_tables(m) == []                          # embedding int8 rows, head int8 per channel
    details = q.manifest.quantization["details"]                 # per program: what the manifest records
    assert [t["shape"] for d in details.values() for t in d["tied_tables"]] == [[V, D]]
    # what stays float is the biases and scales only (the tied table was all of it before, ~80% here)
    def float_bytes(art):
        return sum(numpy_helper.to_array(i).nbytes for i in onnx.load(str(art.path / "model.onnx")).graph.initializer
                   if i.data_type == onnx.TensorProto.FLOAT)
    assert float_bytes(q) < 0.05 * float_bytes(fp32)


def test_int8_static_reads_int8_embedding_rows_and_keeps_the_tied_head_float(tmp_path):
    """Static QDQ would give the logits one uint8 scale (argmaxes flip): the head keeps its fp32 copy. A Gemm
    head, as Mamba's."""
    model = TiedLM2D().eval()
    cal = [(torch.randint(0, V, (1, 7)),) for _ in range(8)]
    q = edgesdk.convert(model, cal[0], "onnx-cpu", quantize="int8-static", calibration=cal, out_dir=tmp_path,
                        max_drop=None)
    m = onnx.load(str(q.path / "model.onnx"))
    assert _float_tables(m) == [[D, V]]                    # the head's own copy, float
    assert any(i.name.endswith("_int8_rows") and i.data_type == onnx.TensorProto.INT8 for i in m.graph.initializer)
    (d,) = q.manifest.quantization["details"].values()
    assert d["tied_tables"][0]["head_nodes"] and set(d["tied_tables"][0]["head_nodes"]) <= set(
        d["tied_weight_nodes_kept_float"])


def test_identical_initializers_are_stored_once_and_the_graph_computes_the_same(tmp_path):
    """The exporter writes one zeros state / causal mask per layer: one copy each, same outputs."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgesdk.converters.onnx_weights import strip_node_metadata
    rng = np.random.default_rng(0)
    same, other = rng.standard_normal((64, 64)).astype(np.float32), rng.standard_normal((64, 64)).astype(np.float32)
    inits = [numpy_helper.from_array(same, "a"), numpy_helper.from_array(same.copy(), "b"),
             numpy_helper.from_array(other, "c"), numpy_helper.from_array(same.astype(np.float64), "d")]
    nodes = [helper.make_node("MatMul", ["x", "a"], ["y1"]), helper.make_node("MatMul", ["y1", "b"], ["y2"]),
             helper.make_node("MatMul", ["y2", "c"], ["y3"]), helper.make_node("Cast", ["d"], ["d32"], to=1),
             helper.make_node("Add", ["y3", "d32"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [64, 64])
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                                opset_imports=[helper.make_opsetid("", 18)]), str(path))
    feed = {"x": rng.standard_normal((64, 64)).astype(np.float32)}
    want = ort.InferenceSession(str(path)).run(None, feed)[0]
    assert strip_node_metadata(path) >= same.nbytes
    m = onnx.load(str(path))
    assert sorted(i.name for i in m.graph.initializer) == ["a", "c", "d"]  # float64 'd' differs by dtype
    assert [n.input[1] for n in m.graph.node[:2]] == ["a", "a"]
    np.testing.assert_array_equal(ort.InferenceSession(str(path)).run(None, feed)[0], want)


class SharedLayer(nn.Module):
    """One large layer applied twice, as ALBERT shares its layers: the exporter leaves its weight behind a
    Transpose (the constant folder keeps a large tensor with several readers unfolded)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer, self.out = nn.Linear(600, 600), nn.Linear(600, 10)

    def forward(self, x):
        return self.out(torch.relu(self.layer(torch.relu(self.layer(x)))))


def test_a_shared_weight_behind_a_transpose_is_quantized_once_for_every_reader(tmp_path):
    from collections import Counter
    model, x = SharedLayer().eval(), torch.randn(1, 8, 600)
    fp32 = edgesdk.convert(model, (x,), "onnx-cpu", out_dir=tmp_path)
    assert Counter(n.op_type for n in onnx.load(str(fp32.path / "model.onnx")).graph.node)["Transpose"] == 1
    art = edgesdk.convert(model, (x,), "onnx-cpu", quantize="int8-dynamic", out_dir=tmp_path, max_drop=None)
    graph = onnx.load(str(art.path / "model.onnx")).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["MatMulInteger"] == 3 and ops["MatMul"] == 0 and ops["Transpose"] == 0   # was 1 of 3 quantized
    assert art.manifest.quantization["details"]["forward"]["weight_transposes_folded"] == 1
    assert sum(i.data_type == onnx.TensorProto.INT8 and list(i.dims) == [600, 600] for i in graph.initializer) == 1
    assert (art.path / "model.onnx").stat().st_size < 0.3 * (fp32.path / "model.onnx").stat().st_size
    assert art.manifest.verification["min_cosine"] > 0.99
