"""Generation students on qnn-htp: every program compiles for the HTP emulator, runs there whole
(placement), ships an EPContext, and generates the PyTorch programs' greedy tokens."""

import numpy as np
import onnx
import pytest
import torch

import edgesdk
from edgesdk.converters.programs import TorchPrograms
from edgesdk.models.encdec import EncDec, EncDecConfig

pytestmark = pytest.mark.skipif(
    not {t.name: t for t in edgesdk.targets()}["qnn-htp"].runs_here,
    reason="onnxruntime-qnn HTP emulator unavailable: " + str({t.name: t for t in edgesdk.targets()}["qnn-htp"].why_not))


def _small_encdec() -> EncDec:
    torch.manual_seed(0)
    # the shipped student's shape (GQA 4/2, 2 decoder layers), narrower and shorter
    return EncDec(EncDecConfig(d_model=64, n_layers=4, n_enc_layers=2, n_heads=4, n_kv_heads=2, max_source=32,
                               max_target=8, prompt_lengths=(16, 32))).eval()


@pytest.fixture(scope="module")
def encdec_fp32(tmp_path_factory):
    m = _small_encdec()
    art = edgesdk.convert(m, None, "qnn-htp", min_npu_fraction=0.95, out_dir=tmp_path_factory.mktemp("qnn-encdec"))
    return art, m


def test_encdec_programs_all_run_on_the_htp(encdec_fp32):
    # The step's K/V split used to be a slice of a rank-5 transpose feeding a matmul, which the
    # HTP could not finalize (QNN_COMMON_ERROR_MEM_ALLOC); it is rank 4 now, same maths.
    art, _ = encdec_fp32
    qnn = art.manifest.extra["qnn"]
    programs = {"encode_16", "encode_32", "decode_step_16", "decode_step_32"}  # a step per prompt class
    assert set(qnn["placement"]) == programs and set(qnn["epcontext"]) == programs
    for name, place in qnn["placement"].items():
        assert place["fraction"] >= 0.95 and place["cpu_fallback"] == [], (name, place)
    for name, ctx in qnn["epcontext"].items():
        ops = {n.op_type for n in onnx.load(str(art.path / ctx["file"])).graph.node}
        assert "EPContext" in ops and ctx["roundtrip_max_abs_err"] <= 1e-6, name
    assert art.verification["passed"]


def test_encdec_greedy_tokens_equal_pytorch_on_the_emulator(encdec_fp32):
    art, m = encdec_fp32
    sess, ref = edgesdk.runtime.load(art.path), TorchPrograms(m)
    for prompt in ([5, 17, 99, 3, 42, 200, 7], list(range(60, 90))):   # class 16, class 32
        want = ref.generate(prompt, 6, stop_at_eos=False).tokens
        got = sess.generate(prompt, 6, stop_at_eos=False).tokens
        assert got == want, (prompt, got, want)


@torch.no_grad()
def test_rank4_kv_split_is_the_same_maths():
    m = _small_encdec()
    x = torch.randn(1, 5, 64)
    for attn in (m.dec[0].attn, m.dec[0].cross):
        k, v = attn.split_kv(x)
        ref = attn.kv(x).view(1, 5, 2, attn.hkv, attn.dh).permute(2, 0, 3, 1, 4)  # the former rank-5 split
        assert torch.equal(k, ref[0]) and torch.equal(v, ref[1])
    assert np.array_equal(m.dec[0].cross.memory_kv(x).numpy(), ref.numpy())


def _small_mamba():
    from edgesdk.models.mamba import Mamba, MambaConfig
    torch.manual_seed(0)
    # the shipped student's block (4 heads, groups = heads), narrower and shallower
    return Mamba(MambaConfig(d_model=64, n_layers=2, n_heads=4, head_dim=16, d_state=16, n_groups=4,
                             chunk_size=16, prompt_lengths=(32,))).eval()


def test_mamba_step_runs_on_the_htp_and_generates_pytorchs_tokens(tmp_path):
    # The step's depthwise-conv tap sum used to be a rank-2 ReduceSum plus a per-channel bias:
    # on the HTP that corrupted everything downstream (logits cosine 0.98, state cosine 0.87).
    m = _small_mamba()
    art = edgesdk.convert(m, None, "qnn-htp", min_npu_fraction=0.95, atol=5e-2, rtol=5e-2, out_dir=tmp_path)
    qnn = art.manifest.extra["qnn"]
    assert set(qnn["epcontext"]) == {"prefill", "step"}
    assert all(p["fraction"] >= 0.95 for p in qnn["placement"].values()), qnn["placement"]
    step = art.verification["programs"]["step"]["outputs"]
    assert min(o["cosine"] for o in step) > 0.9995, step            # fp16 numerics, not a wrong graph
    sess, ref = edgesdk.runtime.load(art.path), TorchPrograms(m)
    prompt = [5, 17, 99, 3, 42, 200, 7, 64, 65, 66]
    assert sess.generate(prompt, 8, stop_at_eos=False).tokens == ref.generate(prompt, 8, stop_at_eos=False).tokens
