"""Teachers: MiniLM (offline), local Hugging Face folders, modules, the shipped decoder, HGNN."""

from __future__ import annotations

import hashlib
import json
import os
import time

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from edgesdk import models  # noqa: E402
from edgesdk.models.teachers import (DECODER_CHECKPOINT, Decoder, HFCausalLM, HFEncoder, decoder_report,  # noqa: E402
                             load_teacher, train_hgnn)
from edgesdk.models.teachers.hgnn import accuracy, hgnn_propagate  # noqa: E402


@pytest.fixture(scope="module")
def minilm():
    return load_teacher("minilm")


# --------------------------------------------------------------------------------- MiniLM

def test_minilm_loads_offline_and_embeds_meaningfully(minilm):
    assert isinstance(minilm, HFEncoder) and minilm.name == "all-MiniLM-L6-v2"
    assert minilm.dim == 384 and minilm.normalize and minilm.pooling == "mean" and not minilm.training
    texts = ["Return the sum of two numbers.", "Add a and b and give back the result.",
             "The weather in the mountains was cold and windy."]
    e = minilm.encode(texts, batch_size=2)
    assert e.shape == (3, 384) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2, sim
    # forward (differentiable path) agrees with encode
    batch = minilm.tokenize(texts)
    assert torch.allclose(minilm(**batch), e, atol=1e-5)


def test_minilm_internals(minilm):
    impl = minilm.model.config._attn_implementation
    out = minilm.internals(["parse the configuration file", "open a socket"])
    T = out["attention_mask"].shape[1]
    assert len(out["hidden_states"]) == 7 and out["hidden_states"][-1].shape == (2, T, 384)
    assert len(out["attentions"]) == 6 and out["attentions"][0].shape == (2, 12, T, T)
    assert torch.allclose(out["attentions"][0].sum(-1), torch.ones(2, 12, T), atol=1e-4)
    assert len(out["values"]) == 6 and out["values"][0].shape == (2, 12, T, 32)
    assert torch.allclose(out["embedding"], minilm.encode(["parse the configuration file", "open a socket"]),
                          atol=1e-5)
    assert minilm.model.config._attn_implementation == impl, "attention implementation restored"


def test_sentence_dataset(minilm):
    from edgesdk.models.data.sentences import sentence_dataset

    ds = sentence_dataset(limit=40, encoder=minilm, batch_size=16)
    assert len(ds.texts) == 40 and ds.embeddings.shape == (40, 384)
    assert set(ds.sources) == {"docstring", "comment"}
    idx = torch.cat(list(ds.splits.values()))
    assert idx.numel() == 40 and idx.unique().numel() == 40
    assert len(ds.subset("train").texts) == ds.splits["train"].numel()


# --------------------------------------------------------------------------------- local HF folders

def test_local_hf_encoder_and_causal_lm_folders(tmp_path, minilm):
    import transformers as tf

    torch.manual_seed(0)
    enc_dir, lm_dir = tmp_path / "tiny-bert", tmp_path / "tiny-gpt2"
    small = dict(num_hidden_layers=1, num_attention_heads=2, hidden_size=16, intermediate_size=32)
    tf.BertModel(tf.BertConfig(vocab_size=minilm.tokenizer.vocab_size, **small)).save_pretrained(enc_dir)
    minilm.tokenizer.save_pretrained(enc_dir)
    gpt = tf.GPT2Config(vocab_size=minilm.tokenizer.vocab_size, n_layer=1, n_head=2, n_embd=16, n_positions=64)
    tf.GPT2LMHeadModel(gpt).save_pretrained(lm_dir)
    minilm.tokenizer.save_pretrained(lm_dir)

    enc = load_teacher(str(enc_dir))
    assert isinstance(enc, HFEncoder) and not enc.normalize and enc.pooling == "mean"
    assert enc.encode(["hello world", "a b"]).shape == (2, 16)
    lm = load_teacher(lm_dir)
    assert isinstance(lm, HFCausalLM)
    ids = lm.tokenizer(["hello world"], return_tensors="pt")["input_ids"]
    assert lm(ids).shape == (1, ids.shape[1], minilm.tokenizer.vocab_size)


def test_load_teacher_errors_and_modules(tmp_path):
    (tmp_path / "notes.txt").write_text("not a model")
    with pytest.raises(ValueError, match="not a Hugging Face model directory.*config.json"):
        load_teacher(tmp_path)
    with pytest.raises(ValueError, match="is not a directory"):
        load_teacher(str(tmp_path / "missing" / "dir"))
    with pytest.raises(ValueError, match="Unknown teacher 'gpt5'. Available: 'minilm', 'decoder'"):
        load_teacher("gpt5")
    m = nn.Linear(3, 4)
    assert load_teacher(m) is m


# --------------------------------------------------------------------------------- decoder

@pytest.fixture(scope="module")
def decoder():
    return load_teacher("decoder")


def test_decoder_checkpoint_is_small_safetensors(decoder):
    assert isinstance(decoder, Decoder) and not decoder.training
    assert DECODER_CHECKPOINT.stat().st_size < 5_000_000
    with open(DECODER_CHECKPOINT, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
        assert json.loads(f.read(header_len))  # a safetensors header, not a pickle
    rep = decoder_report()
    assert hashlib.sha256(DECODER_CHECKPOINT.read_bytes()).hexdigest() == rep["checkpoint_sha256"]
    assert rep["config"] == decoder.cfg.to_dict() and rep["params"] == decoder.num_params()
    assert 500_000 < rep["params"] < 3_000_000
    assert rep["val_bits_per_char"] < rep["unigram_val_bits_per_char"] - 1.0, "must clearly beat a unigram model"
    assert decoder.lm_head.weight.data_ptr() == decoder.wte.weight.data_ptr(), "embeddings stay tied"


def test_decoder_val_bits_per_char_matches_report(decoder):
    from edgesdk.models.teachers.train_decoder import bits_per_char, corpus_bytes, eval_windows

    rep = decoder_report()
    val, sha = corpus_bytes("val")
    starts = eval_windows(len(val), rep["check"]["of"], decoder.cfg.context)[: rep["check"]["windows"]]
    bpc = bits_per_char(decoder, val, starts)
    # same corpus (same Python): same numbers up to float noise; another patch version's
    # stdlib differs slightly, so only roughly
    tol = 0.01 if sha == rep["corpus"]["val_sha256"] else 0.3
    assert bpc == pytest.approx(rep["check"]["val_bits_per_char"], abs=tol)
    assert bpc < rep["unigram_val_bits_per_char"] - 0.5


def test_decoder_attention_and_registry(decoder):
    tokens = torch.tensor([list(b"def add(a, b):\n    return a + b\n")])
    logits, attn = decoder(tokens, return_attn=True)
    T = tokens.shape[1]
    assert torch.equal(logits, decoder(tokens)) and logits.shape == (1, T, 260)
    assert len(attn) == decoder.cfg.n_layers and attn[0].shape == (1, decoder.cfg.n_heads, T, T)
    assert torch.allclose(attn[0].sum(-1), torch.ones(1, decoder.cfg.n_heads, T), atol=1e-5)
    assert (attn[0].triu(1) == 0).all(), "causal"
    assert len(decoder.hidden_states(tokens)) == decoder.cfg.n_layers + 1
    # prediction at t depends only on tokens <= t
    changed = tokens.clone()
    changed[0, -1] = ord("x")
    assert torch.allclose(decoder(changed)[0, :-1], logits[0, :-1], atol=1e-5)
    assert "decoder" in models.list()
    fresh = models.create("decoder", d_model=64, n_layers=2)
    assert isinstance(fresh, Decoder) and fresh(*fresh.example_inputs(2)).shape[-1] == 260
    with pytest.raises(ValueError, match="divisible"):
        models.create("decoder", d_model=65, n_heads=4)


def test_decoder_exports(decoder):
    (tokens,) = decoder.example_inputs(1, 32)
    ep = torch.export.export(decoder, (tokens,))
    assert torch.allclose(ep.module()(tokens), decoder(tokens), atol=1e-5)


# --------------------------------------------------------------------------------- HGNN

def test_hgnn_propagation_matches_dense_formula():
    H = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], dtype=torch.float32)
    x = torch.randn(5, 3)
    w = torch.tensor([1.0, 2.0, 0.5])
    dv = H @ w
    dvis = torch.where(dv > 0, dv.rsqrt(), torch.zeros_like(dv))
    ref = torch.diag(dvis) @ H @ torch.diag(w / H.sum(0)) @ H.T @ torch.diag(dvis) @ x
    assert torch.allclose(hgnn_propagate(x, H, w), ref, atol=1e-6)
    assert torch.allclose(hgnn_propagate(x, H.to_sparse(), w), ref, atol=1e-6)
    assert torch.equal(hgnn_propagate(x, H, w)[4], torch.zeros(3)), "an isolated node gets zero, not nan"


def test_hgnn_trains_fast_on_digits():
    from edgesdk.models.data.hypergraph import digits_hypergraph

    hg = digits_hypergraph()
    t0 = time.perf_counter()
    model = train_hgnn(hg, epochs=100, seed=0)
    elapsed = time.perf_counter() - t0
    acc = accuracy(model, hg, "test")
    assert acc > 0.8, acc
    print(f"HGNN: 100 epochs in {elapsed:.1f}s, test accuracy {acc:.3f}")  # a few seconds on 2 idle cores
    a, b = train_hgnn(hg, epochs=10, seed=1), train_hgnn(hg, epochs=10, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), "deterministic given the seed"
    inductive = train_hgnn(hg, epochs=100, seed=0, inductive=True)
    assert accuracy(inductive, hg, "test_inductive") > 0.8


def test_checkpoint_json_is_reproducible_metadata():
    rep = decoder_report()
    for key in ("config", "steps", "seed", "train_bits_per_char", "val_bits_per_char", "python", "corpus"):
        assert key in rep
    assert len(rep["corpus"]["train_sha256"]) == 64 and rep["threads"] >= 1
