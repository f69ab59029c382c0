"""Quantized generation models: calibration on prompts (each program on the inputs it meets while the
fp32 programs generate), mask-range activations kept in float, and the gate on held-out prompts.

The model is the shipped byte-level decoder (trained weights: agreement figures mean something)."""

import numpy as np
import pytest

import edgesdk
from edgesdk.converters import gen_calibration as gc
from edgesdk.converters.programs import collect
from edgesdk.models.distill.recipes.mohawk import corpus
from edgesdk.models.teachers import load_teacher
from edgesdk.runtime.errors import ConfigError

CAP, NEW = 40, 12


@pytest.fixture(scope="module")
def teacher():
    m = load_teacher("decoder")
    m.cfg.prompt_lengths, m.cfg.max_new_tokens = (CAP,), NEW
    return m


def _prompts(n: int, split: str = "val", length: int = 32) -> list[list[int]]:
    text = corpus(split)
    stride = (len(text) - length) // n
    return [text[i * stride:i * stride + length].tolist() for i in range(n)]


def test_each_program_is_recorded_on_the_inputs_it_meets_while_generating(teacher):
    programs = collect(teacher, None)
    prompts = [np.asarray(p) for p in _prompts(3, length=20)]
    rec = gc.record(programs, prompts, new_tokens=6)
    assert len(rec["prefill"]) == 3                          # one prefill per prompt
    assert len(rec["step"]) == 3 * 5                         # the 1st token comes from the prefill's logits
    names = next(p for p in programs if p.name == "step").input_names
    for sample in rec["step"].samples:
        x = dict(zip(names, sample))
        pos = int(x["pos"][0])
        assert 20 <= pos < 25
        k = x["k_0"].numpy()                                  # keys (B·Hkv, Dh, C): slots along axis 2
        assert np.abs(k[..., :pos]).sum(axis=(0, 1)).min() > 0  # every written slot holds a real key
        assert not k[..., CAP:].any()                         # past the prompt class: never written yet
    # the same prompts through the fp32 programs reach the same positions: recorded, not invented
    assert sorted(int(dict(zip(names, s))["pos"][0]) for s in rec["step"].samples) == sorted(list(range(20, 25)) * 3)


def test_a_step_per_class_is_recorded_on_every_prompt_its_class_holds():
    """An encoder-decoder has a step per prompt length class: each class's step is calibrated on
    the prompts that class holds, also those a smaller class would have taken."""
    import torch
    from edgesdk.models.encdec import EncDec, EncDecConfig
    torch.manual_seed(0)
    m = EncDec(EncDecConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_source=16, max_target=8,
                            prompt_lengths=(8, 16))).eval()
    programs = collect(m, None)
    rec = gc.record(programs, [np.arange(5) + 60, np.arange(12) + 70], new_tokens=4)
    # 5 tokens: both classes (8 picked, 16 also fed); 12 tokens: class 16 only; 4 steps per generation
    assert (len(rec["encode_8"]), len(rec["encode_16"])) == (1, 2)
    assert (len(rec["decode_step_8"]), len(rec["decode_step_16"])) == (4, 8)
    names = next(p for p in programs if p.name == "decode_step_16").input_names
    lens = sorted({int(dict(zip(names, s))["src_len"][0]) for s in rec["decode_step_16"].samples})
    assert lens == [5, 12]


@pytest.mark.slow  # two exports, static calibration and the gate: ~1 min alone, ~4 on a busy machine
def test_int8_static_generation_keeps_fp32_tokens(teacher, tmp_path):
    art = edgesdk.convert(teacher, None, "onnx-cpu", quantize="int8-static", calibration=_prompts(16, "train"),
                          eval_data=_prompts(8), out_dir=tmp_path, max_drop=None)
    q = art.manifest.quantization
    per = q["calibration"]["per_program"]
    assert per["prefill"]["samples"] == 16 and per["step"]["samples"] >= 16 * (NEW - 2)
    details = q["details"]
    # the step adds a -inf attention bias to the scores: those nodes stay float, or int8 flattens attention
    assert details["step"]["mask_nodes_kept_float"] and details["prefill"]["mask_nodes_kept_float"]
    gate = q["gate"]
    assert set(art.verification["programs"]) == {"prefill", "step"}
    # measured 2026-12-01: teacher-forced 0.994, greedy 0.893 (the same with int8-dynamic: 0.994, 0.940)
    assert gate["teacher_forced_agreement"] >= 0.95, gate
    assert gate["greedy_agreement"] >= 0.8, gate


def test_the_generation_gate_judges_teacher_forced_and_greedy_agreement():
    acc = {"drop": 0.01, "drop_basis": "x", "greedy_agreement": 0.9, "teacher_forced_agreement": 0.99}
    g = gc.judge_generation(acc, "default", False)
    assert g["passed"] is False and g["failing"] == ["greedy agreement 90.0% < 95%"]
    assert gc.judge_generation({**acc, "greedy_agreement": 0.96}, "default", False)["passed"] is True
    assert gc.judge_generation({**acc, "teacher_forced_agreement": 0.9, "greedy_agreement": 1.0},
                               "default", False)["failing"][0].startswith("teacher-forced next-token agreement 90.0%")
    assert gc.judge_generation(acc, 0.005, False)["passed"] is False
    assert gc.judge_generation(acc, None, False)["passed"] is None


def test_calibration_prompts_are_checked_at_the_boundary(teacher, tmp_path):
    def conv(**kw):
        return edgesdk.convert(teacher, None, "onnx-cpu", quantize="int8-static", out_dir=tmp_path, **kw)
    with pytest.raises(ConfigError, match=r"int8-static needs calibration prompts for onnx-cpu: this model "
                                          r"generates \(prefill, step\)"):
        conv()
    with pytest.raises(ConfigError, match=r"calibration prompt 1 has 41 tokens; the model's prefill holds 1 to 40"):
        conv(calibration=["def f():", "x" * 41] + ["y"] * 8)
    with pytest.raises(ConfigError, match=r"3 calibration prompts; give at least 8"):
        conv(calibration=["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"expected a list of prompts"):
        conv(calibration="def f(): pass")


def _hostile(teacher):
    """The trained decoder with 4 hidden units of the last block's MLP that always output 5000 and that
    its down-projection ignores: fp32 maths unchanged, but the down-projection's int8 input range is
    ~1000x too wide for the other 508 units (one hostile layer, in both programs)."""
    import copy
    import torch
    m = copy.deepcopy(teacher)
    up, down = m.blocks[-1].mlp[0], m.blocks[-1].mlp[2]
    with torch.no_grad():
        up.weight[:4] = 0.0
        up.bias[:4] = 5000.0
        down.weight[:, :4] = 0.0
    return m


@pytest.mark.slow  # 2-3 exports of both programs and the token gate each time: ~1-2 min alone, ~8 on a busy machine
def test_per_program_auto_fallback_keeps_the_hostile_step_layer_in_float(teacher, tmp_path):
    """max_drop / auto_fallback per program, end to end: the step fails its own gate, auto-fallback may
    only touch the step, keeps the hostile layer in float there and the step then passes; the manifest
    says per program what stayed in float."""
    m = _hostile(teacher)
    art = edgesdk.convert(m, None, "onnx-cpu", quantize="int8-dynamic", calibration=_prompts(8, "train", 20),
                          eval_data=_prompts(3, length=20), out_dir=tmp_path,
                          max_drop={"step": 0.05, "tokens": None}, auto_fallback={"step": True})
    q = art.manifest.quantization
    first, last = q["attempts"][0], q["attempts"][-1]
    assert first["passed"] is False and first["programs"] == {"step": False}, q["attempts"]
    assert last["passed"] is True and last["programs"] == {"step": True}
    assert [k["program"] for k in q["kept_float"]] == ["step"] * len(q["kept_float"])
    assert q["kept_float"][0]["layer"].endswith("blocks.3.mlp.2"), q["kept_float"]
    assert q["gate"]["programs"]["step"]["drop"] <= 0.05 and "prefill" not in q["gate"]["programs"]
    fl = q["float_per_program"]
    assert fl["prefill"]["auto_fallback"] == [] and fl["step"]["auto_fallback"] == [k["layer"] for k in q["kept_float"]]
    assert "prefill" in art.verification["programs"]  # recorded, not judged on its own (no bound given)


def test_per_program_options_are_checked_at_the_boundary(teacher, tmp_path):
    with pytest.raises(ConfigError, match=r"max_drop: unknown program 'decode'; this model's keys are 'prefill', "
                                          r"'step', 'tokens'"):
        edgesdk.convert(teacher, None, "onnx-cpu", quantize="int8-dynamic", out_dir=tmp_path,
                        max_drop={"decode": 0.1})
    with pytest.raises(ConfigError, match=r"auto_fallback must be True/False or"):
        edgesdk.convert(teacher, None, "onnx-cpu", quantize="int8-dynamic", out_dir=tmp_path,
                        auto_fallback={"step": "yes"})


def test_a_program_failing_its_own_bound_fails_the_gate_and_is_fixed_first():
    out = [{"name": "logits", "top1_agreement": 0.9, "drop": 0.1, "scorable": True, "cosine_min": 0.9}]
    per = {"prefill": {"outputs": out, "drop": 0.1, "drop_basis": "x"},
           "step": {"outputs": [{**out[0], "top1_agreement": 1.0, "drop": 0.0}], "drop": 0.0, "drop_basis": "x"}}
    acc = {"drop": 0.0, "drop_basis": "x", "greedy_agreement": 1.0, "teacher_forced_agreement": 1.0}
    gate = gc.judge_programs(gc.judge_generation(acc, "default", False), per, {"prefill": 0.05, "step": 0.05})
    assert gate["passed"] is False and gate["failing"] == ["program 'prefill': drop 0.1000 > max_drop 0.05"]
    assert gate["programs"]["step"]["passed"] is True
    cands = [{"program": "step", "layer": "a"}, {"program": "prefill", "layer": "b"}]
    assert gc.next_fallback(cands, [], gate)["layer"] == "b"      # the failing program's layer first
    assert gc.next_fallback(cands, cands[1:], gate)["layer"] == "a"
    assert gc.next_fallback(cands, cands, gate) is None


def test_the_plan_keeps_calibrated_schemes_for_generation_models_with_prompts(teacher):
    """A pipeline entry of a generation family with prompts gets int8-static; without prompts (or not a
    generation model) the plan still skips it, saying what it needs."""
    from types import SimpleNamespace
    from edgesdk.pipeline import PipelineConfig
    from edgesdk.pipeline.plan import jobs_for, select_targets
    cfg = PipelineConfig.from_dict({"distill": {"family": "mamba"}, "targets": ["onnx-cpu"],
                                    "quantize": {"schemes": ["int8-static"]}})
    targets = select_targets(cfg)

    def job(**kw):
        e = SimpleNamespace(**{"family": "mamba", "name": "mamba", "multi": True, "module": teacher,
                               "calibration": None, **kw})
        return jobs_for(e, 0, targets, cfg, quick=False, start=0)[0]
    assert job(calibration=[[1, 2, 3]] * 8).skip is None
    assert "needs a generation model (edge_generation) and calibration prompts" in job().skip


def test_layers_nested_in_blocks_map_to_their_onnx_nodes(tmp_path):
    """auto_fallback's exclusions reach layers nested in blocks (``blocks.1.mlp.2``): the exporter names each
    scope by its full path, and joining them (``blocks.1.mlp.blocks.1.mlp.2``) matched nothing, so the layer
    silently stayed int8 (found with the hostile decoder above: the step's drop did not move)."""
    import torch
    from torch import nn
    from edgesdk.converters.onnx_cpu import export_onnx, nodes_of_modules
    from edgesdk.converters.programs import collect

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.ModuleDict({"mlp": nn.Sequential(nn.Linear(8, 16), nn.GELU(),
                                                                           nn.Linear(16, 8))}) for _ in range(2))

        def forward(self, x):
            for b in self.blocks:
                x = x + b["mlp"](x)
            return x
    prog = collect(Net().eval(), (torch.randn(1, 8),))[0]
    export_onnx(prog, tmp_path / "m.onnx")
    assert len(nodes_of_modules(tmp_path / "m.onnx", ["blocks.1.mlp.2"])) == 1
    assert len(nodes_of_modules(tmp_path / "m.onnx", ["blocks.1"])) >= 2


def test_a_precision_scheme_with_prompts_converts_where_layers_cannot_be_kept_in_float(tmp_path):
    """Prompts make the gate per program; with nothing kept in float the export gets no exclusions,
    so targets that cannot keep layers in float (Vulkan, Core ML, the LiteRT GPU) still take fp16
    (the demo's encdec/mamba fp16 rows failed with 'cannot keep individual layers' before)."""
    import torch
    from edgesdk.models.encdec import EncDec, EncDecConfig
    torch.manual_seed(0)
    m = EncDec(EncDecConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, max_source=64, max_target=8,
                            prompt_lengths=[8, 16])).eval()
    prompts = [[65 + i, 66, 67, 68] * (1 + i % 4) for i in range(16)]
    art = edgesdk.convert(m, None, "executorch-vulkan", quantize="fp16", calibration=prompts[:12],
                          eval_data=prompts[12:], out_dir=tmp_path, auto_fallback=True, max_drop=0.05)
    assert art.manifest.quantization["scheme"] == "fp16" and not art.manifest.quantization["kept_float"]


@pytest.mark.slow  # an int8-dynamic export with its gate, then every prompt scored: ~2 min on a busy machine
def test_teacher_forcing_is_skipped_only_where_it_cannot_change_the_figure(teacher, tmp_path):
    """The gate skips the teacher-forced pass for a prompt whose greedy tokens equal fp32's (its
    inputs would be the greedy run's own): the agreement must equal scoring every prompt."""
    from edgesdk import runtime
    from edgesdk.runtime.generate import generate, score
    art = edgesdk.convert(teacher, None, "onnx-cpu", quantize="int8-dynamic", calibration=_prompts(8, "train"),
                          out_dir=tmp_path, max_drop=None)
    programs = collect(teacher, None)
    sess = runtime.load(art.path)
    prompts = [np.asarray(p) for p in _prompts(6, length=24)]
    acc = gc.evaluate_generation(programs, sess, prompts, new_tokens=NEW)
    ref = gc.Reference(programs)
    hits = total = exact = 0
    for ids in prompts:
        r = generate(ref, ids, NEW).tokens
        s = score(sess, ids, r)
        hits, total = hits + sum(s["correct"]), total + len(s["correct"])
        if generate(sess, ids, NEW).tokens == r:
            exact += 1
            assert all(s["correct"])    # the premise of the shortcut, on a real runtime
    assert exact >= 1                   # the shortcut was taken at least once
    assert acc["teacher_forced_agreement"] == hits / total


def test_the_gate_runs_each_distinct_program_input_once_and_its_figures_stay(teacher, tmp_path):
    """`Remembered`: a call whose inputs equal an earlier call's gets that call's outputs back. A
    teacher-forced pass that leaves the greedy tokens at position k runs the artifact only from
    there, the prefill check reuses the generations' prefills, and the gate's figures are the same
    with every call run."""
    from edgesdk import runtime
    from edgesdk.runtime.generate import generate, score
    art = edgesdk.convert(teacher, None, "onnx-cpu", out_dir=tmp_path, verify_samples=1)
    programs = collect(teacher, None)
    sess = runtime.load(art.path)
    ids = np.asarray(_prompts(1, length=24)[0])
    view = gc.Remembered(sess)
    g = generate(view, ids, NEW).tokens
    assert view.runs() == {"prefill": 1, "step": NEW - 1}     # the 1st token comes from the prefill
    k = 5
    cont = g[:k] + [(g[k] + 1) % 256] + g[k + 1:]            # fp32's tokens leave the greedy ones at k
    s = score(view, ids, cont)
    figures = ("logprobs", "correct", "bits_per_token", "accuracy")
    want = score(sess, ids, cont)
    assert {k: s[k] for k in figures} == {k: want[k] for k in figures}  # the session's own figures
    # the same prefill and the k steps before position k were the greedy run's inputs: not run again
    assert view.calls() == {"prefill": 2, "step": 2 * (NEW - 1)}
    assert view.runs() == {"prefill": 1, "step": (NEW - 1) + (NEW - 1 - k)}

    prompts = [np.asarray(p) for p in _prompts(3, length=20)]
    counted = gc.Remembered(sess)
    acc = gc.evaluate_generation(programs, counted, prompts, new_tokens=NEW)
    assert counted.calls()["prefill"] == 2 * len(prompts)    # greedy + the per-program check
    assert counted.runs()["prefill"] == len(prompts)
    every = gc.evaluate_generation(programs, gc.Remembered(sess, remember=False), prompts, new_tokens=NEW)
    assert acc == every
