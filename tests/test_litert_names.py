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


class _Blocks(nn.Module):
    """A ModuleList iterated by the forward, as Mamba's programs do: LiteRT's tensor names then carry
    ``..._proj`` without ``blocks.<i>``."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"proj": nn.Linear(32, 32), "out": nn.Linear(32, 32)})
                                    for _ in range(2))

    def forward(self, x):  # x (B, 32) -> (B, 32)
        for b in self.blocks:
            x = b["out"](torch.relu(b["proj"](x)))
        return x


def test_a_module_of_an_iterated_block_is_kept_float_by_its_name_suffix(tmp_path):
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    from edgesdk.converters.litert_cpu import export_tflite, module_scopes, quantize_tflite, signature_io
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    model = _Blocks().eval()
    x = torch.randn(2, 32)
    progs = {p.name: p for p in collect(model, (x,))}
    src = tmp_path / "fp32.tflite"
    sigs = export_tflite(progs, src)
    as_, scopes = module_scopes(src, "blocks.1.proj")
    # the proj of both blocks (and, by op_scopes' rule, the ops reading their outputs): more float, never less
    assert as_ == "proj" and len(scopes) >= 2
    assert module_scopes(src, "blocks.1.nothing") == ("blocks.1.nothing", [])
    dst = tmp_path / "q.tflite"
    info = quantize_tflite(src, dst, "int8-dynamic", signatures=sigs, io=signature_io(src, sigs, progs),
                           calibration=None, exclude=["blocks.1.proj"])
    assert info["modules_matched_as"] == {"blocks.1.proj": {"as": "proj", "ops": len(scopes)}}
    (sg,) = tfu.read_model(dst).subgraphs
    weights = [t.type for t in sg.tensors if tuple(t.shape) == (32, 32)]
    assert len(weights) == 4 and weights.count(0) >= 2  # both proj weights float32 (without exclude: none)
