"""executorch-xnnpack int8: embedding tables read int8 rows, and a head tied to one reads the same rows.

Real exports and ExecuTorch sessions on the tied-table pattern of the shipped generation students
(``lm_head.weight = wte.weight``). Why the head is not the quantizer's int8-dynamic one: on the trained
encdec student that head flipped one fp32 near-tie (a top-2 gap of 0.0128 nats) that every held-out prompt
passes through, and greedy agreement fell to 73.9%; reading the int8 rows with fp32 activations keeps
100% (converters/executorch_xnnpack.py `int8_tables`)."""

import numpy as np
import pytest
import torch
from test_onnx_weights import D, V, TiedLM  # the tied-table pattern (lm_head.weight = wte.weight)
from torch import nn

import edgesdk
from edgesdk.converters.embedding_rows import Int8RowEmbedding, Int8RowHead, int8_rows, tied_heads


def test_int8_rows_dequantize_only_the_rows_looked_up_within_half_a_step():
    emb = nn.Embedding(V, D)
    q = Int8RowEmbedding(emb)
    assert q.rows.dtype == torch.int8 and q.rows.shape == (V, D) and q.scale.shape == (V, 1)
    assert int(q.rows.abs().amax(1).min()) == 127                                     # one scale per row
    ids = torch.arange(V)[None]
    err = (q(ids) - emb(ids)).abs()[0]                                                # (V, D)
    assert 0 < err.max() and bool((err <= q.scale / 2 + 1e-7).all())


def test_a_tied_head_is_found_and_keeps_the_fp32_table_in_the_copy():
    m = TiedLM()
    assert tied_heads(m) == ["lm_head"]
    out, report = int8_rows(m)
    assert report == [{"module": "wte", "shape": [V, D], "lookup": "int8 rows, one fp32 scale per row"}]
    assert isinstance(out.wte, Int8RowEmbedding) and out.lm_head.weight.dtype == torch.float32
    assert isinstance(m.wte, nn.Embedding) and m.lm_head.weight is m.wte.weight           # the original untouched
    assert int8_rows(m, exclude=["wte"]) == (m, [])                                     # a user's float layer


def test_a_tied_head_can_read_the_int8_rows_weight_only():
    m = TiedLM().eval()
    out, report = int8_rows(m, heads="int8-rows")
    assert [r["module"] for r in report] == ["wte", "lm_head"]
    assert isinstance(out.lm_head, Int8RowHead) and out.lm_head.table is out.wte                # one table
    assert {n for n, _ in out.named_buffers()} == {"wte.rows", "wte.scale"}
    x = torch.randn(3, D)
    with torch.no_grad():
        exact = x @ (out.wte.rows.float() * out.wte.scale).T                               # weight-only int8
        assert torch.allclose(out.lm_head(x), exact, atol=1e-5)
        assert (out.lm_head(x) - m.lm_head(x)).abs().max() > 0                               # rounded, not fp32
    assert isinstance(int8_rows(m, exclude=["lm_head"], heads="int8-rows")[0].lm_head, nn.Linear)
    # model code that reads the head's weight (transformers' Mamba casts to lm_head.weight.dtype) still works
    assert out.lm_head.weight.dtype == torch.float32 and torch.equal(out.lm_head.weight, out.wte.weight)


class _Positions(nn.Embedding):
    """A learned-position table with its own forward (the pattern of OPT's and BART's)."""

    def forward(self, mask, position_ids=None):
        return super().forward(mask.cumsum(-1) - 1 if position_ids is None else position_ids)


class _ReadsWeight(nn.Module):
    """Model code that slices an embedding's ``.weight`` and reads its sizes (Whisper's encoder)."""

    def __init__(self):
        super().__init__()
        self.pos, self.tok, self.scaled = nn.Embedding(V, D), _Positions(V, D), nn.Embedding(V, D, max_norm=1.0)

    def forward(self, ids):  # (B, T) -> (B, T, D)
        assert self.pos.num_embeddings == V and self.pos.embedding_dim == D
        return self.pos.weight[: ids.shape[1]] + self.tok(torch.ones_like(ids))


def test_only_plain_lookups_are_swapped_and_weight_readers_still_work():
    m = _ReadsWeight()
    out, report = int8_rows(m)
    assert [r["module"] for r in report] == ["pos"]   # a subclass with its own forward and a max_norm table stay
    assert type(out.tok) is _Positions and type(out.scaled) is nn.Embedding
    ids = torch.zeros(2, 5, dtype=torch.long)
    err = (out(ids) - m(ids)).abs().max()
    assert 0 < err <= float(out.pos.scale.max()) / 2 + 1e-6  # the sliced table is the int8 rows, dequantized


@pytest.mark.parametrize("scheme", ["int8-dynamic", pytest.param("int4-weight", marks=pytest.mark.slow)])
def test_xnnpack_int8_pte_stores_the_tied_table_once_in_int8(scheme, tmp_path):
    from edgesdk import runtime
    model = TiedLM().eval()
    ids = torch.randint(0, V, (1, 7), generator=torch.Generator().manual_seed(1))
    fp32 = edgesdk.convert(model, (ids,), "executorch-xnnpack", out_dir=tmp_path, name="fp32")
    q = edgesdk.convert(model, (ids,), "executorch-xnnpack", quantize=scheme, out_dir=tmp_path, name="q",
                        max_drop=None)
    (d,) = q.manifest.quantization["details"].values()
    assert d["tied_heads_int8_rows"] == ["lm_head"] and d["tied_heads_kept_float"] == []
    assert d["embedding_int8_rows"][0]["shape"] == [V, D]
    # fp32 stores the table twice (the delegate's head, the portable lookup); here once, in int8 (lookup
    # and head): 0.25 tables instead of 2, whatever happens to ``mix``
    table = V * D * 4
    saved = (fp32.path / "model.pte").stat().st_size - (q.path / "model.pte").stat().st_size
    assert saved > 1.6 * table, (saved, table)
    with torch.no_grad():
        ref = model(ids).numpy()
    got = runtime.load(q.path).run([ids.numpy()])[0]
    # random N(0, 1) tables: int8 ``mix`` moves the logits by ~7% of their range (measured, int8-dynamic)
    assert np.abs(got - ref).max() < 0.15 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 6 / 7


class _BigTiedLM(TiedLM):
    """The tied-table pattern with a table over `ROW_HEAD_MAX_ELEMENTS` (1100 x 64 = 70,400 elements)."""

    def __init__(self, vocab: int = 1100):
        super().__init__()
        torch.manual_seed(0)
        self.wte = nn.Embedding(vocab, D)
        self.lm_head = nn.Linear(D, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied


def test_only_a_small_tied_table_is_read_by_its_head_a_large_one_gets_its_own_int8_head():
    from edgesdk.converters.executorch_xnnpack import ROW_HEAD_MAX_ELEMENTS, int8_tables
    from edgesdk.converters.programs import collect
    ids = torch.randint(0, V, (1, 7))
    small, big = TiedLM().eval(), _BigTiedLM().eval()
    assert V * D <= ROW_HEAD_MAX_ELEMENTS < big.wte.weight.numel()
    prog, kept = int8_tables(collect(small, (ids,))[0], [])
    assert kept["tied_heads_int8_rows"] == kept["tied_heads"] == ["lm_head"] and "tied_heads_own_int8" not in kept
    assert isinstance(prog.module.lm_head, Int8RowHead)
    prog, kept = int8_tables(collect(big, (ids,))[0], [])
    assert kept["tied_heads_own_int8"] == ["lm_head"] and kept["tied_heads"] == kept["tied_heads_int8_rows"] == []
    head = prog.module.lm_head          # an ordinary linear with its own fp32 weight, for the quantizer to take
    assert type(head) is nn.Linear and isinstance(prog.module.wte, Int8RowEmbedding)
    assert head.weight is not big.lm_head.weight and torch.equal(head.weight, big.wte.weight)
    # a head the user keeps float stays out of both
    _, kept = int8_tables(collect(big, (ids,))[0], ["lm_head"])
    assert kept["tied_heads"] == [] and "tied_heads_own_int8" not in kept


def test_xnnpack_int8_dynamic_large_tied_head_has_its_own_int8_weights(tmp_path):
    from edgesdk import runtime
    model = _BigTiedLM().eval()
    vd = model.wte.weight.numel()
    ids = torch.randint(0, 1100, (1, 7), generator=torch.Generator().manual_seed(1))
    q = edgesdk.convert(model, (ids,), "executorch-xnnpack", quantize="int8-dynamic", out_dir=tmp_path, name="q",
                        max_drop=None)
    (d,) = q.manifest.quantization["details"].values()
    assert d["tied_heads_own_int8"] == ["lm_head"] and d["tied_heads_int8_rows"] == []
    # the table in int8 twice (the lookup's rows and the head's packed weights); the row head holds it once
    size = (q.path / "model.pte").stat().st_size
    assert 1.8 * vd < size < 3 * vd, (size, vd)
    with torch.no_grad():
        ref = model(ids).numpy()
    got = runtime.load(q.path).run([ids.numpy()])[0]
    assert np.abs(got - ref).max() < 0.15 * np.abs(ref).max()
    assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 6 / 7


def test_dynamic_linears_int8_per_channel_or_int4_groups():
    from edgesdk.converters.executorch_xnnpack import dynamic_linears
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 8), nn.Linear(8, 4)).eval()
    x = torch.randn(5, 64)
    q8, done8 = dynamic_linears(m, ["3"], bits=8, group=None)
    q4, done4 = dynamic_linears(m, [], bits=4, group=32)
    assert done8 == ["0", "2"]                                     # "3" excluded by name
    assert done4 == ["0"]                                          # 48 and 8 input channels: not groups of 32
    assert type(q8[3].weight) is nn.Parameter and type(q8[0].weight) is not nn.Parameter
    with torch.no_grad():
        ref = m(x)
        assert 0 < (q8(x) - ref).abs().max() < 0.05 * ref.abs().max()   # int8 per-token: ~1% here
        assert (q4(x) - ref).abs().max() > (q8(x) - ref).abs().max()    # int4 rounds coarser


@pytest.mark.slow  # two ExecuTorch lowerings of a two-program model: ~1 min
def test_xnnpack_int8_dynamic_generation_model_is_per_token_and_tables_once(tmp_path):
    from test_mamba import small_model

    from edgesdk import runtime
    m = small_model(prompt_lengths=16)                             # its head is tied to its embedding
    fp32 = edgesdk.convert(m, None, "executorch-xnnpack", out_dir=tmp_path, name="fp32")
    q = edgesdk.convert(m, None, "executorch-xnnpack", quantize="int8-dynamic", out_dir=tmp_path, name="q",
                        max_drop=None)
    details = q.manifest.quantization["details"]
    assert set(details) == {"prefill", "step"}
    for d in details.values():
        assert d["activations"] == "int8 per-token dynamic" and d["tied_heads_int8_rows"] == ["model.lm_head"]
        assert len(d["layers_quantized"]) == 4 * m.cfg.n_layers                 # in/out projections, MLP
        assert "model.lm_head" not in d["layers_quantized"]
    saved = (fp32.path / "model.pte").stat().st_size - (q.path / "model.pte").stat().st_size
    table = m.wte.weight.numel() * 4
    assert saved > 1.5 * table, (saved, table)   # fp32: the table twice; here once, in int8 (+ int8 linears)
    assert q.verification["min_cosine"] > 0.99, q.verification
    g = runtime.load(q.path, threads=1).generate(list(range(65, 81)), 8, stop_at_eos=False)
    assert len(g.tokens) == 8
