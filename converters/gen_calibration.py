"""Calibration and the accuracy gate for generation models (prefill + step programs).

A generation model (``edge_programs()`` + ``edge_generation()``) is calibrated on *prompts*:
lists of token ids, or text for byte-tokenizer models. Each prompt is generated greedily through
the fp32 PyTorch programs by the runtime's own loop (`runtime.generate`), and every program call is
recorded: the prefill inputs (the padded prompt and its length, for every prompt length class that
holds it) and the step inputs at every position, with the real caches and recurrent states the
step meets there. Each program is then calibrated on its own recorded set.

The gate runs held-out prompts through the quantized artifact and through the fp32 programs:

- **greedy agreement**: the share of fp32's greedy tokens that the artifact generates at the same
  position (a sequence that diverges early loses every later token);
- **teacher-forced agreement**: fp32's greedy tokens fed to the artifact one by one (`Session.score`);
  the share where the artifact's argmax is fp32's next token (each position judged on its own);
- a user ``metric(generations, prompts) -> float`` (higher is better; ``generations`` is one list
  of token ids per held-out prompt) where given: ``drop = metric(fp32) - metric(quantized)``.

``drop`` is ``1 - teacher-forced agreement`` (the per-token figure, not chaotic), or the metric's
drop. The default gate also needs greedy agreement >= ``MIN_GREEDY``. Per program, the gate also
records cosine / top-1 of each program's outputs on the held-out prompts' recorded inputs, so a
failing gate says which program moved. The artifact runs each distinct input once (`Remembered`): a
teacher-forced pass starts running where its tokens leave the greedy ones, and the prefill check
reuses the generations' prefills.

>>> import torch, edgesdk
>>> from edgesdk.models.teachers import load_teacher
>>> m = load_teacher("decoder")
>>> prompts = ["def add(a, b):", "import os\\n", "class Foo:"] * 4
>>> art = edgesdk.convert(m, None, "onnx-cpu", quantize="int8-static", calibration=prompts,
...                       out_dir="out")                                      # doctest: +SKIP
>>> art.manifest.quantization["gate"]["greedy_agreement"]                    # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import numpy as np
import torch

from edgesdk.converters.calibration import SampleSet
from edgesdk.converters.programs import Program, TorchBinding as _TorchBinding
from edgesdk.runtime.errors import ConfigError, InputError
from edgesdk.runtime.generate import encode_prompt, generate, parse_spec, score

MIN_PROMPTS = 8          # calibration prompts, at least
HOLDOUT_FRACTION = 0.25  # of the calibration prompts, when no eval_data is given
MAX_STEP_SAMPLES = 256   # recorded step inputs kept per program (evenly spaced over all recorded)
GEN_TOKENS = 32          # new tokens per prompt, recording and gate alike
MIN_GREEDY = 0.95        # default gate: greedy agreement with fp32
MIN_TEACHER_FORCED = 0.98  # default gate: teacher-forced next-token agreement with fp32
DEFAULT_METRIC_DROP = 0.01
REMEMBER_BYTES = 256 << 20  # outputs kept per program, at most (the oldest are dropped first)


def for_program(value, name: str):
    """A converter option that may be given per program (``{program: value}``) -> this program's."""
    return value.get(name) if isinstance(value, dict) else value


class _Recording(_TorchBinding):
    """A program run in PyTorch that keeps a copy of every input tuple it was called with."""

    def __init__(self, prog: Program):
        super().__init__(prog)
        self.seen: list[tuple[torch.Tensor, ...]] = []

    def run(self, inputs) -> list:
        arrays = [inputs[n] for n in self._names] if isinstance(inputs, dict) else list(inputs)
        self.seen.append(tuple(torch.from_numpy(np.array(a, copy=True)) for a in arrays))
        return super().run(arrays)


class Reference:
    """The fp32 PyTorch programs behind the runtime's session interface (`path`, `generation`,
    `program(name)`), recording every call (``seen`` per program)."""

    def __init__(self, programs):
        self.path = "<PyTorch fp32 programs>"
        self._programs = {p.name: _Recording(p) for p in programs}
        self.generation = parse_spec(programs.generation, {n: b.spec for n, b in self._programs.items()})

    def program(self, name: str) -> _Recording:
        return self._programs[name]

    def seen(self) -> dict[str, list]:
        return {n: b.seen for n, b in self._programs.items()}

    def reset(self) -> None:
        for b in self._programs.values():
            b.seen = []


def load_prompts(data, programs, what: str = "calibration") -> list[np.ndarray]:
    """Prompts (token id lists, or text with a byte tokenizer) -> 1-D int64 arrays, each fitting a
    prefill class (ConfigError naming the first that does not)."""
    spec = parse_spec(programs.generation, {p.name: _TorchBinding(p).spec for p in programs})
    if isinstance(data, (str, bytes)) or not hasattr(data, "__iter__"):
        raise ConfigError(f"{what} for a generation model: expected a list of prompts (token id lists"
                          f"{', or strings' if spec.tokenizer == 'bytes' else ''}), got {type(data).__name__}")
    caps = [_prompt_width(programs, n, spec) for n in spec.prefill]
    out = []
    for i, p in enumerate(data):
        try:
            ids = encode_prompt(spec, p)
        except InputError as e:
            raise ConfigError(f"{what} prompt {i}: {e}") from None
        if ids.size < 1 or ids.size > max(caps):
            raise ConfigError(f"{what} prompt {i} has {ids.size} tokens; the model's prefill holds 1 to "
                              f"{max(caps)} (prompt_lengths {list(caps)}): shorten it or export a longer class")
        out.append(ids)
    return out


def split_prompts(prompts: list) -> tuple[list, list]:
    """Every 4th prompt held out for the gate (at least 2), the rest calibrate."""
    k = max(2, int(round(len(prompts) * HOLDOUT_FRACTION)))
    step = max(1, len(prompts) // k)
    held = set(range(len(prompts) - 1, -1, -step)[:k])
    return [p for i, p in enumerate(prompts) if i not in held], [p for i, p in enumerate(prompts) if i in held]


def prompts_digest(prompts) -> str:
    h = hashlib.sha256()
    for p in prompts:
        h.update(np.asarray(p, np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


def _spaced(samples: list, limit: int) -> list:
    if len(samples) <= limit:
        return samples
    idx = np.linspace(0, len(samples) - 1, limit).round().astype(int)
    return [samples[i] for i in idx]


def record(programs, prompts: list[np.ndarray], new_tokens: int = GEN_TOKENS,
           max_step_samples: int = MAX_STEP_SAMPLES) -> dict[str, SampleSet]:
    """Each program's real inputs while the fp32 programs generate from ``prompts`` (see the module
    docstring) -> {program: SampleSet}. Every prefill class is fed each prompt it holds."""
    ref = Reference(programs)
    spec = ref.generation
    caps = {name: _prompt_width(programs, name, spec) for name in spec.prefill}
    with torch.no_grad():
        for ids in prompts:
            generate(ref, ids, new_tokens)
            for name, cap in caps.items():  # the classes the loop did not pick see the prompt too
                if cap >= ids.size and not _fed(ref.program(name).seen, ids, spec, programs, name):
                    if len(spec.steps) > 1:  # a step per class: that class's step sees the prompt's tokens too
                        generate(_OneClass(ref, name), ids, new_tokens)
                    else:
                        ref.program(name).run(_prefill_feed(programs, name, spec, ids, cap))
    out = {}
    for name, seen in ref.seen().items():
        if not seen:
            raise ConfigError(f"calibration: no prompt reached program {name!r}"
                              + (f" (it holds prompts of up to {caps[name]} tokens; give some that short)"
                                 if name in caps else ""))
        kept = _spaced(seen, max_step_samples) if name in spec.steps else seen
        note = (f"recorded while generating {new_tokens} tokens from {len(prompts)} prompts through the fp32 "
                f"programs" + (f"; {len(kept)} of {len(seen)} step calls, evenly spaced" if len(kept) < len(seen)
                               else ""))
        out[name] = SampleSet(kept, note, prompts_digest(prompts) + f":{name}")
    return out


class _OneClass:
    """The reference restricted to one prompt length class (its prefill and its step), so
    generating through it records that class's programs whichever class the prompt would pick."""

    def __init__(self, ref, prefill: str):
        import dataclasses
        g = ref.generation
        self.path, self.program = ref.path, ref.program
        self.generation = dataclasses.replace(g, prefill=(prefill,), steps=(g.step_for(prefill),))


def _prompt_width(programs, name: str, spec) -> int:
    prog = next(p for p in programs if p.name == name)
    return int(prog.example_inputs[prog.input_names.index(spec.prompt)].shape[1])


def _prefill_feed(programs, name: str, spec, ids: np.ndarray, cap: int) -> list[np.ndarray]:
    prog = next(p for p in programs if p.name == name)
    feed = []
    for n, ex in zip(prog.input_names, prog.example_inputs):
        if n == spec.prompt:
            a = np.full((1, cap), spec.pad, dtype=ex.numpy().dtype)
            a[0, :ids.size] = ids
        elif n == spec.prompt_length:
            a = np.array([ids.size], dtype=ex.numpy().dtype)
        else:
            raise ConfigError(f"calibration: prefill {name!r} has input {n!r} that the generation entry does "
                              f"not name (prompt {spec.prompt!r}, prompt_length {spec.prompt_length!r})")
        feed.append(a)
    return feed


def _fed(seen: list, ids, spec, programs, name) -> bool:
    """Whether the last recorded call of this prefill was this prompt (the loop picked this class)."""
    if not seen:
        return False
    prog = next(p for p in programs if p.name == name)
    last = seen[-1][prog.input_names.index(spec.prompt)]
    return last.shape[1] >= ids.size and bool((last[0, :ids.size].numpy() == ids).all()) \
        and (spec.prompt_length is None or int(seen[-1][prog.input_names.index(spec.prompt_length)][0]) == ids.size)


class _RememberedProgram:
    """One program of an artifact's session whose outputs are kept per distinct input: a call with
    the same input bytes as an earlier one gets that call's outputs back without running again.
    The runtime's loop drives it like a PyTorch reference binding (``spec``, ``run``, ``pool``)."""

    def __init__(self, binding, remember: bool = True):
        self.spec = binding.spec
        self._binding, self._remember = binding, remember
        self._names = [s.name for s in binding.spec.inputs]
        self._outputs: OrderedDict[bytes, list] = OrderedDict()
        self._bytes = 0
        self.pool: list = []  # bound copies with their state buffers (runtime.state)
        self.calls = self.runs = 0

    def run(self, inputs) -> list:
        arrays = [inputs[n] for n in self._names] if isinstance(inputs, dict) else list(inputs)
        self.calls += 1
        if not self._remember:
            self.runs += 1
            return self._binding.run(arrays)
        h = hashlib.blake2b(digest_size=20)
        for a in arrays:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}|".encode())
            h.update(a.data)
        key = h.digest()
        out = self._outputs.get(key)
        if out is None:
            out = self._outputs[key] = [np.array(o, copy=True) for o in self._binding.run(arrays)]
            self.runs += 1
            self._bytes += sum(o.nbytes for o in out)
            while self._bytes > REMEMBER_BYTES and len(self._outputs) > 1:  # a large model: the oldest go
                self._bytes -= sum(o.nbytes for o in self._outputs.popitem(last=False)[1])
        return list(out)


class Remembered:
    """An artifact's session (`runtime.load`) whose programs remember their outputs per distinct
    input (`_RememberedProgram`), for a gate that runs the same inputs more than once:

    - the teacher-forced pass of a prompt whose greedy tokens diverged from fp32's feeds the very
      inputs the greedy pass fed up to the divergence (same prefill, same tokens, same states), so
      it runs the artifact only from there on;
    - the per-program check feeds each prefill the held-out prompts the generations already fed it.

    An artifact is a deterministic function of its inputs, so every figure stays the same; what
    changes is the number of program runs (on an emulated NPU, ~0.1-2 s each). ``runs()`` and
    ``calls()`` count them per program; ``remember=False`` runs every call (and counts it)."""

    def __init__(self, sess, remember: bool = True):
        self._sess, self._remember = sess, remember
        self.path, self.generation = sess.path, sess.generation
        self._programs: dict[str, _RememberedProgram] = {}

    def program(self, name: str) -> _RememberedProgram:
        if name not in self._programs:
            self._programs[name] = _RememberedProgram(self._sess.program(name), self._remember)
        return self._programs[name]

    def runs(self) -> dict[str, int]:
        return {n: p.runs for n, p in self._programs.items()}

    def calls(self) -> dict[str, int]:
        return {n: p.calls for n, p in self._programs.items()}


def evaluate_generation(programs, sess, prompts: list[np.ndarray], metric=None,
                        new_tokens: int = GEN_TOKENS) -> dict:
    """The gate's numbers on held-out ``prompts`` (see the module docstring). ``sess`` runs each
    distinct input once (`Remembered`)."""
    from edgesdk.converters.accuracy import evaluate
    if not isinstance(sess, Remembered):
        sess = Remembered(sess)
    ref = Reference(programs)
    spec = ref.generation
    ref_tokens, got_tokens, greedy, tf = [], [], [0, 0], [0, 0]
    exact = 0
    for ids in prompts:
        r = generate(ref, ids, new_tokens).tokens
        g = generate(sess, ids, new_tokens).tokens
        ref_tokens.append(r)
        got_tokens.append(g)
        greedy[0] += sum(a == b for a, b in zip(r, g))
        greedy[1] += len(r)
        exact += r == g
        if r == g:
            # the artifact generated fp32's tokens: teacher forcing would feed it the very inputs its
            # own greedy run just fed (same prefill, same tokens, same positions), so every position
            # is its argmax; skipping the second pass changes no figure (it halves the check where one
            # step takes ~0.1-1 s, an emulated NPU)
            tf[0] += len(r)
            tf[1] += len(r)
            continue
        s = score(sess, ids, r)
        tf[0] += sum(s["correct"])
        tf[1] += len(s["correct"])
    greedy_agreement, tf_agreement = greedy[0] / greedy[1], tf[0] / tf[1]
    # per program: its outputs vs fp32 on the inputs it met for these prompts (the reference's own run)
    per = {}
    for name, seen in ref.seen().items():
        if seen:
            prog = next(p for p in programs if p.name == name)
            r = evaluate(prog.module, sess.program(name), _spaced(seen, 64))
            per[name] = {"samples": r["samples"], "min_cosine": r["min_cosine"], "drop": r["drop"],
                         "drop_basis": r["drop_basis"], "outputs": r["outputs"]}
    # the token figures, then every program's outputs (element-wise: a precision scheme's tolerance reads them)
    outputs = [{"name": "greedy tokens", "top1_agreement": greedy_agreement, "drop": 1 - greedy_agreement,
                "scorable": True, "cosine_min": 1.0, "max_abs_err": 0.0, "ref_max_abs": 0.0},
               {"name": "teacher-forced next token", "top1_agreement": tf_agreement, "drop": 1 - tf_agreement,
                "scorable": True, "cosine_min": 1.0, "max_abs_err": 0.0, "ref_max_abs": 0.0}]
    outputs += [{**o, "name": f"{n}.{o['name']}"} for n, r in per.items() for o in r["outputs"]]
    res = {"samples": len(prompts), "prompts": len(prompts), "new_tokens": new_tokens,
           "greedy_agreement": greedy_agreement, "teacher_forced_agreement": tf_agreement,
           "exact_sequences": exact / len(prompts), "fp32_tokens": greedy[1],
           "programs": per, "outputs": outputs,
           "min_cosine": min((p["min_cosine"] for p in per.values()), default=1.0),
           "max_abs_err": max((o["max_abs_err"] for o in outputs), default=0.0)}
    if metric is not None:
        prompt_list = [p.tolist() for p in prompts]
        fp32, quant = float(metric(ref_tokens, prompt_list)), float(metric(got_tokens, prompt_list))
        res.update(metric_fp32=fp32, metric_quantized=quant, drop=fp32 - quant, drop_basis="metric")
    else:
        res.update(drop=1 - tf_agreement, drop_basis="1 - teacher-forced next-token agreement with fp32")
    return res


def judge_generation(acc: dict, max_drop, metric: bool) -> dict:
    """The gate's verdict: ``"default"`` needs teacher-forced agreement >= MIN_TEACHER_FORCED and
    greedy agreement >= MIN_GREEDY (metric: drop <= DEFAULT_METRIC_DROP); a number bounds ``drop``;
    None turns the gate off."""
    gate = {"mode": "off" if max_drop is None else "default" if max_drop == "default" else "max_drop",
            "max_drop": None if max_drop in (None, "default") else max_drop, "drop": acc["drop"],
            "drop_basis": acc["drop_basis"], "metric": "user" if metric else "default", "not_scorable": [],
            "greedy_agreement": acc["greedy_agreement"],
            "teacher_forced_agreement": acc["teacher_forced_agreement"]}
    if max_drop is None:
        gate["passed"] = None
        return gate
    if max_drop == "default" and not metric:
        failing = []
        if acc["teacher_forced_agreement"] < MIN_TEACHER_FORCED:
            failing.append(f"teacher-forced next-token agreement {acc['teacher_forced_agreement'] * 100:.1f}% "
                           f"< {MIN_TEACHER_FORCED * 100:g}%")
        if acc["greedy_agreement"] < MIN_GREEDY:
            failing.append(f"greedy agreement {acc['greedy_agreement'] * 100:.1f}% < {MIN_GREEDY * 100:g}%")
        gate.update(thresholds={"min_teacher_forced": MIN_TEACHER_FORCED, "min_greedy": MIN_GREEDY},
                    passed=not failing, failing=failing)
        return gate
    bound = DEFAULT_METRIC_DROP if max_drop == "default" else max_drop
    gate.update(max_drop=bound, passed=acc["drop"] <= bound)
    return gate


# ----------------------------------------------------------------------------- per-program gate options

TOKENS_KEY = "tokens"  # in a per-program max_drop: the end-to-end token gate of a generation model


def check_per_program(max_drop, auto_fallback, programs) -> None:
    """``max_drop`` / ``auto_fallback`` given per program (``{program: value}``): only for models with
    several programs, and every key names one of them (``"tokens"`` too, for a generation model's
    end-to-end gate). ConfigError otherwise, listing the valid keys."""
    names = [p.name for p in programs]
    generation = bool(getattr(programs, "generation", None))
    for what, value in (("max_drop", max_drop), ("auto_fallback", auto_fallback)):
        if not isinstance(value, dict):
            continue
        if len(names) == 1:
            raise ConfigError(f"{what} per program ({value!r}) needs a model with several programs; this one has "
                              f"one ({names[0]!r}): give one value")
        valid = names + ([TOKENS_KEY] if generation and what == "max_drop" else [])
        unknown = [k for k in value if k not in valid]
        if unknown:
            raise ConfigError(f"{what}: unknown program{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
                              f" this model's keys are {', '.join(map(repr, valid))}"
                              + (f" ({TOKENS_KEY!r}: the greedy / teacher-forced token gate)" if generation
                                 and what == "max_drop" else ""))


def token_threshold(max_drop, default="default"):
    """The end-to-end (token) gate's bound: the one value, or a per-program dict's ``"tokens"``."""
    return max_drop.get(TOKENS_KEY, default) if isinstance(max_drop, dict) else max_drop


def program_bounds(max_drop, programs, unnamed) -> dict:
    """{program: bound} of a per-program ``max_drop`` (programs it does not name get ``unnamed``; a
    None bound is left out: that program is not judged on its own); {} for one value (then only the
    end-to-end gate judges)."""
    if not isinstance(max_drop, dict):
        return {}
    bounds = {p.name: max_drop.get(p.name, unnamed) for p in programs}
    return {n: b for n, b in bounds.items() if b is not None}


def judge_programs(gate: dict, per: dict, bounds: dict) -> dict:
    """Adds each program's own verdict (its outputs vs fp32 on the inputs it met, `accuracy.judge`
    with its bound) to ``gate``; a failing program fails the gate and is named in ``failing``."""
    from edgesdk.converters.accuracy import judge
    if not bounds:
        return gate
    verdicts, failing = {}, list(gate.get("failing") or [])
    if gate.get("passed") is False and not failing:  # a numeric bound on the end-to-end drop failed
        failing.append(f"{gate['drop_basis']} {gate['drop']:.4f} > max_drop {gate['max_drop']:g}")
    for name, bound in bounds.items():
        v = judge(per[name], bound, False)
        verdicts[name] = {k: v.get(k) for k in ("mode", "max_drop", "drop", "drop_basis", "passed", "failing")
                          if k == "passed" or v.get(k) is not None}
        if v["passed"] is False:
            failing.append(f"program {name!r}: " + ("; ".join(v.get("failing") or []) or
                                                    f"drop {v['drop']:.4f} > max_drop {v['max_drop']:g}"))
    gate = {**gate, "programs": verdicts, "failing": failing}
    if any(v["passed"] is False for v in verdicts.values()):
        gate["passed"] = False
    elif gate.get("passed") is None and any(v["passed"] for v in verdicts.values()):
        gate["passed"] = True
    return gate


def fallback_enabled(auto_fallback, program: str | None) -> bool:
    """Whether auto_fallback may keep layers of ``program`` in float (one value, or ``{program: bool}``)."""
    if isinstance(auto_fallback, dict):
        return bool(auto_fallback.get(program, False))
    return bool(auto_fallback)


def next_fallback(candidates: list[dict], kept: list[dict], gate: dict) -> dict | None:
    """The next layer to keep in float: the most sensitive one left in a program that failed its own
    gate, else the most sensitive one left anywhere; None when none is left."""
    taken = {(k.get("program"), k["layer"]) for k in kept}
    left = [c for c in candidates if (c.get("program"), c["layer"]) not in taken]
    failed = {n for n, v in (gate.get("programs") or {}).items() if v.get("passed") is False}
    return next((c for c in left if c.get("program") in failed), left[0] if left else None)


def float_per_program(details: dict | None, kept: list[dict], programs) -> dict:
    """Per program, what stayed in float: the layers auto-fallback kept (``auto_fallback``) and what
    the target's recipe keeps (its ``*kept_float`` lists: mask ranges, tied heads, blocked ops)."""
    details = details or {}
    out = {}
    for p in programs:
        d = details.get(p.name) if isinstance(details.get(p.name), dict) else {}
        recipe = {k: list(v) for k, v in d.items() if k.endswith("kept_float") and v}
        out[p.name] = {"auto_fallback": [k["layer"] for k in kept if k.get("program") == p.name], **recipe}
    return out
