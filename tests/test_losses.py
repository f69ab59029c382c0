"""Distillation losses (models.distill.losses) and feature hooks (models.distill.hooks).

Registry-wide tests parametrize over list_losses(), so a newly registered loss is checked for a
finite scalar, gradients (student yes, teacher no) and its value at student == teacher without
new test code. Each loss also has a value test against numbers computed by hand with `math`.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from edgesdk.models.distill import losses as L
from edgesdk.models.distill.hooks import AttentionHooks, FeatureHooks, capture_attention, split_heads
from edgesdk.models.distill.losses import entropic_ot, get_loss, get_loss_class, list_losses, register_loss

ALL = list_losses()
REQUIRED = ["kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "taid", "minilm", "hidden_mse",
            "hidden_cosine", "sinkhorn_kd", "feature_ot", "mse", "ce"]


def example(name: str, matched: bool = False):
    """(kwargs, student, teacher, batch) for a registered loss; plain nn.Module losses get logits."""
    cls = get_loss_class(name)
    make = getattr(cls, "example_inputs", L.DistillLoss.example_inputs)
    return make(matched=matched)


def tensors(d: dict | None):
    return [v for v in (d or {}).values() if torch.is_tensor(v) and v.is_floating_point()]


# ---------------------------------------------------------------- plain-math references

def softmax(z):
    m = max(z)
    e = [math.exp(x - m) for x in z]
    return [x / sum(e) for x in e]


def kl(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


def logits_of(p):
    return torch.tensor([[math.log(x) for x in p]], dtype=torch.float64)  # (1, V)


P, Q = [0.8, 0.2], [0.6, 0.4]  # teacher, student


def run(name, s_logits, t_logits, batch=None, **kw):
    return get_loss(name, **kw)({"logits": s_logits}, {"logits": t_logits}, batch).item()


# ---------------------------------------------------------------- registry

def test_required_losses_registered():
    assert set(REQUIRED) <= set(ALL), set(REQUIRED) - set(ALL)
    assert ALL == sorted(ALL)


def test_duplicate_name_rejected_same_class_idempotent():
    with pytest.raises(ValueError, match="already registered"):
        @register_loss("kl")
        class Other(nn.Module):
            def forward(self, student, teacher, batch=None):
                return torch.zeros(())
    assert register_loss("kl")(L.KLLoss) is L.KLLoss
    assert get_loss_class("kl") is L.KLLoss


def test_register_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        register_loss("not_a_module")(object)
    assert "not_a_module" not in list_losses()


def test_unknown_name_lists_available():
    for exc in (KeyError, ValueError):
        with pytest.raises(exc) as e:
            get_loss("kld")
        assert "Unknown loss 'kld'" in str(e.value) and "kl, " in str(e.value) and "taid" in str(e.value)


def test_bad_kwarg_lists_accepted():
    with pytest.raises(TypeError, match="accepts: key, mask_key, temperature"):
        get_loss("kl", temp=2.0)


def test_bad_hyperparameters_rejected():
    for name, kw in [("kl", {"temperature": 0}), ("skew_kl", {"skew": 1.0}), ("taid", {"t_start": 1.0}),
                     ("feature_ot", {"cost": "l1"}), ("feature_ot", {"epsilon": 0.0}), ("feature_ot", {"tol": 0}),
                     ("sinkhorn_kd", {"epsilon": 0.0}), ("sinkhorn_kd", {"n_iter": 0}), ("js", {"lam": 1.0}),
                     ("minilm", {"reduction": "sum"}), ("kl", {"value": "ce"}),
                     ("hidden_mse", {"student_dim": 4}), ("hidden_mse", {"student_dim": 4, "teacher_dim": 6,
                                                                           "projector": False})]:
        with pytest.raises(ValueError):
            get_loss(name, **kw)


def test_distill_package_imports_nothing_else_of_the_sdk():
    repo = Path(__file__).resolve().parents[1]
    ours = {d.name for d in repo.iterdir() if (d / "__init__.py").exists()} - {"models"}
    for f in (repo / "models" / "distill").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            for m in mods:
                assert m.split(".")[0] not in ours, f"models/distill/{f.name} imports {m}"


# ---------------------------------------------------------------- every registered loss

@pytest.mark.parametrize("name", ALL)
def test_finite_scalar(name):
    kw, s, t, b = example(name)
    out = get_loss(name, **kw)(s, t, b)
    assert out.dim() == 0 and torch.isfinite(out)


@pytest.mark.parametrize("name", ALL)
def test_gradient_reaches_student_not_teacher(name):
    kw, s, t, b = example(name)
    for x in tensors(s) + tensors(t):
        x.requires_grad_(True)
    get_loss(name, **kw)(s, t, b).backward()
    for k, x in s.items():
        assert x.grad is not None, f"no gradient for student[{k!r}]"
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    for k, x in t.items():
        assert x.grad is None, f"gradient leaked into teacher[{k!r}]"


@pytest.mark.parametrize("name", ALL)
def test_value_at_match(name):
    kw, s, t, b = example(name, matched=True)
    loss = get_loss(name, **kw)
    at = getattr(type(loss), "at_match", None)
    if at is None:
        pytest.skip(f"{name}: no relation at student == teacher")
    v = loss(s, t, b).item()
    if at == "zero":
        assert abs(v) < 1e-5, v
    else:  # "min": smaller than against a different teacher
        other = {k: x + 0.5 * torch.randn_like(x) for k, x in s.items()}
        assert 0 <= v < get_loss(name, **kw)(s, other, b).item()


@pytest.mark.parametrize("name", ALL)
def test_bfloat16_inputs(name):
    kw, s, t, b = example(name)
    cast = lambda d: {k: x.to(torch.bfloat16) if x.is_floating_point() else x for k, x in d.items()}
    loss = get_loss(name, **kw)
    out = loss(cast(s), cast(t), b)
    assert out.dtype == torch.float32 and torch.isfinite(out)
    assert out.item() == pytest.approx(loss(s, t, b).item(), rel=0.05, abs=0.05)


@pytest.mark.parametrize("name", ALL)
def test_state_dict_is_tensor_only(name):
    kw, *_ = example(name)
    loss = get_loss(name, **kw)
    assert all(torch.is_tensor(v) for v in loss.state_dict().values())  # safetensors checkpoints


@pytest.mark.parametrize("name", ALL)
def test_missing_key_message(name):
    kw, s, t, b = example(name)
    with pytest.raises(KeyError, match="pass .*=\\.\\.\\. to read another key"):
        get_loss(name, **kw)({"nothing": torch.zeros(1)}, t, b)


# ---------------------------------------------------------------- hand-computed values

def test_kl_value():
    assert run("kl", logits_of(Q), logits_of(P)) == pytest.approx(kl(P, Q), rel=1e-9)
    # 0.8·ln(0.8/0.6) + 0.2·ln(0.2/0.4) = 0.0915510...
    assert kl(P, Q) == pytest.approx(0.8 * math.log(4 / 3) + 0.2 * math.log(0.5))


def test_kl_temperature_scaled_by_T2():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    p = [math.e / (1 + math.e), 1 / (1 + math.e)]  # softmax([2, 0] / 2)
    assert run("kl", s, t, temperature=2.0) == pytest.approx(4 * kl(p, [0.5, 0.5]), rel=1e-5)


def test_reverse_kl_value():
    assert run("reverse_kl", logits_of(Q), logits_of(P)) == pytest.approx(kl(Q, P), rel=1e-9)


def test_js_value():
    m = [0.7, 0.3]
    expected = 0.5 * kl(P, m) + 0.5 * kl(Q, m)
    assert run("js", logits_of(Q), logits_of(P)) == pytest.approx(expected, rel=1e-9)
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2.0, 0.0]])
    p = [math.e / (1 + math.e), 1 / (1 + math.e)]
    mix = [(p[0] + 0.5) / 2, (p[1] + 0.5) / 2]
    assert run("js", s, t, temperature=2.0) == pytest.approx(
        4 * (0.5 * kl(p, mix) + 0.5 * kl([0.5, 0.5], mix)), rel=1e-5)


def test_skew_kl_value():
    m = [0.1 * 0.8 + 0.9 * 0.6, 0.1 * 0.2 + 0.9 * 0.4]  # [0.62, 0.38]
    assert run("skew_kl", logits_of(Q), logits_of(P)) == pytest.approx(kl(P, m), rel=1e-9)
    m3 = [0.3 * 0.8 + 0.7 * 0.6, 0.3 * 0.2 + 0.7 * 0.4]
    assert run("skew_kl", logits_of(Q), logits_of(P), skew=0.3) == pytest.approx(kl(P, m3), rel=1e-9)
    assert run("skew_kl", logits_of(Q), logits_of(P), skew=0.0) == pytest.approx(kl(P, Q), rel=1e-9)


def test_skew_reverse_kl_value():
    m = [0.1 * 0.6 + 0.9 * 0.8, 0.1 * 0.4 + 0.9 * 0.2]  # [0.78, 0.22]
    assert run("skew_reverse_kl", logits_of(Q), logits_of(P)) == pytest.approx(kl(Q, m), rel=1e-9)


def test_taid_value_at_t_start():
    # z_s = [0, 0], z_T = ln P; t = 0.4: p_t ∝ exp(0.4·ln P) = P^0.4
    w = [0.8 ** 0.4, 0.2 ** 0.4]
    p_t = [x / sum(w) for x in w]
    s = torch.zeros(1, 2, dtype=torch.float64)
    assert run("taid", s, logits_of(P)) == pytest.approx(kl(p_t, [0.5, 0.5]), rel=1e-9)


def test_minilm_value():
    a_s = [[0.5, 0.5], [0.9, 0.1]]
    a_t = [[0.7, 0.3], [0.2, 0.8]]
    v_s = [[1.0], [2.0]]                       # d_head 1: scores V·Vᵀ / 1 = [[1, 2], [2, 4]]
    v_t = [[1.0, 0, 0, 0], [0, 2.0, 0, 0]]     # d_head 4: V·Vᵀ / 2 = [[0.5, 0], [0, 2]]
    vr_s = [softmax([1, 2]), softmax([2, 4])]
    vr_t = [softmax([0.5, 0]), softmax([0, 2])]
    expected = (kl(a_t[0], a_s[0]) + kl(a_t[1], a_s[1])) / 2 + (kl(vr_t[0], vr_s[0]) + kl(vr_t[1], vr_s[1])) / 2
    T = lambda x: torch.tensor(x, dtype=torch.float64)[None, None]  # (1, 1, T, ·)
    got = get_loss("minilm")({"attn": T(a_s), "values": T(v_s)}, {"attn": T(a_t), "values": T(v_t)})
    assert got.item() == pytest.approx(expected, rel=1e-9)
    got_w = get_loss("minilm", value_weight=0.0)({"attn": T(a_s), "values": T(v_s)},
                                                 {"attn": T(a_t), "values": T(v_t)})
    assert got_w.item() == pytest.approx((kl(a_t[0], a_s[0]) + kl(a_t[1], a_s[1])) / 2, rel=1e-9)


def _projected_pair(name):
    loss = get_loss(name, student_dim=1, teacher_dim=2)
    with torch.no_grad():
        loss.projector.weight.copy_(torch.tensor([[2.0], [-1.0]]))
        loss.projector.bias.copy_(torch.tensor([0.5, 0.0]))
    h_s = torch.tensor([[1.0], [3.0]])              # projected: [2.5, -1], [6.5, -3]
    h_t = torch.tensor([[2.0, 0.0], [5.0, -2.0]])
    return loss({"hidden": h_s}, {"hidden": h_t}).item()


def test_hidden_mse_value():
    expected = (((2.5 - 2) ** 2 + 1) / 2 + ((6.5 - 5) ** 2 + 1) / 2) / 2  # (0.625 + 1.625) / 2
    assert _projected_pair("hidden_mse") == pytest.approx(expected, rel=1e-6)


def test_hidden_cosine_value():
    c1 = (2.5 * 2) / (math.hypot(2.5, 1) * 2)
    c2 = (6.5 * 5 + 3 * 2) / (math.hypot(6.5, 3) * math.hypot(5, 2))
    assert _projected_pair("hidden_cosine") == pytest.approx(((1 - c1) + (1 - c2)) / 2, rel=1e-6)


def test_hidden_projector_is_a_parameter_and_needed():
    loss = get_loss("hidden_mse", student_dim=4, teacher_dim=6)
    assert {n for n, _ in loss.named_parameters()} == {"projector.weight", "projector.bias"}
    assert get_loss("hidden_mse", student_dim=4, teacher_dim=4).projector is None
    ident = get_loss("hidden_mse", student_dim=4, teacher_dim=4, projector=True)
    h = torch.randn(3, 4)
    assert ident({"hidden": h}, {"hidden": h}).item() == pytest.approx(0.0, abs=1e-12)  # identity init
    with pytest.raises(ValueError, match=r"student_dim=4, teacher_dim=6\) and pass loss.parameters\(\)"):
        get_loss("hidden_mse")({"hidden": torch.randn(2, 4)}, {"hidden": torch.randn(2, 6)})
    with pytest.raises(ValueError, match="built for student_dim=4"):
        loss({"hidden": torch.randn(2, 5)}, {"hidden": torch.randn(2, 6)})


def _entropic_2x2(c11, c12, c21, c22, eps):
    """Entropic OT of a 2×2 cost with uniform marginals, by hand: the plan is [[x, ½−x], [½−x, x]]
    with x² / (½−x)² = exp(−(c11 + c22 − c12 − c21)/ε); value ⟨P, C⟩ + ε Σ P log(P / ¼)."""
    r = math.exp(-(c11 + c22 - c12 - c21) / (2 * eps))   # x / (½ − x)
    x = r / (2 * (1 + r))
    plan = [x, 0.5 - x, 0.5 - x, x]
    cost = [c11, c12, c21, c22]
    return sum(p * c for p, c in zip(plan, cost)) + eps * sum(p * math.log(4 * p) for p in plan)


def test_feature_ot_value_cosine():
    e = torch.eye(2, dtype=torch.float64)  # C = [[0, 1], [1, 0]]
    got = get_loss("feature_ot", tol=1e-12)({"hidden": e}, {"hidden": e.clone()}).item()
    assert got == pytest.approx(_entropic_2x2(0, 1, 1, 0, 0.1), rel=1e-9)


def test_feature_ot_value_sqeuclidean():
    s, t = [0.0, 1.0], [0.5, 2.0]
    C = [[(a - b) ** 2 for b in t] for a in s]  # [[0.25, 4], [0.25, 1]]
    loss = get_loss("feature_ot", cost="sqeuclidean", epsilon=1.0, tol=1e-12)
    got = loss({"hidden": torch.tensor(s, dtype=torch.float64)[:, None]},
               {"hidden": torch.tensor(t, dtype=torch.float64)[:, None]}).item()
    assert got == pytest.approx(_entropic_2x2(C[0][0], C[0][1], C[1][0], C[1][1], 1.0), rel=1e-9)


def test_entropic_ot_converges_and_stays_stable():
    g = torch.Generator().manual_seed(0)
    c = torch.rand(5, 7, generator=g, dtype=torch.float64)
    plan, kl, iters, err = entropic_ot(c, epsilon=0.1, tol=1e-9)
    assert err <= 1e-9 and 1 < iters < 2000 and kl.item() >= 0
    assert torch.allclose(plan.sum(0), torch.full((7,), 1 / 7, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(plan.sum(1), torch.full((5,), 1 / 5, dtype=torch.float64), atol=1e-9)
    # C/ε up to 5000: exp(-C/ε) underflows in the plain domain; the log domain stays finite
    hard, _, _, _ = entropic_ot(c.float() * 50, epsilon=0.01, tol=1e-4, max_iter=50)
    assert torch.isfinite(hard).all() and hard.sum().item() == pytest.approx(1.0, rel=1e-4)


def test_mse_value():
    s, t = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.0, 2.0, 5.0]])
    assert run("mse", s, t) == pytest.approx((1 + 0 + 4) / 3)


def test_ce_value_and_ignore_index():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    lse = math.log(math.exp(2) + 1 + math.exp(-1))
    ce0, ce1 = lse - 2, math.log(3)
    assert get_loss("ce")({"logits": z}, {}, {"labels": torch.tensor([0, -100])}).item() == pytest.approx(ce0)
    assert get_loss("ce")({"logits": z}, {}, {"labels": torch.tensor([0, 2])}).item() == pytest.approx((ce0 + ce1) / 2)
    zs = z.clone().requires_grad_(True)
    none = get_loss("ce")({"logits": zs}, {}, {"labels": torch.tensor([-100, -100])})
    none.backward()
    assert none.item() == 0.0 and torch.isfinite(zs.grad).all()
    with pytest.raises(KeyError, match="labels"):
        get_loss("ce")({"logits": z}, {}, None)


# ---------------------------------------------------------------- masks

LOGIT_LOSSES = [n for n in ALL if "logits" in example(n)[1]]


@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_mask_selects_positions(name):
    kw, s, t, b = example(name)
    s, t = s["logits"], t["logits"]  # (B, T, V)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    extra = dict(b or {})
    loss = get_loss(name, **kw)
    got = loss({"logits": s}, {"logits": t}, {**extra, "mask": mask})
    sub = {k: v[mask] for k, v in extra.items()}
    want = loss({"logits": s[mask]}, {"logits": t[mask]}, sub or None)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # masked-out positions may hold garbage without affecting the value or the gradients
    s2, t2 = s.clone(), t.clone()
    s2[~mask], t2[~mask] = float("nan"), float("inf")
    s2.requires_grad_(True)
    got2 = loss({"logits": s2}, {"logits": t2}, {**extra, "mask": mask})
    got2.backward()
    assert got2.item() == pytest.approx(got.item(), rel=1e-6)
    assert torch.isfinite(s2.grad).all() and (s2.grad[~mask] == 0).all()
    # all masked out -> 0, finite
    zero = loss({"logits": s}, {"logits": t}, {**extra, "mask": torch.zeros(2, 3, dtype=torch.bool)})
    assert zero.item() == 0.0
    # no mask -> every position; mask_key=None ignores batch["mask"]
    full = loss({"logits": s}, {"logits": t}, b).item()
    ignore = get_loss(name, mask_key=None, **kw)({"logits": s}, {"logits": t}, {**extra, "mask": mask}).item()
    assert ignore == pytest.approx(full)
    with pytest.raises(ValueError, match=r"expected \(2, 3\)"):
        loss({"logits": s}, {"logits": t}, {**extra, "mask": torch.ones(2, 4)})


def test_mask_float_01_and_custom_key():
    _, s, t, _ = example("kl")
    m = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    a = get_loss("kl")(s, t, {"mask": m}).item()
    b = get_loss("kl", mask_key="attention_mask")(s, t, {"attention_mask": m.bool()}).item()
    assert a == pytest.approx(b)


def test_hidden_and_feature_ot_masks():
    h_s, h_t = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, True, False], [False, True, True]])
    for name in ("hidden_mse", "hidden_cosine", "feature_ot"):
        loss = get_loss(name)
        got = loss({"hidden": h_s}, {"hidden": h_t}, {"mask": mask}).item()
        want = loss({"hidden": h_s[mask]}, {"hidden": h_t[mask]}).item()
        assert got == pytest.approx(want, rel=1e-5), name


def test_minilm_mask_excludes_padding():
    torch.manual_seed(0)
    B, H, T = 1, 2, 4
    mask = torch.tensor([[True, True, True, False]])
    def side(d):
        scores = torch.randn(B, H, T, T).masked_fill(~mask[:, None, None, :], float("-inf"))
        return {"attn": torch.softmax(scores, -1), "values": torch.randn(B, H, T, d)}
    s, t = side(3), side(5)
    loss = get_loss("minilm")
    got = loss(s, t, {"mask": mask}).item()
    cut = lambda d: {"attn": d["attn"][..., :3, :3], "values": d["values"][..., :3, :]}
    assert got == pytest.approx(loss(cut(s), cut(t)).item(), rel=1e-5)  # padding = truncation


def test_minilm_head_count_mismatch():
    a = lambda h: torch.softmax(torch.randn(1, h, 3, 3), -1)
    with pytest.raises(ValueError, match="2 attention heads and teacher 4"):
        get_loss("minilm")({"attn": a(2), "values": torch.randn(1, 2, 3, 4)},
                           {"attn": a(4), "values": torch.randn(1, 4, 3, 4)})


# ---------------------------------------------------------------- numerical stability

@pytest.mark.parametrize("name", LOGIT_LOSSES)
def test_extreme_logits_finite(name):
    kw, s, t, b = example(name)
    s = {"logits": (s["logits"] * 5e3).requires_grad_(True)}
    t = {"logits": t["logits"] * 5e3}
    out = get_loss(name, **kw)(s, t, b)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s["logits"].grad).all()


@pytest.mark.parametrize("name", ["kl", "js", "skew_kl", "skew_reverse_kl", "taid"])
def test_minus_inf_teacher_logits_finite(name):
    s = torch.randn(2, 5, requires_grad=True)
    t = torch.randn(2, 5)
    t[:, 0] = float("-inf")  # a vocabulary entry the teacher can never produce
    out = get_loss(name)({"logits": s}, {"logits": t})
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(s.grad).all()


def test_js_is_bounded():
    s, t = torch.tensor([[50.0, -50.0]]), torch.tensor([[-50.0, 50.0]])
    assert run("js", s, t) == pytest.approx(math.log(2), rel=1e-6)


# ---------------------------------------------------------------- TAID schedule

def test_taid_schedule_hand_stepped():
    taid = get_loss("taid", alpha=0.5, beta=0.9)
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert taid.t == 0.4
    assert taid.update(0.00, 1.0) == 0.4                         # first call: remember J only
    m = 0.9 * 0 + 0.1 * (1.0 - 0.8) / 1.0                        # δ = 0.2
    t = max(0.4 + 0.6 * 0.01, 0.4 + 0.5 * sig(m) * (1 - 0.4))
    assert taid.update(0.01, 0.8) == pytest.approx(t, rel=1e-12)
    m = 0.9 * m + 0.1 * (0.8 - 0.7) / 0.8                        # δ = 0.125
    t = max(0.4 + 0.6 * 0.02, t + 0.5 * sig(m) * (1 - t))
    assert taid.update(0.02, 0.7) == pytest.approx(t, rel=1e-12)
    m = 0.9 * m + 0.1 * (0.7 - 0.75) / 0.7                       # loss went up: δ < 0
    t = min(1.0, max(0.4 + 0.6 * 0.03, t + 0.5 * sig(m) * (1 - t)))
    assert taid.update(0.03, 0.75) == pytest.approx(t, rel=1e-12)
    assert taid.momentum == pytest.approx(m, rel=1e-12)


def test_taid_defaults_follow_linear_floor():
    taid = get_loss("taid")
    assert (taid.t_start, taid.t_end, taid.alpha, taid.beta) == (0.4, 1.0, 5e-4, 0.99)
    taid.update(0.0, 2.0)
    # α = 5e-4 moves t by at most 3e-4 a step, so the linear schedule dominates
    assert taid.update(0.5, 1.0) == pytest.approx(0.7)
    assert taid.update(0.5001, 0.9) > 0.7  # adaptive step beats the floor when progress stalls


def test_taid_monotone_and_reaches_t_end():
    g = torch.Generator().manual_seed(0)
    taid = get_loss("taid", alpha=0.05)
    ts, n = [], 200
    for i in range(n + 1):
        ts.append(taid.update(i / n, float(torch.rand((), generator=g)) + 0.1))
    assert all(b >= a for a, b in zip(ts, ts[1:]))
    assert ts[-1] == 1.0 and max(ts) <= 1.0
    assert taid.update(0.1, 0.5) == 1.0  # progress going backwards never lowers t
    lin = get_loss("taid", adaptive=False)
    assert [lin.update(p, 1.0) for p in (0.0, 0.25, 1.0)] == pytest.approx([0.4, 0.55, 1.0])


def test_taid_uses_current_t_and_last_loss():
    taid = get_loss("taid", adaptive=False)
    s, t = torch.randn(3, 6), torch.randn(3, 6)
    with pytest.raises(ValueError, match="forward call first"):
        taid.update(0.1)
    loss = taid({"logits": s}, {"logits": t})
    assert taid.update(1.0) == 1.0  # loss_value defaults to the last forward's
    # at t = 1 the target is the teacher: TAID == forward KL
    assert taid({"logits": s}, {"logits": t}).item() == pytest.approx(
        get_loss("kl")({"logits": s}, {"logits": t}).item(), rel=1e-6)
    assert loss.item() > 0


def test_taid_nonfinite_loss_skips_momentum_and_state_roundtrip():
    taid = get_loss("taid", alpha=0.5)
    taid.update(0.0, 1.0)
    taid.update(0.1, 0.5)
    m = taid.momentum
    t = taid.update(0.1, float("nan"))
    assert taid.momentum == m and math.isfinite(t)
    assert taid.state_dict() == {}  # tensor-only state_dict; the schedule travels as JSON
    fresh = get_loss("taid", alpha=0.5)
    fresh.load_extra_state(json.loads(json.dumps(taid.extra_state())))
    assert (fresh.t, fresh.momentum) == (taid.t, taid.momentum)
    assert fresh.update(0.2, 0.4) == taid.update(0.2, 0.4)


# ---------------------------------------------------------------- feature hooks

class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8))
        self.head = nn.Linear(8, 3)

    def forward(self, x):  # (B, 4) -> ((B, 3), (B, 8))
        h = self.body(x)
        return self.head(h), h


def test_hooks_capture_sequential():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(3, 4)
    with FeatureHooks(model, ["0", "1"]) as hooks:
        y = model(x)
    assert torch.equal(hooks.features["0"], model[0](x))
    assert torch.equal(hooks.features["1"], torch.relu(model[0](x)))
    assert torch.equal(y, model[2](hooks.features["1"]))


def test_hooks_dict_tuple_output_and_select():
    model = Block()
    x = torch.randn(2, 4)
    with FeatureHooks(model, {"body.1": "act", "": "root"}) as hooks:
        logits, h = model(x)
    assert torch.equal(hooks.features["root"], logits)  # tuple output -> first element
    assert hooks.features["act"].shape == (2, 8)
    with FeatureHooks(model, {"": "hidden"}, select=lambda out: out[1]) as hooks:
        _, h = model(x)
    assert torch.equal(hooks.features["hidden"], h)
    with FeatureHooks(model, ["body.0", "body.2"], select={"body.2": lambda out: out * 0}) as hooks:
        model(x)
    assert hooks.features["body.2"].abs().sum() == 0 and hooks.features["body.0"].abs().sum() > 0


def test_hooks_bad_name_lists_candidates():
    with pytest.raises(ValueError) as e:
        FeatureHooks(Block(), ["body.3", "bdy.0"])
    msg = str(e.value)
    assert "'body.3'" in msg and "'bdy.0'" in msg and "similar: 'body.0'" in msg and "'head'" in msg
    with pytest.raises(ValueError, match="used by more than one module"):
        FeatureHooks(Block(), {"body.0": "x", "head": "x"})


def test_hooks_removed():
    model = Block()
    hooks = FeatureHooks(model, ["body.0", "head"])
    model(torch.randn(1, 4))
    assert set(hooks.features) == {"body.0", "head"}
    hooks.remove()
    hooks.remove()  # idempotent
    hooks.clear()
    model(torch.randn(1, 4))
    assert hooks.features == {} and not hooks.active
    assert all(not m._forward_hooks for m in model.modules())
    with FeatureHooks(model, ["head"]):
        pass
    assert all(not m._forward_hooks for m in model.modules())


def test_hooks_teacher_no_grad_student_with_grad():
    teacher, student = Block(), Block()
    x = torch.randn(2, 4)
    th, sh = FeatureHooks(teacher, {"body": "hidden"}), FeatureHooks(student, {"body": "hidden"})
    with torch.no_grad():
        teacher(x)
    student(x)
    assert not th.features["hidden"].requires_grad and sh.features["hidden"].requires_grad
    loss = get_loss("hidden_mse")(sh.features, th.features)
    loss.backward()
    assert student.body[0].weight.grad is not None and teacher.body[0].weight.grad is None
    th.remove(), sh.remove()


def test_capture_attention_eval_no_grad():
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16, batch_first=True, dropout=0.0).eval()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        ref_out = layer(x)
        want = layer.self_attn(x, x, x, need_weights=True, average_attn_weights=False)[1]
        with capture_attention(layer, {"self_attn": "attn"}) as hooks:
            out = layer(x)
    attn = hooks.features["attn"]
    assert attn.shape == (2, 2, 5, 5)  # (B, H, T, T)
    assert torch.allclose(attn, want, atol=1e-6) and torch.allclose(attn.sum(-1), torch.ones(2, 2, 5))
    assert torch.allclose(out, ref_out, atol=1e-5)  # the layer's output is unchanged
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in layer.modules())
    with pytest.raises(ValueError, match="MultiheadAttention modules here: \\['self_attn'\\]"):
        AttentionHooks(layer, ["linear1"])
    assert all(not m._forward_hooks for m in layer.modules())


def test_split_heads():
    x = torch.arange(2 * 3 * 6.0).reshape(2, 3, 6)
    y = split_heads(x, 2)
    assert y.shape == (2, 2, 3, 3) and torch.equal(y[:, 1], x[..., 3:])
    with pytest.raises(ValueError, match="not divisible"):
        split_heads(x, 4)
