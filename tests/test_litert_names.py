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
