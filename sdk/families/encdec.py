"""Pipeline family ``encdec``: the encoder-decoder student distilled from the decoder-only
function-name teacher, scored by generating names through each artifact.

Default (embedded, nothing downloaded): teacher ``load_teacher("funcname")`` (the shipped byte LM
fine-tuned on stdlib body -> name), student ``EncDec`` (4 encoder + 2 decoder layers) distilled
with the ``encdec-from-decoder`` recipe, prompt capacity 200 bytes (option ``prompt_lengths``: one
encode program per prompt length class, e.g. ``[64, 200]``). Quality: character F1 of the
greedy names for held-out function bodies, generated with the same numpy loop (`runtime.generate`)
over the PyTorch programs and over every artifact that runs here.
"""

from __future__ import annotations

import torch

from edgesdk.runtime.errors import ConfigError
from edgesdk.families.base import (FamilyContext, FamilyResult, Runner, family_options, register_family, spread,
                                   torch_threads)

SOURCES = ("models/encdec.py", "models/distill/recipes/encdec.py", "models/data/funcname.py",
           "models/teachers/train_funcname.py", "models/teachers/decoder.py", "models/distill/trainer.py",
           "models/distill/losses.py", "sdk/families/encdec.py")
OPTIONS = ("eval_pairs", "prompt_lengths", "kd", "calibration_prompts", "gate_prompts", "emulator_pairs")
EMULATOR_PAIRS = 10  # on an emulated NPU one name (encode + up to 31 steps) takes ~1 s


@register_family("encdec", sources=SOURCES,
                 description="encoder-decoder student (4 enc + 2 dec layers) distilled from the decoder-only "
                             "function-name teacher; exports encode + decode_step")
def encdec_family(ctx: FamilyContext) -> FamilyResult:
    """Encoder-decoder students from the shipped decoder-only function-name teacher."""
    from edgesdk import models
    from edgesdk.models.generation import length_classes
    from edgesdk.models.data import funcname as fn
    from edgesdk.models.distill.recipes.encdec import STUDENT_CFG, encdec_from_decoder
    from edgesdk.models.teachers.train_funcname import greedy_names, load_funcname_teacher

    if ctx.teacher is not None or ctx.data is not None:
        raise ConfigError("family encdec: distill.teacher / distill.data are not supported yet; it distils the "
                          "embedded function-name teacher on standard-library function bodies (omit both)")
    opts = family_options(ctx, "encdec", OPTIONS)
    n_eval = int(opts.get("eval_pairs", 12 if ctx.quick else 40))
    try:
        classes = length_classes(opts.get("prompt_lengths", fn.MAX_SRC), "options.prompt_lengths")
    except ValueError as e:
        raise ConfigError(f"family {ctx.spec.family}: {e}") from None
    prompt_len = classes[-1]
    steps = ctx.spec.steps or (40 if ctx.quick else 200)
    teacher = load_funcname_teacher()
    with torch_threads(ctx.threads):
        student = ctx.cache.module(
            "student-encdec", build=lambda: models.create("encdec", **STUDENT_CFG),
            train=lambda: encdec_from_decoder(teacher=teacher, steps=steps, seed=ctx.spec.seed, kd=opts.get("kd", True),
                                              threads=ctx.threads).student)
    student.cfg.prompt_lengths = classes
    pairs = fn.funcname_pairs("test")[:n_eval]
    srcs = [list(s)[:prompt_len] for s, _ in pairs]
    refs = [bytes(n).decode("utf-8") for _, n in pairs]
    with torch.no_grad(), torch_threads(ctx.threads):
        teacher_f1 = fn.scores(greedy_names(teacher, srcs), refs)["char_f1"]

    def scorer(idx: list):
        def quality(run: Runner) -> float:
            preds = [fn.decode_name(run.generate(srcs[i] or [fn.TOK.pad_id], student.cfg.max_target - 1).tokens)
                     for i in idx]
            return fn.scores(preds, [refs[i] for i in idx])["char_f1"]
        return quality
    quality = scorer(list(range(len(pairs))))
    few = spread(list(range(len(pairs))), int(opts.get("emulator_pairs", EMULATOR_PAIRS)))
    subset = (scorer(few), f"{len(few)} of {len(pairs)} held-out functions") if len(few) < len(pairs) else None

    # quantized schemes calibrate on training bodies and gate on validation bodies (prompts: each
    # program meets its real inputs while the fp32 programs generate); a small gate set keeps the demo
    # short. 32 calibration prompts, not 16: on qnn-htp, w8a16 calibrated on 16 kept 90% teacher-forced
    # (70% greedy) agreement on the 8 validation prompts, on 32 it kept 100% of both (2026-12-02, RESULTS.md)
    n_cal = int(opts.get("calibration_prompts", 32))
    n_gate = int(opts.get("gate_prompts", 4 if ctx.quick else 8))
    # cut to each class in turn: a class's programs are calibrated only by prompts that fit it
    cal = [list(s)[:classes[i % len(classes)]] or [fn.TOK.pad_id]
           for i, (s, _) in enumerate(fn.funcname_pairs("train")[:n_cal])]
    held = [list(s)[:classes[i % len(classes)]] or [fn.TOK.pad_id]
            for i, (s, _) in enumerate(fn.funcname_pairs("val")[:n_gate])]

    return FamilyResult(
        students={"encdec": student}, teacher=teacher, example_inputs=None, quality=quality, quality_subset=subset,
        calibration=cal, eval_data=held,
        metric="char F1 of generated names", reference_quality=teacher_f1,
        reference="decoder-only function-name teacher (fp32 PyTorch, greedy)",
        info={"task": "stdlib function body -> name", "eval_pairs": len(pairs), "prompt_capacity": prompt_len,
              "prompt_lengths": list(classes),
              "student_steps": steps, "student_params": sum(p.numel() for p in student.parameters()),
              "input": f"body bytes (<= {prompt_len}); generation: encode once, then decode_step per token"})
