"""Per-target int8 recipes on the shapes real architectures have: integer inputs (token ids,
positions) through every static scheme, and the tuned recipes' op choices."""

import json

import numpy as np
import pytest
import torch
from torch import nn

import edgesdk
from edgesdk import runtime

CPU = [t.name for t in edgesdk.targets() if t.runs_here and t.name in ("onnx-cpu", "executorch-xnnpack", "litert-cpu")]
# executorch-xnnpack is the one that failed on integer index math; the others run in the slow suite
STATIC = [pytest.param(t, q, marks=() if t == "executorch-xnnpack" else pytest.mark.slow)
          for t in CPU for q in edgesdk.converters.get_converter(t).calibrated]


class TinyTextEncoder(nn.Module):
    """Token ids -> pooled features, with the integer index math HF encoders do: positions from
    ``arange(T) + offset`` (an integer add with a Python scalar) and a mask scaled by a scalar."""

    def __init__(self, vocab=64, dim=32, offset=2):
        super().__init__()
        self.offset = offset
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(64, dim)
        self.ff = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.head = nn.Linear(dim, 8)

    def forward(self, input_ids):  # (B, T) int64
        t = input_ids.shape[1]
        positions = torch.arange(t) * 1 + self.offset                   # (T,) int64
        h = self.tok(input_ids) + self.pos(positions)[None]              # (B, T, dim)
        h = h + self.ff(h)
        keep = (input_ids > 0).to(h.dtype).unsqueeze(-1)                 # (B, T, 1)
        return self.head((h * keep).sum(1) / keep.sum(1).clamp(min=1.0))  # (B, 8)


@pytest.mark.parametrize("target,scheme", STATIC)
def test_integer_inputs_quantize_with_every_static_scheme(tmp_path, target, scheme):
    torch.manual_seed(0)
    model = TinyTextEncoder().eval()
    ids = lambda seed: torch.randint(1, 64, (1, 12), generator=torch.Generator().manual_seed(seed))  # noqa: E731
    cal = [(ids(i),) for i in range(16)]
    art = edgesdk.convert(model, (ids(100),), target, quantize=scheme, calibration=cal,
                          eval_data=[(ids(200 + i),) for i in range(8)], max_drop=None, out_dir=tmp_path)
    assert art.manifest.quantization["scheme"] == scheme
    x = ids(300)
    (got,) = runtime.load(art.path).run([x.numpy()])
    want = model(x).detach().numpy()
    cos = float((got * want).sum() / ((got ** 2).sum() ** 0.5 * (want ** 2).sum() ** 0.5))
    assert got.shape == (1, 8) and cos > 0.95, cos


def _fp32_program(tmp_path):
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    model = TinyTextEncoder().eval()
    (prog,) = collect(model, (torch.randint(1, 64, (1, 12)),), None)
    cal = [(torch.randint(1, 64, (1, 12), generator=torch.Generator().manual_seed(i)),) for i in range(8)]
    return prog, cal


def test_onnx_static_recipe_quantizes_compute_ops_with_uint8_activations(tmp_path):
    """The tuned ORT recipe leaves the embedding table in float (a quantized Gather dequantizes the
    whole table every run) and uses uint8 activations (fused into QLinear kernels on x86);
    ``int8_ops="all"`` is the tool's default recipe."""
    import onnx
    from edgesdk.converters.onnx_cpu import export_onnx, quantize_onnx
    prog, cal = _fp32_program(tmp_path)
    export_onnx(prog, tmp_path / "fp32.onnx")

    def build(int8_ops):
        dst = tmp_path / f"{int8_ops}.onnx"
        info = quantize_onnx(tmp_path / "fp32.onnx", dst, "int8-static", input_names=prog.input_names,
                             calibration=cal, exclude=[], int8_ops=int8_ops)
        g = onnx.load(str(dst)).graph
        producers = {o: n for n in g.node for o in n.output}
        gathers_of_dq = [n for n in g.node if n.op_type == "Gather"
                         and producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "DequantizeLinear"]
        zp = {i.name: i.data_type for i in g.initializer}
        act_types = {zp.get(n.input[2]) for n in g.node if n.op_type == "QuantizeLinear" and len(n.input) > 2}
        return info, gathers_of_dq, act_types

    info, gathers, acts = build("compute")
    assert info["ops"] == ["Conv", "MatMul", "Gemm"] and info["activations"].startswith("uint8")
    assert not gathers and acts == {onnx.TensorProto.UINT8}
    info, gathers, acts = build("all")
    assert gathers and acts == {onnx.TensorProto.INT8}


class _ReluCnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

    def forward(self, x):  # (B, 3, 16, 16)
        h = torch.relu(self.a(x))
        return torch.relu(self.c(torch.relu(self.b(h)) + h)).mean((2, 3))  # (B, 8)


def test_onnx_cnn_recipe_leaves_no_requantization_between_convolutions(tmp_path):
    """A CNN's int8-static also quantizes Relu/Add (CNN_STATIC_OPS): ORT folds the activations into the
    convolutions' output scales, where Conv/MatMul/Gemm alone left DequantizeLinear -> QuantizeLinear."""
    import onnx
    import onnxruntime as ort

    from edgesdk.converters.onnx_cpu import export_onnx, quantize_onnx
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    (prog,) = collect(_ReluCnn().eval(), (torch.randn(1, 3, 16, 16),), None)
    export_onnx(prog, tmp_path / "fp32.onnx")
    cal = [(torch.randn(1, 3, 16, 16),) for _ in range(8)]

    def requantizations(cnn):
        dst = tmp_path / f"{cnn}.onnx"
        info = quantize_onnx(tmp_path / "fp32.onnx", dst, "int8-static", input_names=prog.input_names,
                             calibration=cal, exclude=[], cnn=cnn)
        o = ort.SessionOptions()
        o.optimized_model_filepath = str(tmp_path / f"{cnn}.opt.onnx")
        ort.InferenceSession(str(dst), o, providers=["CPUExecutionProvider"])
        g = onnx.load(o.optimized_model_filepath).graph
        users = {i: n.op_type for n in g.node for i in n.input}
        return info["ops"], sum(n.op_type == "DequantizeLinear" and users.get(n.output[0]) == "QuantizeLinear"
                                for n in g.node)

    ops, before = requantizations(False)
    assert ops == ["Conv", "MatMul", "Gemm"] and before > 0
    ops, after = requantizations(True)
    assert {"Relu", "Add"} <= set(ops) and after == 0


class _SeCnn(nn.Module):
    """Conv -> squeeze-excite (spatial mean, 1x1 convs, sigmoid gate) -> pooled features, as RegNetY's blocks."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)

    def forward(self, x):  # (B, 3, 16, 16)
        h = torch.relu(self.conv(x))
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h.mean((2, 3), keepdim=True)))))
        return nn.functional.adaptive_avg_pool2d(h * gate, 1).flatten(1)  # (B, 16)


def test_onnx_cnn_recipe_runs_squeeze_excite_in_int8(tmp_path):
    """The spatial means become GlobalAveragePool, and with the gate's Sigmoid and Mul they run as int8 kernels
    in ONNX Runtime's optimized graph: no float ReduceMean, Sigmoid or Mul left between the convolutions."""
    import numpy as np
    import onnx
    import onnxruntime as ort

    from edgesdk.converters.onnx_cpu import export_onnx, quantize_onnx
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    model = _SeCnn().eval()
    (prog,) = collect(model, (torch.randn(1, 3, 16, 16),), None)
    export_onnx(prog, tmp_path / "fp32.onnx")
    assert sum(n.op_type == "ReduceMean" for n in onnx.load(str(tmp_path / "fp32.onnx")).graph.node) == 2
    cal = [(torch.randn(1, 3, 16, 16),) for _ in range(16)]
    info = quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", "int8-static", input_names=prog.input_names,
                         calibration=cal, exclude=[], cnn=True)
    assert info["spatial_means_as_global_pools"] == 2
    o = ort.SessionOptions()
    o.optimized_model_filepath = str(tmp_path / "opt.onnx")
    sess = ort.InferenceSession(str(tmp_path / "int8.onnx"), o, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(o.optimized_model_filepath).graph.node]
    assert not {"ReduceMean", "GlobalAveragePool", "Sigmoid", "Mul"} & set(ops), ops
    assert {"QLinearGlobalAveragePool", "QLinearSigmoid", "QLinearMul"} <= set(ops), ops
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        ref = model(x).numpy()
    got = np.concatenate([sess.run(None, {prog.input_names[0]: x[i:i + 1].numpy()})[0] for i in range(4)])
    cos = (got * ref).sum() / np.linalg.norm(got) / np.linalg.norm(ref)
    assert cos > 0.99, cos


def test_litert_static_recipe_keeps_ops_without_int8_xnnpack_kernels_float(tmp_path):
    """Tuned LiteRT recipe: FULLY_CONNECTED and ops between (MUL, SUM) int8; GELU and ADD (not taken in int8
    by LiteRT's XNNPACK delegate) float, the model's output float; ``"all"`` quantizes GELU too; a
    transformer gets FULLY_CONNECTED and convolutions only."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesdk.converters.litert_cpu import export_tflite, quantize_tflite, signature_io
    prog, cal = _fp32_program(tmp_path)
    sigs = export_tflite({"forward": prog}, tmp_path / "fp32.tflite")
    io = signature_io(tmp_path / "fp32.tflite", sigs)

    def op_dtypes(int8_ops, kind="conv"):
        dst = tmp_path / f"{int8_ops}-{kind}.tflite"
        quantize_tflite(tmp_path / "fp32.tflite", dst, "int8-static", signatures=sigs, io=io, calibration=cal,
                        exclude=[], int8_ops=int8_ops, kind=kind)
        it = Interpreter(model_path=str(dst))
        td = {t["index"]: t["dtype"].__name__ for t in it.get_tensor_details()}
        ops = {(o["op_name"], td[o["outputs"][0]]) for o in it._get_ops_details() if len(o["outputs"])}
        return ops, it.get_output_details()[0]["dtype"].__name__

    tuned, out_dtype = op_dtypes("compute")
    assert {("FULLY_CONNECTED", "int8"), ("MUL", "int8"), ("ADD", "float32"), ("GELU", "float32")} <= tuned, tuned
    assert out_dtype == "float32"
    assert ("GELU", "int8") in op_dtypes("all")[0]
    # a transformer keeps the ops between its FULLY_CONNECTEDs float (accuracy, measured on MiniLM)
    assert {("FULLY_CONNECTED", "int8"), ("MUL", "float32")} <= op_dtypes("compute", "transformer")[0]


def test_bad_int8_ops_is_a_config_error(tmp_path):
    with pytest.raises(edgesdk.errors.ConfigError, match="int8_ops must be one of 'compute', 'all'"):
        edgesdk.convert(TinyTextEncoder().eval(), (torch.randint(1, 64, (1, 12)),), "onnx-cpu",
                        quantize="int8-static", int8_ops="most", out_dir=tmp_path,
                        calibration=[(torch.randint(1, 64, (1, 12)),) for _ in range(8)])


def test_onnx_int8_weights_use_7_bits_unless_told_otherwise(tmp_path):
    """onnx-cpu's int8 weights stay within 7 bits by default (reduce_range: ORT's u8s8 kernels on x86
    without VNNI saturate int16 pair sums with full-range weights; the gate failed there), full 8 bits with
    ``reduce_range=False``; the manifest says which, and a non-boolean value is a config error."""
    import numpy as np
    import onnx
    from onnx import numpy_helper
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    ex = (torch.randn(4, 32),)
    widest = {}
    for rr in (True, False):
        # gate off: full-range weights fail it on a CPU without VNNI (top-1 95.2% on an AVX2 EPYC)
        art = edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-dynamic", reduce_range=rr, max_drop=None,
                              out_dir=tmp_path, name=f"rr{rr}")
        g = onnx.load(str(art.path / "model.onnx")).graph
        ints = [numpy_helper.to_array(i) for i in g.initializer if i.data_type == onnx.TensorProto.INT8]
        assert ints
        widest[rr] = max(int(np.abs(w.astype(np.int32)).max()) for w in ints)
        details = json.dumps(art.manifest.quantization["details"])
        assert ("7-bit" in details) is rr
    assert widest[True] <= 64 < widest[False] <= 127, widest
    with pytest.raises(edgesdk.errors.ConfigError, match="reduce_range must be True or False"):
        edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-dynamic", reduce_range="yes", out_dir=tmp_path)


def test_model_kind_and_recommendation_per_kind(monkeypatch):
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "1")  # a deployment CPU with VNNI / dotprod, whatever runs the test
    from edgesdk.converters.recipes import model_kind, recommended_scheme
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 4))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 1)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert [model_kind(m) for m in (cnn, enc, mlp)] == ["conv", "transformer", "mlp"]
    # a state-space model mixes tokens too: the SDK's Mamba student counts as a transformer
    from edgesdk.models.mamba import Mamba, MambaConfig
    ssm = Mamba(MambaConfig(d_model=32, n_layers=1, n_heads=2, head_dim=16, d_state=8, n_groups=2, chunk_size=16))
    assert model_kind(ssm) == "transformer"
    for t in CPU:
        conv = edgesdk.converters.get_converter(t)
        assert recommended_scheme(t) == conv.recommended
        for m in (cnn, enc, mlp):
            assert recommended_scheme(t, m) in conv.quantization[1:]


def test_a_pipelines_recommended_scheme_follows_the_model_kind(monkeypatch):
    """`schemes: recommended` in a deploy config asks the converter for the model's kind: a
    transformer gets int8-dynamic on the three CPU targets (measured faster on onnx-cpu and litert-cpu and
    within the gate on real MiniLM; on ExecuTorch the zoo's transformers passed the default gate with it,
    most failed it in int8-static), a CNN the target's int8-static (on a CPU with int8 dot products)."""
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "1")
    from edgesdk.pipeline import schemes_for
    targets = {t.name: t for t in edgesdk.targets()}
    cnn = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 4))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 1)
    for t in ("onnx-cpu", "litert-cpu", "executorch-xnnpack"):
        assert schemes_for(targets[t], "recommended", module=enc) == (["fp32", "int8-dynamic"], [])
        assert schemes_for(targets[t], "recommended", module=cnn) == (["fp32", "int8-static"], [])


def test_cnn_with_hardswish_or_silu_recommends_fp32_on_onnx_cpu(monkeypatch):
    """ONNX Runtime runs HardSwish/SiLU in float between Q/DQ pairs, so int8-static measured slower
    than fp32 on MobileNetV3-small and EfficientNet-B0: the recipe deploys fp32 there, says why,
    and a deploy config's `recommended` converts fp32 only; other targets and ReLU CNNs keep int8."""
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "1")
    from edgesdk.converters.recipes import recommendation, recommended_scheme
    from edgesdk.pipeline import schemes_for
    targets = {t.name: t for t in edgesdk.targets()}
    for act in (nn.Hardswish, nn.SiLU):
        cnn = nn.Sequential(nn.Conv2d(3, 16, 3), act(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 4))
        scheme, why = recommendation("onnx-cpu", cnn)
        assert scheme == "fp32" and "float between Q/DQ" in why and "1.98x" in why
        assert why.endswith(edgesdk.converters.get_converter("onnx-cpu").fp32_for_float_activation_convs)
        assert schemes_for(targets["onnx-cpu"], "recommended", module=cnn) == (["fp32"], [])
        for t in ("executorch-xnnpack", "litert-cpu"):
            assert recommended_scheme(t, cnn) == "int8-static"
    relu = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    assert recommended_scheme("onnx-cpu", relu) == "int8-static"
    silu_mlp = nn.Sequential(nn.Linear(8, 16), nn.SiLU(), nn.Linear(16, 4))  # no convolution: unchanged
    assert recommended_scheme("onnx-cpu", silu_mlp) == edgesdk.converters.get_converter("onnx-cpu").recommended


def _block(c: int, wide: int) -> list:
    """1x1 (c -> wide), depthwise 3x3 on ``wide`` channels, 1x1 (wide -> c): an inverted residual when wide > c."""
    return [nn.Conv2d(c, wide, 1), nn.ReLU6(), nn.Conv2d(wide, wide, 3, padding=1, groups=wide), nn.ReLU6(),
            nn.Conv2d(wide, c, 1)]


def test_inverted_residual_cnn_without_int8_dot_products_recommends_fp32_on_the_xnnpack_targets(monkeypatch):
    """MobileNetV2-style blocks (a 1x1 widening >= 3x into a depthwise convolution) ran int8-static 1.02-1.19x
    fp32 on executorch-xnnpack and litert-cpu where the CPU has no int8 dot-product instructions: both recommend
    fp32 there and say why. A CPU with them keeps int8-static; so do depthwise CNNs without the widening
    (ShuffleNet-like, GhostNet's share 0.20: their int8 measured faster) and a model with attention."""
    from edgesdk.converters.recipes import inverted_residual_share, recommendation, recommended_scheme
    mbconv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *_block(8, 48), *_block(8, 48), *_block(8, 16))
    shuffle = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *_block(8, 8), *_block(8, 8))
    assert inverted_residual_share(mbconv) == pytest.approx(2 / 3) and inverted_residual_share(shuffle) == 0.0
    assert inverted_residual_share(nn.Sequential(nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 3))) == 0.0  # no depthwise
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "0")
    for t in ("executorch-xnnpack", "litert-cpu"):
        scheme, why = recommendation(t, mbconv)
        assert scheme == "fp32" and "inverted-residual" in why and "without int8 dot-product" in why, (t, why)
        assert recommended_scheme(t, shuffle) == "int8-static"
    with_attention = nn.Sequential(*_block(8, 48), nn.Flatten(2))
    with_attention.attn = nn.MultiheadAttention(8, 2)
    assert recommended_scheme("executorch-xnnpack", with_attention) == "int8-static"
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "1")
    for t in ("executorch-xnnpack", "litert-cpu"):
        assert recommended_scheme(t, mbconv) == "int8-static"


def test_cnn_on_a_cpu_without_int8_dot_products_recommends_fp32_on_onnx_cpu(monkeypatch, tmp_path):
    """On x86 without VNNI/AMX ONNX Runtime's int8 convolutions run no faster than fp32 ones and int8-static
    measured 1.05-1.35x fp32 on the zoo's ReLU CNNs: onnx-cpu recommends fp32 for a CNN where the deployment
    CPU (``EDGESDK_CPU_INT8_DOT``, else this machine's /proc/cpuinfo) lacks them, and says why; transformers,
    MLPs and the other targets keep their int8 scheme, and a CPU with them keeps int8-static."""
    from edgesdk.converters.recipes import recommendation, recommended_scheme
    from edgesdk.runtime.machine import int8_dot_product
    relu = nn.Sequential(nn.Conv2d(3, 16, 3), nn.ReLU(), nn.Conv2d(16, 16, 3))
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, batch_first=True), 1)
    mlp = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "0")
    scheme, why = recommendation("onnx-cpu", relu)
    assert scheme == "fp32" and "no int8 dot-product" in why and "1.05-1.35x" in why, why
    assert recommended_scheme("onnx-cpu", enc) == "int8-dynamic"
    assert recommended_scheme("onnx-cpu", mlp) == edgesdk.converters.get_converter("onnx-cpu").recommended
    for t in ("executorch-xnnpack", "litert-cpu"):
        assert recommended_scheme(t, relu) == "int8-static"
    # convolutions that hold most weights, plus attention (wav2vec2-like: its int8-static ran 0.90x fp32 there)
    speech = nn.Sequential(nn.Conv1d(1, 256, 10, 5), nn.ReLU(), nn.Conv1d(256, 256, 3),
                           nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 16, batch_first=True), 1))
    assert recommended_scheme("onnx-cpu", speech) == "int8-static"
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "1")
    assert recommended_scheme("onnx-cpu", relu) == "int8-static"
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", "yes")
    with pytest.raises(edgesdk.errors.ConfigError, match="EDGESDK_CPU_INT8_DOT must be 1"):
        recommended_scheme("onnx-cpu", relu)
    # unset: this machine's flags (x86 "flags", Arm "Features"); no /proc: cannot tell, int8 stays
    monkeypatch.delenv("EDGESDK_CPU_INT8_DOT")
    for flags, has in (("flags\t\t: fpu sse2 avx2 fma", False), ("flags\t\t: avx2 avx512f avx512_vnni", True),
                       ("flags\t\t: avx2 avx_vnni", True), ("Features\t: fp asimd asimddp", True),
                       ("Features\t: fp asimd", False)):
        (tmp_path / "cpuinfo").write_text(f"processor\t: 0\n{flags}\n\nprocessor\t: 1\n{flags}\n")
        assert int8_dot_product(tmp_path / "cpuinfo") is has, flags
    assert int8_dot_product(tmp_path / "missing") is None


class _TimmGELU(nn.Module):
    """A library's own GELU module (timm's ``GELU`` is an ``nn.Module``, not an ``nn.GELU``)."""

    def forward(self, x):
        return nn.functional.gelu(x)


_TimmGELU.__name__ = "GELU"


def test_cnn_with_gelu_recommends_fp32_on_onnx_cpu():
    """ORT has no int8 Gelu either: the zoo's five GELU CNNs (ConvNeXt, RepViT, EdgeNeXt, EfficientFormerV2,
    FastViT) ran int8-static 1.02-2.96x fp32 on onnx-cpu, so a CNN with GELU (torch's or a library's own
    class) deploys fp32 there; LiteRT and ExecuTorch keep int8-static, a transformer with GELU keeps
    int8-dynamic, a GELU MLP without convolutions keeps the target's recommendation."""
    from edgesdk.converters.recipes import recommendation, recommended_scheme
    for act in (nn.GELU, _TimmGELU):
        cnn = nn.Sequential(nn.Conv2d(3, 16, 3), act(), nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(16, 4))
        scheme, why = recommendation("onnx-cpu", cnn)
        assert scheme == "fp32" and "GELU" in why and "2.96x" in why, why
        for t in ("executorch-xnnpack", "litert-cpu"):
            assert recommended_scheme(t, cnn) == "int8-static"
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, activation="gelu", batch_first=True), 1)
    vit = nn.Sequential(nn.Conv2d(3, 32, 4, 4), enc)  # a patch embedding + GELU blocks: a transformer
    assert recommended_scheme("onnx-cpu", vit) == "int8-dynamic"
    gelu_mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    assert recommended_scheme("onnx-cpu", gelu_mlp) == edgesdk.converters.get_converter("onnx-cpu").recommended


def test_litert_static_keeps_large_depthwise_convolutions_float(tmp_path):
    """LiteRT int8-static keeps depthwise convolutions with kernels above 5x5 or a depth multiplier float
    (int8 7x7 ones made ConvNeXt-atto 4.6x fp32; FastViT has both kinds), and quantizes the plain 3x3
    ones (they pay on MobileNetV2 and EfficientNet)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesdk.converters.litert_cpu import export_tflite, large_depthwise_scopes, quantize_tflite, signature_io
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 7, padding=3, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 16, 5, padding=2, groups=8), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    (prog,) = collect(model, (torch.randn(1, 3, 16, 16),), None)
    src = tmp_path / "fp32.tflite"
    sigs = export_tflite({"forward": prog}, src)
    assert len(large_depthwise_scopes(src)) == 2 and large_depthwise_scopes(src, None) == []
    assert len(large_depthwise_scopes(src, 0)) == 3
    dst = tmp_path / "int8.tflite"
    info = quantize_tflite(src, dst, "int8-static", signatures=sigs, io=signature_io(src, sigs),
                           calibration=[(torch.randn(1, 3, 16, 16),) for _ in range(8)], exclude=[])
    assert info["large_depthwise_convs_kept_float"] == 2
    it = Interpreter(model_path=str(dst))
    td = {t["index"]: t for t in it.get_tensor_details()}
    dw = sorted((int(td[o["inputs"][1]]["shape"][1]), int(td[o["inputs"][1]]["shape"][3]),
                 td[o["inputs"][1]]["dtype"].__name__)
                for o in it._get_ops_details() if o["op_name"] == "DEPTHWISE_CONV_2D")
    assert dw == [(3, 8, "int8"), (5, 16, "float32"), (7, 8, "float32")], dw


@pytest.mark.parametrize("int8_dot", ["1", "0"])
def test_executorch_static_keeps_depthwise_convolutions_float_by_the_deployment_cpu(tmp_path, monkeypatch, int8_dot):
    """ExecuTorch's XNNPACK int8-static keeps depthwise convolutions above 3x3 (its int8 5x5 kernel ran 1.6-1.8x
    its fp32 one; benchmarks/xnnpack_builds.py) and depth-multiplier ones float, plain 3x3 ones int8
    (ConvNeXt-atto 0.95x -> 0.80x fp32, MobileNetV3-small 0.71x -> 0.62x, MobileNetV2 0.69x either way;
    benchmarks/xnnpack_depthwise.py).
    On a deployment CPU without int8 dot-product instructions every depthwise one stays float (its int8
    depthwise kernels ran 2.2-3.0x the fp32 ones: MobileNetV3-small 1.24x -> 1.02x fp32), and the manifest says why."""
    from edgesdk.converters.executorch_xnnpack import kept_float_by_rule
    monkeypatch.setenv("EDGESDK_CPU_INT8_DOT", int8_dot)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 7, padding=3, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.ReLU(),
                          nn.Conv2d(8, 16, 5, padding=2, groups=8), nn.ReLU(),
                          nn.Conv2d(16, 16, 5, padding=2, groups=16), nn.ReLU(), nn.Conv2d(16, 4, 1)).eval()
    x = torch.randn(1, 3, 16, 16)
    gm = torch.export.export(model, (x,)).module()
    convs = {n.name for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.conv2d.default}
    assert len(convs) == 6 and kept_float_by_rule(gm) == set()
    assert [len(kept_float_by_rule(gm, above)) for above in (5, 3, 0)] == [2, 3, 4]
    art = edgesdk.convert(model, (x,), "executorch-xnnpack", quantize="int8-static", out_dir=tmp_path,
                          calibration=[(torch.randn(1, 3, 16, 16),) for _ in range(8)], max_drop=None)
    details = art.manifest.quantization["details"]["forward"]
    if int8_dot == "1":
        assert details["kept_float_by_rule"] == ["2", "6", "8"], details  # 7x7, depth multiplier, plain 5x5
        assert details["depthwise_convs"] == "float above 3x3 or with a depth multiplier", details
    else:
        assert details["kept_float_by_rule"] == ["2", "4", "6", "8"], details
        assert "no int8 dot-product instructions" in details["depthwise_convs"], details
    # lowered to XNNPACK either way, and it runs
    assert art.manifest.extra["partition"]["forward"]["delegated_fraction"] > 0.5
    out = runtime.load(art.path).run(x.numpy())
    assert all(bool(torch.isfinite(torch.as_tensor(o)).all()) for o in out)


class _SiluGate(nn.Module):
    """An in-place SiLU whose input is read again after it, and a squeeze-excitation sigmoid gate."""

    def __init__(self):
        super().__init__()
        self.a, self.se, self.b = nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 1), nn.Conv2d(16, 8, 1)
        self.act = nn.SiLU(inplace=True)

    def forward(self, x):
        h = self.a(x)
        g = self.act(h) + h  # h reads the in-place SiLU's result
        g = g * torch.sigmoid(self.se(g.mean((2, 3), keepdim=True)))
        return self.b(g)


def test_silu_is_rewritten_as_a_sigmoid_product_with_the_same_maths():
    from edgesdk.converters.executorch_xnnpack import silu_as_sigmoid_product
    torch.manual_seed(0)
    model, x = _SiluGate().eval(), torch.randn(1, 8, 6, 6)
    gm = torch.export.export(model, (x,)).module()
    assert [n for n in gm.graph.nodes if n.target == torch.ops.aten.silu_.default]  # the in-place op, exported
    assert silu_as_sigmoid_product(gm) == 1
    assert not [n for n in gm.graph.nodes if "silu" in str(n.target)]
    torch.testing.assert_close(gm(x), model(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("on", [True, False])
def test_executorch_static_runs_silu_and_sigmoid_gates_in_int8(tmp_path, monkeypatch, on):
    """`INT8_SIGMOID`: int8-static runs SiLU as x * sigmoid(x) and every sigmoid with int8 input and output, taken
    by the XNNPACK partitioner as an int8 op: its dequantize input and quantize output are absorbed into it, not
    run as conversions around an fp32 sigmoid (SiLU blocks 0.90x -> 0.57x fp32, EfficientNet-B0 0.78x -> 0.53x,
    MobileViT-xxs 0.76x -> 0.70x; benchmarks/xnnpack_activations.py, int8_ceiling.py). Off, the sigmoid is fp32
    between conversions, as in ExecuTorch's own partitioner."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.utils.quant_utils import is_tagged_as_implicit_q_dq
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.dialects._ops import ops as exir_ops
    from edgesdk.converters import executorch_xnnpack as xnn
    from edgesdk.converters.programs import collect
    monkeypatch.setattr(xnn, "INT8_SIGMOID", on)
    torch.manual_seed(0)
    model, x = _SiluGate().eval(), torch.randn(1, 8, 6, 6)
    calibration = [(torch.randn(1, 8, 6, 6),) for _ in range(8)]
    q = xnn.pt2e_quantize(next(iter(collect(model, (x,)))), xnn.xnnpack_quantizer("int8-static", set()), calibration)
    assert len(_quantized_sigmoids(q)) == (2 if on else 1)  # SiLU's own sigmoid and the gate's
    edge = to_edge_transform_and_lower(torch.export.export(q, (x,)),
                                       partitioner=[XnnpackPartitioner(configs=xnn.partitioner_configs())])
    lowered = [n for _, m in edge.exported_program().graph_module.named_children() if hasattr(m, "original_module")
               for n in m.original_module.graph.nodes if n.target == exir_ops.edge.aten.sigmoid.default]
    absorbed = [all(is_tagged_as_implicit_q_dq(a) for a in n.all_input_nodes)
                and all(is_tagged_as_implicit_q_dq(u) for u in n.users) for n in lowered]
    assert absorbed == ([True, True] if on else [False, False]), absorbed
    art = edgesdk.convert(model, (x,), "executorch-xnnpack", quantize="int8-static", out_dir=tmp_path,
                          calibration=calibration, max_drop=None)
    assert art.manifest.quantization["details"]["forward"].get("sigmoids_int8") == (2 if on else None)
    part = art.manifest.extra["partition"]["forward"]
    assert (part["delegated_subgraphs"], part["outside_delegate"]) == (1, []), part
    out, ref = np.asarray(runtime.load(art.path).run(x.numpy())[0]).ravel(), model(x).detach().numpy().ravel()
    assert out @ ref / np.linalg.norm(out) / np.linalg.norm(ref) > 0.99


def _quantized_sigmoids(gm) -> list:
    """The sigmoids of a quantized graph whose every reader is a quantize op."""
    return [n for n in gm.graph.nodes if n.target == torch.ops.aten.sigmoid.default
            and all("quantize_per_tensor" in str(u.target) for u in n.users)]


def test_qat_quantizes_the_sigmoids_as_int8_static_does(tmp_path):
    """QAT prepares with the same quantizer: SiLU's sigmoid and the gate's get int8 outputs there too, and the
    int8-qat artifact converts and passes its gate."""
    import copy
    from edgesdk.converters.qat import convert_qat, prepare_qat
    torch.manual_seed(0)
    teacher, x = _SiluGate().eval(), torch.randn(2, 8, 6, 6)
    qat = prepare_qat(copy.deepcopy(teacher), (x,))
    qat(torch.randn(2, 8, 6, 6))
    int8 = convert_qat(qat)
    assert len(_quantized_sigmoids(int8)) == 2
    art = edgesdk.convert(int8, (x,), "executorch-xnnpack", quantize="int8-qat", max_drop=0.05, out_dir=tmp_path)
    assert art.verification["min_cosine"] > 0.99


class _Residuals(nn.Module):
    """A residual ADD XNNPACK takes in int8, one whose branch is 1e-6 of the skip path (a random-weight layer
    scale: input-to-output scale ratio below XNNPACK's 2**-10), one that broadcasts a learned shift."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1)
        self.shift = nn.Parameter(torch.randn(1, 8, 1, 1))

    def forward(self, x):
        x = x + torch.relu(self.a(x))
        x = x + 1e-6 * self.b(x)
        return x + self.shift


def test_litert_static_quantizes_the_residual_adds_xnnpack_takes(tmp_path):
    """int8 residual ADDs pay on CNNs (MnasNet-0.5 1.09x -> 1.04x fp32, RepViT 0.49x -> 0.41x); an ADD that
    broadcasts, or whose calibrated input-to-output scale ratio XNNPACK refuses, stays float, since either
    split the delegate (ConvNeXt-atto 1 -> 31 partitions with every ADD int8)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesdk.converters.litert_cpu import export_tflite, float_add_scopes, quantize_tflite, signature_io
    from edgesdk.converters.programs import collect
    torch.manual_seed(0)
    x = torch.randn(1, 8, 16, 16)
    (prog,) = collect(_Residuals().eval(), (x,), None)
    src = tmp_path / "fp32.tflite"
    sigs = export_tflite({"forward": prog}, src)
    assert len(float_add_scopes(src)) == 1                     # the broadcast one, before calibration
    dst = tmp_path / "int8.tflite"
    info = quantize_tflite(src, dst, "int8-static", signatures=sigs, io=signature_io(src, sigs),
                           calibration=[(torch.randn(1, 8, 16, 16),) for _ in range(8)], exclude=[])
    assert info["adds_kept_float"] == 2
    it = Interpreter(model_path=str(dst))
    td = {t["index"]: t["dtype"].__name__ for t in it.get_tensor_details()}
    adds = sorted(td[o["outputs"][0]] for o in it._get_ops_details() if o["op_name"] == "ADD")
    assert adds == ["float32", "float32", "int8"], adds
