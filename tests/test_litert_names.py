"""LiteRT files carry short tensor names (the converter's torch scope paths were ~4% of a small quantized
file); the signatures still run by their input/output names and give the same outputs."""

import numpy as np
import torch
from torch import nn

import edgesdk
from edgesdk import runtime


def test_tflite_tensor_names_are_short_and_the_signature_still_runs(tmp_path):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 8)).eval()
    x = torch.randn(2, 16)
    art = edgesdk.convert(model, (x,), "litert-cpu", out_dir=tmp_path)
    m = tfu.read_model(art.path / "model.tflite")
    (sg,) = m.subgraphs
    io = set(sg.inputs) | set(sg.outputs)
    inner = {i: t.name.decode() for i, t in enumerate(sg.tensors) if i not in io}
    assert inner and all(name == f"t{i}" for i, name in inner.items())
    out = runtime.load(art.path).run([x.numpy()])[0]
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)


def test_repeated_vectors_are_stored_once_and_the_int8_file_computes_the_same(tmp_path):
    """Per-channel int8 weights each carry an all-zero int64 zero-point vector: written once per length."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils as fbu
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(64, 64), nn.GELU())]).eval()
    x = torch.randn(2, 64)
    art = edgesdk.convert(model, (x,), "litert-cpu", quantize="int8-dynamic", out_dir=tmp_path, max_drop=None)
    shared = art.path / "model.tflite"
    plain = tmp_path / "plain.tflite"
    m = tfu.read_model(shared)
    fbu.write_model(m, str(plain))  # the same model, every vector written where it is used
    zero_points = [t.quantization.zeroPoint for t in m.subgraphs[0].tensors
                   if t.quantization is not None and t.quantization.zeroPoint is not None
                   and len(t.quantization.zeroPoint) == 64]
    assert len(zero_points) == 4
    assert plain.stat().st_size - shared.stat().st_size >= 3 * 64 * 8  # three of the four zero-point vectors

    def run(path):
        it = Interpreter(model_path=str(path))
        return next(iter(it.get_signature_runner()(**{k: x.numpy() for k in it.get_signature_runner()
                                                      .get_input_details()}).values()))
    np.testing.assert_array_equal(run(shared), run(plain))
