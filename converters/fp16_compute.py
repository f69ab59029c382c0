"""Verifying fp32 generation artifacts on accelerators that compute float graphs at fp16.

The Hexagon HTP has no fp32 arithmetic: an fp32 ONNX graph runs there in fp16 (QNN's
``enable_htp_fp16_precision`` changes nothing on the emulator: same outputs bit for bit). A
generation model's recurrent state then drifts by fp16 rounding (Mamba step: state max |diff|
0.075 of 3.5, cosine 0.99996), which misses an element-wise fp32 tolerance although the model
generates the same text. Loosening the tolerance until it passes would say nothing about what the
user gets, so a generation model that misses it is judged by what it generates instead:

- the element-wise report stays in the manifest (``verification.element_wise``), every output's
  max |diff| and cosine, and each output must keep cosine >= ``COSINE_FLOOR`` (fp16 rounding, not
  a wrong graph, which lands far lower: 0.98 for the miscompiled Mamba step);
- the token figures of `converters.gen_calibration` on held-out prompts (``verification.tokens``):
  teacher-forced next-token agreement with the fp32 PyTorch programs must reach
  ``gen_calibration.MIN_TEACHER_FORCED``; with the user's prompts (``eval_data=``) greedy agreement
  must also reach ``gen_calibration.MIN_GREEDY``, the default gate of quantized generation models.

Without ``eval_data``, ``DEFAULT_PROMPTS`` deterministic random prompts (printable ASCII for byte
tokenizers) stand in, and the manifest names them as such. On those, greedy agreement is recorded
but does not decide: out-of-distribution prompts leave the next token a near-tie at many positions,
where one fp16 flip changes every later token (the trained Mamba student: 80.9% greedy but 98.6%
teacher-forced on 16 random prompts), while teacher-forced agreement judges each position on its
own. Real prompts are the stronger evidence: pass them.

The HTP emulator runs a generation step in ~0.1-1 s, so the check is kept short: ``NEW_TOKENS``
new tokens per prompt.

A user who passes ``atol``/``rtol`` gets the element-wise check alone.

>>> art = edgesdk.convert(mamba, None, "qnn-htp", eval_data=held_out_texts)   # doctest: +SKIP
>>> art.verification["kind"], art.verification["tokens"]["greedy_agreement"]  # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from edgesdk import runtime
from edgesdk.converters import gen_calibration

COSINE_FLOOR = 0.999
DEFAULT_PROMPTS = 8
NEW_TOKENS = 16
KIND = "token agreement with fp32 PyTorch (the device computes float graphs at fp16)"


def _longest(names) -> str:
    """A generation entry's program: one name, or one per prompt class (shortest first): the last."""
    return names if isinstance(names, str) else names[-1]


def default_prompts(programs, n: int = DEFAULT_PROMPTS, seed: int = 0) -> list[list[int]]:
    """``n`` deterministic random prompts of 8..32 tokens (printable ASCII for byte tokenizers,
    otherwise ids below the logits' width, skipping pad/eos/start), each fitting a prefill class."""
    gen = programs.generation
    step = next(p for p in programs if p.name == _longest(gen["step"]))
    vocab = int(step.reference[step.output_names.index(gen["logits"])].shape[-1])
    pre = next(p for p in programs if p.name == _longest(gen["prefill"]))
    cap = int(pre.example_inputs[pre.input_names.index(gen["prompt"])].shape[1])
    rng = np.random.default_rng(seed)
    if gen.get("tokenizer") == "bytes":
        pool = np.arange(32, 127)
    else:
        special = {gen.get(k) for k in ("pad", "eos", "start_token")} - {None}
        pool = np.array([i for i in range(vocab) if i not in special])
    return [rng.choice(pool, size=int(rng.integers(min(8, cap), min(32, cap) + 1))).tolist() for _ in range(n)]


def applies(conv, programs, report: dict, explicit_tolerance: bool) -> bool:
    """Whether an fp32 artifact that missed the element-wise tolerance is judged by tokens instead."""
    return (getattr(conv, "float_compute", "fp32") == "fp16" and not report["passed"] and not explicit_tolerance
            and bool(getattr(programs, "generation", None)) and len(programs) > 1)


def verify_by_tokens(workdir, programs, report: dict, eval_data=None) -> dict:
    """The verification record of an fp32 generation artifact on an fp16-computing device (see the
    module docstring); ``report`` is `convert.verify`'s element-wise report, kept whole."""
    own = eval_data is not None
    if own:
        prompts = gen_calibration.load_prompts(eval_data, programs, "eval_data")
        source = f"{len(prompts)} held-out prompts (eval_data)"
    else:
        prompts = gen_calibration.load_prompts(default_prompts(programs), programs, "generated prompts")
        source = (f"{len(prompts)} deterministic random prompts (no eval_data given; pass held-out prompts as "
                  f"eval_data= for stronger evidence)")
    sess = runtime.load(workdir, nan_policy="allow")
    acc = gen_calibration.evaluate_generation(programs, sess, prompts, new_tokens=NEW_TOKENS)
    gate = gen_calibration.judge_generation(acc, "default", False)
    if not own:  # random prompts: greedy agreement is recorded, teacher-forced decides (docstring)
        gate["failing"] = [f for f in gate.get("failing", []) if not f.startswith("greedy")]
        gate["thresholds"] = {"min_teacher_forced": gen_calibration.MIN_TEACHER_FORCED}
    low = [f"{p}.{o['name']} (cosine {o['cosine']:.6f})" for p, v in report["programs"].items()
           for o in v["outputs"] if o["cosine"] < COSINE_FLOOR]
    failing = list(gate.get("failing", [])) + [f"element-wise cosine < {COSINE_FLOOR}: {', '.join(low)}"] * bool(low)
    misses = [f"{p}.{o['name']}: max |diff| {o['max_abs_err']:.3g} of {o['ref_max_abs']:.3g}, cosine {o['cosine']:.6f}"
              for p, v in report["programs"].items() for o in v["outputs"] if not o["ok"]]
    return {
        "kind": KIND, "passed": not failing, "failing": failing,
        "max_abs_err": report["max_abs_err"], "min_cosine": report["min_cosine"],
        "why": (f"element-wise tolerance atol={report['atol']:g}, rtol={report['rtol']:g} missed "
                f"({'; '.join(misses)}): fp16 rounding on the device; judged by the tokens generated instead"),
        "element_wise": report,
        "tokens": {"prompts": source, "prompts_sha256": gen_calibration.prompts_digest(prompts),
                   "new_tokens": acc["new_tokens"], "greedy_agreement": acc["greedy_agreement"],
                   "teacher_forced_agreement": acc["teacher_forced_agreement"],
                   "exact_sequences": acc["exact_sequences"], "programs": acc["programs"],
                   "thresholds": {**gate["thresholds"], "min_cosine": COSINE_FLOOR},
                   "decides": "teacher-forced and greedy agreement" if own else
                              "teacher-forced agreement (greedy recorded: random prompts)"},
    }


def message(target: str, record: dict) -> str:
    """The ToleranceError text of a failed token verification."""
    t = record["tokens"]
    return (f"{target}: the fp32 artifact computes at fp16 on the device and failed the token check on "
            f"{t['prompts']}: {'; '.join(record['failing'])} (greedy agreement {t['greedy_agreement']:.1%}, "
            f"teacher-forced {t['teacher_forced_agreement']:.1%}; {record['why']}). Fix: a quantized scheme "
            f"calibrated on prompts (uint16-static), explicit atol/rtol to accept the element-wise error, or "
            f"another target.")
