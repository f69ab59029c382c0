"""Pipeline family ``mamba``: the Mamba-2 student distilled from the attention teacher with
MOHAWK, scored by teacher-forced next-byte prediction through each artifact.

Default (embedded, nothing downloaded): teacher ``load_teacher("decoder")`` (the shipped 4-layer
byte LM), student ``Mamba.from_teacher`` (MaTVLM copy) trained through the three MOHAWK stages on
the standard-library corpus, prompt capacity 128 bytes (option ``prompt_lengths``: one prefill
program per prompt length class). Quality: next-byte accuracy on held-out
stdlib text, fed token by token through the step program (`Session.score`): the recurrent
decode path that ships, measured on the artifact itself.
"""

from __future__ import annotations

import torch

from edgesdk.runtime.errors import ConfigError
from edgesdk.families.base import (FamilyContext, FamilyResult, Runner, family_options, register_family, spread,
                                   torch_threads)

SOURCES = ("models/mamba.py", "models/distill/recipes/mohawk.py", "models/teachers/decoder.py",
           "models/distill/trainer.py", "models/distill/losses.py", "models/data/stdlib.py", "sdk/families/mamba.py")
OPTIONS = ("prompt_lengths", "windows", "continuation", "stages", "calibration_prompts", "gate_prompts",
           "emulator_windows")
EMULATOR_WINDOWS = 4  # on the HTP emulator one fp32 window (prefill + 32 steps) takes ~2.7 s (RESULTS.md, #21)


@register_family("mamba", sources=SOURCES,
                 description="Mamba-2 student from the attention decoder teacher (MOHAWK: matrix orientation, "
                             "hidden-state alignment, end-to-end KD); exports prefill + constant-memory step")
def mamba_family(ctx: FamilyContext) -> FamilyResult:
    """Mamba-2 students from the shipped byte-level decoder teacher."""
    from edgesdk.models.distill.recipes.mohawk import corpus, mohawk
    from edgesdk.models.generation import length_classes
    from edgesdk.models.mamba import Mamba
    from edgesdk.models.teachers import load_teacher

    if ctx.teacher is not None or ctx.data is not None:
        raise ConfigError("family mamba: distill.teacher / distill.data are not supported yet; it distils the "
                          "embedded byte-level decoder on the standard-library corpus (omit both)")
    opts = family_options(ctx, "mamba", OPTIONS)
    try:
        classes = length_classes(opts.get("prompt_lengths", 128), "options.prompt_lengths")
    except ValueError as e:
        raise ConfigError(f"family {ctx.spec.family}: {e}") from None
    prompt_len = classes[-1]                        # quality: prompts of the longest class
    n_windows = int(opts.get("windows", 4 if ctx.quick else 12))
    n_cont = int(opts.get("continuation", 32))
    stages = tuple(opts.get("stages", (1, 2, 3)))
    steps = ctx.spec.steps or (30 if ctx.quick else 150)
    teacher = load_teacher("decoder")
    with torch_threads(ctx.threads):
        student = ctx.cache.module(
            "student-mamba", build=lambda: Mamba.from_teacher(teacher),
            train=lambda: mohawk(teacher, steps=steps, stages=stages, seed=ctx.spec.seed, threads=ctx.threads,
                                 evaluate=False).student)
    student.cfg.prompt_lengths = classes
    val = corpus("val")
    span = prompt_len + n_cont
    stride = max(1, (len(val) - span) // n_windows)
    windows = [val[i * stride:i * stride + span].long().tolist() for i in range(n_windows)]
    with torch.no_grad():
        t_hits = sum(int((teacher(torch.tensor([w[:-1]]))[0, prompt_len - 1:].argmax(-1) ==
                          torch.tensor(w[prompt_len:])).sum()) for w in windows)
    teacher_acc = t_hits / (n_windows * n_cont)

    def scorer(ws: list):
        def quality(run: Runner) -> float:
            hits = sum(sum(run.score(w[:prompt_len], w[prompt_len:])["correct"]) for w in ws)
            return hits / (len(ws) * n_cont)
        return quality
    quality = scorer(windows)
    few = spread(windows, int(opts.get("emulator_windows", EMULATOR_WINDOWS)))
    subset = (scorer(few), f"{len(few)} of {n_windows} held-out windows") if len(few) < n_windows else None

    # quantized schemes calibrate on training windows and gate on validation windows other than the
    # scored ones (prompts: each program meets its real inputs while the fp32 programs generate)
    n_cal = int(opts.get("calibration_prompts", 8 if ctx.quick else 16))
    n_gate = int(opts.get("gate_prompts", 4 if ctx.quick else 8))
    plen = min(64, prompt_len)
    # prompt lengths cycle over the classes (each at most 64 bytes): a class's prefill is calibrated
    # only by prompts that fit it, so the shortest class needs prompts of its own length
    lens = sorted({min(c, plen) for c in classes})
    train = corpus("train")
    cal = [train[i * 4099:i * 4099 + lens[i % len(lens)]].long().tolist() for i in range(n_cal)]
    # midway between scored windows (stride >> span), side by side when there are more than windows
    starts = [(j % n_windows) * stride + stride // 2 + (j // n_windows) * plen for j in range(n_gate)]
    held = [val[a:a + lens[j % len(lens)]].long().tolist() for j, a in enumerate(starts)]

    return FamilyResult(
        students={"mamba": student}, teacher=teacher, example_inputs=None, quality=quality, quality_subset=subset,
        calibration=cal, eval_data=held,
        metric="next-byte accuracy (held-out stdlib)", reference_quality=teacher_acc,
        reference="attention decoder teacher (fp32 PyTorch, full forward)",
        info={"task": "byte LM on stdlib source", "windows": n_windows, "prompt_capacity": prompt_len,
              "prompt_lengths": list(classes),
              "scored_bytes": n_windows * n_cont, "stages": list(stages), "student_steps": steps,
              "state_bytes": "constant in context (recurrent conv + SSM state)",
              "input": f"prefill {prompt_len} bytes once, then one step per byte"})
