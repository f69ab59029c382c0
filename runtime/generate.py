"""Autoregressive generation over exported programs, in numpy (no torch).

A generation artifact holds *prefill* programs, run once on the prompt (one per prompt length
class), and a *step* program, run once per new token (one for every class, or one per class when
the step's inputs depend on the prompt's capacity), plus a ``"generation"`` entry in its
manifest that says how to wire them. The model declares that entry with ``edge_generation()``
next to ``edge_programs()``; the converter checks every name in it against the exported programs
and records it. Three shapes of model fit one loop:

- **encoder-decoder**: prefill = ``encode(src, src_len) -> cross K/V``; the step starts from
  ``start_token`` (bos) at position 0; states: a self-attention KV cache (empty at first, one
  slot written per step) and the cross K/V (from prefill, constant).
- **decoder-only with a KV cache**: prefill = ``prefill(tokens, length) -> logits, K/V``; the first
  token comes from the prefill's logits and is fed to the step at position ``prompt length``.
- **recurrent (Mamba)**: prefill -> logits, conv_state, ssm_state; the step returns new states.

The manifest entry (every name is a program, input or output name of the artifact)::

    "generation": {
      "prefill": ["encode_64", "encode_256"],  # prefill programs, one per prompt capacity (or a
                                        #   single name); the runtime runs the smallest that
                                        #   holds the prompt
      "step": "decode_step",            # program run once per generated token: one name for
                                        #   every class, or a list, one per prefill class in the
                                        #   same order (["decode_step_64", "decode_step_256"]),
                                        #   when the step's inputs follow the class (an encoder-
                                        #   decoder's cross K/V hold P slots)
      "prompt": "src",                  # prefill input: prompt ids, (1, P) integer; P = capacity
      "prompt_length": "src_len",       # optional prefill input, (1,) int64: the true length;
                                        #   shorter prompts are right-padded with `pad`. When
                                        #   null, a prompt must be exactly P tokens long.
      "token": "token",                 # step input: the fed token, (1, 1) integer
      "position": "pos",                # optional step input, (1,) int64: the fed token's position
      "logits": "logits",               # step output: (1, V) or (1, 1, V)
      "prefill_logits": null,           # prefill output with the logits that follow the prompt,
                                        #   (1, V), (1, 1, V) or (1, P, V) (read at length - 1);
                                        #   null: the first token comes from a step fed
                                        #   `start_token` at position 0
      "start_token": 257,               # required when prefill_logits is null
      "state": [                        # step inputs carried from call to call
        {"input": "self_k_0", "init": null, "update": "new_self_k_0",
         "write": {"index": "pos", "axis": 2}},       # a cache: each step returns its slot
        {"input": "cross_k_0", "init": "cross_k_0", "update": null,
         "write": {"index": null, "axis": 2}},        # from prefill, into slots 0..P-1, constant
        {"input": "src_len", "init": "@prompt_length", "update": null},  # the (1,) true length
        {"input": "h", "init": "h", "update": "new_h"}                 # a whole recurrent state
      ],
      "eos": 258, "pad": 256,           # eos ends generation (may be null); pad fills prompts
      "max_position": 64,               # step positions must stay below this (cache capacity)
      "tokenizer": "bytes"              # optional: ids 0..255 are UTF-8 bytes (enables text I/O)
    }

State: the runtime keeps each state in one preallocated buffer of the step input's shape, for the
whole generation (`runtime.state`), and binds it to the step program without copying where the
backend allows. ``init`` fills it after the prefill (a prefill output, ``@prompt_length``, or
null: zeros / an empty cache); ``update`` is the step output that changes it. Without ``write``
the update replaces the whole state (same shape). With ``write`` the state is a cache along
``axis``: the init fills slots 0..n-1 (n = its size along the axis, at most the buffer's, so
prompt length classes of different P share one step), and the update, n slots wide, is written
in place at the slot given by the step input ``index`` (the fed position). Shapes are checked
once, when the entry is parsed; carried state is never re-validated.

Positions: with ``prefill_logits`` the k-th generated token (k = 0, 1, ...) is fed to the step at
position ``prompt_len + k``; without, ``start_token`` goes in at 0 and the k-th generated token at
``k + 1``. Generation stops at ``eos``, after ``max_new_tokens``, or when the next position would
reach ``max_position`` (``finish_reason`` says which).

Timing: ``ttft_ms`` runs from the call to the first generated token being known (prefill, plus
the first step for encoder-decoders, plus sampling); ``step_ms`` holds the time of every later
token; ``tokens_per_s`` is the decode rate over those later tokens. ``state_bytes`` is the size of
every carried state (KV caches, cross K/V, recurrent states): what decoding keeps in memory per
sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edgesdk.runtime import state as _state
from edgesdk.runtime.errors import ConfigError, InputError, IntegrityError

KEY = "generation"
STRATEGIES = ("greedy", "top_k")
_REQUIRED = ("prefill", "step", "prompt", "token", "logits", "state", "max_position")
_OPTIONAL = ("prompt_length", "position", "prefill_logits", "start_token", "eos", "pad", "tokenizer")
PROMPT_LENGTH = "@prompt_length"


@dataclass(frozen=True)
class StateSpec:
    input: str          # step input carried from call to call
    init: str | None    # prefill output, PROMPT_LENGTH, or None for zeros
    update: str | None  # step output that changes it after every step, or None (constant)
    axis: int | None = None   # with a write: the slot axis (the state is a cache along it)
    index: str | None = None  # with a write: the step input giving the slot the update goes to

    def to_dict(self) -> dict:
        d = {"input": self.input, "init": self.init, "update": self.update}
        if self.axis is not None:
            d["write"] = {"index": self.index, "axis": self.axis}
        return d


@dataclass(frozen=True)
class GenerationSpec:
    """The validated ``"generation"`` manifest entry (see the module docstring)."""

    prefill: tuple[str, ...]  # one program per prompt capacity, smallest first
    steps: tuple[str, ...]    # the step of every class: one name shared, or one per prefill (same order)
    prompt: str
    token: str
    logits: str
    state: tuple[StateSpec, ...]
    max_position: int
    prompt_length: str | None = None
    position: str | None = None
    prefill_logits: str | None = None
    start_token: int | None = None
    eos: int | None = None
    pad: int = 0
    tokenizer: str | None = None

    @property
    def step(self) -> str:
        """The step of the longest prompt class (the only one, for a shared step)."""
        return self.steps[-1]

    def step_for(self, prefill: str) -> str:
        """The step program that follows the prefill program ``prefill``."""
        return self.steps[0] if len(self.steps) == 1 else self.steps[self.prefill.index(prefill)]

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _REQUIRED + _OPTIONAL if k != "state"}
        d["prefill"] = list(self.prefill)
        d["step"] = self.steps[0] if len(self.steps) == 1 else list(self.steps)
        d["state"] = [s.to_dict() for s in self.state]
        return d


def _names(specs) -> list[str]:
    return [s.name for s in specs]


def parse_spec(d, programs: dict) -> GenerationSpec:
    """Validate a generation entry against the artifact's programs ({name: ProgramSpec}).

    Raises `IntegrityError` naming the bad field: the entry comes from an untrusted manifest (or
    from a model's ``edge_generation()``, where the converter turns it into a `ConfigError`).
    Every shape the loop relies on is checked here, once: states are never re-validated.
    """
    where = f"manifest {KEY}"
    if not isinstance(d, dict):
        raise IntegrityError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    missing = [k for k in _REQUIRED if k not in d]
    if unknown or missing:
        raise IntegrityError(f"{where}: unknown keys {unknown}, missing keys {missing} "
                             f"(keys: {', '.join(_REQUIRED + _OPTIONAL)})")

    def program(key, name):
        if not isinstance(name, str) or name not in programs:
            raise IntegrityError(f"{where}.{key}: {name!r} is not a program of this artifact "
                                 f"({', '.join(programs)})")
        return programs[name]

    names = d["prefill"] if isinstance(d["prefill"], list) else [d["prefill"]]
    if not names or len(set(map(str, names))) != len(names):
        raise IntegrityError(f"{where}.prefill: expected a program name or a non-empty list of distinct "
                             f"names, got {d['prefill']!r}")
    prefills = [program("prefill", n) for n in names]
    step_names = d["step"] if isinstance(d["step"], list) else [d["step"]]
    if len(step_names) not in (1, len(names)) or len(set(map(str, step_names))) != len(step_names):
        raise IntegrityError(f"{where}.step: expected a program name or a list of distinct names, one per prefill "
                             f"class ({len(names)}: {', '.join(map(str, names))}), got {d['step']!r}")
    steps = [program("step", n) for n in step_names]
    if set(step_names) & set(names):
        raise IntegrityError(f"{where}: prefill and step must be different programs")
    prefill, step = prefills[0], steps[0]
    p_in, p_out = _names(prefill.inputs), _names(prefill.outputs)
    s_in, s_out = _names(step.inputs), _names(step.outputs)
    for what, first, others, i_n, o_n in (("prefill", prefill, prefills[1:], p_in, p_out),
                                          ("step", step, steps[1:], s_in, s_out)):
        for other in others:
            if _names(other.inputs) != i_n or _names(other.outputs) != o_n:
                raise IntegrityError(f"{where}.{what}: {other.name!r} and {first.name!r} must have the same inputs "
                                     f"and outputs (prompt length classes of one program)")

    def name_in(key, names, what, optional=False):
        v = d.get(key)
        if v is None and optional:
            return None
        if not isinstance(v, str) or v not in names:
            raise IntegrityError(f"{where}.{key}: {v!r} is not {what} ({', '.join(names)})")
        return v

    def int_or_none(key, lo=0):
        v = d.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise IntegrityError(f"{where}.{key}: expected an int >= {lo}, got {v!r}")
        return v

    position = name_in("position", s_in, f"an input of {step.name!r}", optional=True)
    states = d["state"]
    if not isinstance(states, list):
        raise IntegrityError(f"{where}.state: expected a list, got {type(states).__name__}")
    parsed = []
    for i, s in enumerate(states):
        if not isinstance(s, dict) or not {"input", "init", "update"} <= set(s) <= {"input", "init", "update", "write"}:
            raise IntegrityError(f"{where}.state[{i}]: expected {{input, init, update[, write]}}, got {s!r}")
        if s["input"] not in s_in:
            raise IntegrityError(f"{where}.state[{i}].input: {s['input']!r} is not an input of "
                                 f"{step.name!r} ({', '.join(s_in)})")
        if s["init"] is not None and s["init"] != PROMPT_LENGTH and s["init"] not in p_out:
            raise IntegrityError(f"{where}.state[{i}].init: {s['init']!r} is not an output of "
                                 f"{prefill.name!r} ({', '.join(p_out)}), {PROMPT_LENGTH!r} or null")
        if s["update"] is not None and s["update"] not in s_out:
            raise IntegrityError(f"{where}.state[{i}].update: {s['update']!r} is not an output of "
                                 f"{step.name!r} ({', '.join(s_out)})")
        axis = index = None
        if "write" in s:
            w = s["write"]
            if not isinstance(w, dict) or set(w) != {"index", "axis"}:
                raise IntegrityError(f"{where}.state[{i}].write: expected {{index, axis}}, got {w!r}")
            axis, index = w["axis"], w["index"]
            if isinstance(axis, bool) or not isinstance(axis, int) or axis < 0:
                raise IntegrityError(f"{where}.state[{i}].write.axis: expected an int >= 0, got {axis!r}")
            if index is not None and (position is None or index != position):
                raise IntegrityError(f"{where}.state[{i}].write.index: {index!r} must be the step's position "
                                     f"input ({position!r}) or null")
            if s["update"] is not None and index is None:
                raise IntegrityError(f"{where}.state[{i}].write.index: a state with an update needs the index "
                                     f"that says where it goes (the position input)")
        parsed.append(StateSpec(s["input"], s["init"], s["update"], axis, index))
    spec = GenerationSpec(
        prefill=tuple(names), steps=tuple(step_names),
        prompt=name_in("prompt", p_in, f"an input of {prefill.name!r}"),
        prompt_length=name_in("prompt_length", p_in, f"an input of {prefill.name!r}", optional=True),
        token=name_in("token", s_in, f"an input of {step.name!r}"),
        position=position,
        logits=name_in("logits", s_out, f"an output of {step.name!r}"),
        prefill_logits=name_in("prefill_logits", p_out, f"an output of {prefill.name!r}", optional=True),
        state=tuple(parsed), max_position=int_or_none("max_position", 1),
        start_token=int_or_none("start_token"), eos=int_or_none("eos"), pad=int_or_none("pad") or 0,
        tokenizer=d.get("tokenizer"),
    )
    fed = {spec.token, spec.position} | {s.input for s in spec.state}
    if len(spec.state) != len({s.input for s in spec.state}) or fed - {None} != set(s_in):
        raise IntegrityError(f"{where}: the step's inputs ({', '.join(s_in)}) must each be fed exactly "
                             f"once: token, position or one state entry")
    fed_prefill = {spec.prompt, spec.prompt_length} - {None}
    if fed_prefill != set(p_in):
        raise IntegrityError(f"{where}: {prefill.name!r} takes {', '.join(p_in)}; only the prompt and "
                             f"prompt_length can be fed")
    if spec.prefill_logits is None and spec.start_token is None:
        raise IntegrityError(f"{where}: start_token is required when prefill_logits is null")
    if spec.tokenizer not in (None, "bytes"):
        raise IntegrityError(f"{where}.tokenizer: {spec.tokenizer!r} is not 'bytes' or null")
    caps = []
    for p in prefills:
        shape = p.inputs[p_in.index(spec.prompt)].shape
        if len(shape) != 2 or shape[0] != 1 or not isinstance(shape[1], int):
            raise IntegrityError(f"{where}.prompt: expected a static (1, P) input of {p.name!r}, got shape "
                                 f"{list(shape)}")
        caps.append(shape[1])
    if caps != sorted(set(caps)):
        raise IntegrityError(f"{where}.prefill: list the prompt length classes smallest first, with distinct "
                             f"capacities (got {dict(zip(names, caps))})")
    for p in prefills:  # a shared step meets every class; a step per class, its own
        _check_state_shapes(spec, [p], programs[spec.step_for(p.name)], where)
    return spec


def _check_state_shapes(spec: GenerationSpec, prefills, step, where: str) -> None:
    """Every init and update fits the state buffer it goes to (so the loop never checks again)."""
    s_in = {t.name: t for t in step.inputs}
    s_out = {t.name: t for t in step.outputs}
    for i, st in enumerate(spec.state):
        buf = s_in[st.input]
        shape = tuple(buf.shape)
        if not all(isinstance(x, int) for x in shape):
            raise IntegrityError(f"{where}.state[{i}]: {st.input!r} must have a static shape, got {list(shape)}")
        if st.axis is not None and st.axis >= len(shape):
            raise IntegrityError(f"{where}.state[{i}].write.axis: {st.axis} is out of range for {st.input!r} "
                                 f"of shape {list(shape)}")

        def fits(t, what, slots_max=None):
            got = tuple(t.shape)
            if t.dtype != buf.dtype:
                raise IntegrityError(f"{where}.state[{i}]: {what} {t.name!r} is {t.dtype}, {st.input!r} is {buf.dtype}")
            if st.axis is None:
                ok = got == shape
            else:
                ok = (len(got) == len(shape) and all(g == b for a, (g, b) in enumerate(zip(got, shape)) if a != st.axis)
                      and isinstance(got[st.axis], int) and 1 <= got[st.axis] <= (slots_max or shape[st.axis]))
            if not ok:
                rule = ("the same shape" if st.axis is None else
                        f"the same shape except along axis {st.axis}, where it may hold at most "
                        f"{slots_max or shape[st.axis]} slots")
                raise IntegrityError(f"{where}.state[{i}]: {what} {t.name!r} of shape {list(got)} does not fit "
                                     f"{st.input!r} of shape {list(shape)} (needs {rule})")
        if st.init not in (None, PROMPT_LENGTH):
            for p in prefills:
                fits(next(t for t in p.outputs if t.name == st.init), f"init (output of {p.name!r})")
        if st.update is not None:
            upd = s_out[st.update]
            room = None
            if st.axis is not None:  # the last write starts at max_position - 1
                room = shape[st.axis] - spec.max_position + 1
                if room < 1:
                    raise IntegrityError(f"{where}.max_position: {spec.max_position} exceeds the {shape[st.axis]} "
                                         f"slots of {st.input!r} along axis {st.axis}")
            fits(upd, "update", room)


@dataclass
class Generation:
    """What `Session.generate` returns."""

    tokens: list[int]                      # generated ids (prompt excluded; eos included if hit)
    prompt_tokens: int
    ttft_ms: float                         # call -> first generated token known
    step_ms: list[float] = field(default_factory=list)  # every later token
    finish_reason: str = "length"          # eos | length | capacity
    state_bytes: int = 0                   # carried decoding state (KV caches / recurrent state)
    text: str | None = None                # decoded text when the artifact declares a byte tokenizer

    @property
    def total_ms(self) -> float:
        return self.ttft_ms + sum(self.step_ms)

    @property
    def tpot_ms(self) -> float:
        """Mean time per output token after the first (nan with fewer than two tokens)."""
        return float(np.mean(self.step_ms)) if self.step_ms else float("nan")

    @property
    def tokens_per_s(self) -> float:
        """Decode rate after the first token."""
        s = sum(self.step_ms)
        return len(self.step_ms) / s * 1e3 if s > 0 else float("nan")

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "prompt_tokens": self.prompt_tokens, "ttft_ms": self.ttft_ms,
                "step_ms": self.step_ms, "tpot_ms": self.tpot_ms, "tokens_per_s": self.tokens_per_s,
                "finish_reason": self.finish_reason, "state_bytes": self.state_bytes, "text": self.text}


def encode_prompt(spec: GenerationSpec, prompt) -> np.ndarray:
    """Prompt ids as a 1-D int64 array: a list/array of ids, or text for a byte-tokenizer artifact."""
    if isinstance(prompt, str):
        if spec.tokenizer != "bytes":
            raise InputError("this artifact declares no tokenizer: pass token ids, not text")
        return np.frombuffer(prompt.encode("utf-8"), dtype=np.uint8).astype(np.int64)
    try:
        ids = np.asarray(prompt)
    except (TypeError, ValueError) as e:
        raise InputError(f"prompt: expected token ids, got {type(prompt).__name__}: {e}") from None
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise InputError(f"prompt: expected a 1-D sequence of integer ids, got shape {ids.shape} "
                         f"dtype {ids.dtype}")
    return ids.astype(np.int64)


def _sample(logits: np.ndarray, strategy: str, top_k: int, temperature: float, rng) -> int:
    if strategy == "greedy":
        return int(logits.argmax())  # float32 argmax == float64 argmax (exact widening)
    z = logits.reshape(-1).astype(np.float64)
    k = min(top_k, z.size)
    idx = np.argpartition(-z, k - 1)[:k]
    zk = z[idx] / temperature
    p = np.exp(zk - zk.max())
    return int(idx[rng.choice(k, p=p / p.sum())])


class _Loop:
    """Prefill once, then step: the part of generation shared by `generate` and `score`.

    A context manager: it holds a bound step program (`runtime.state`) whose input buffers carry
    the state from call to call; leaving it hands the binding back to the session's pool."""

    def __init__(self, session, prompt):
        spec = session.generation
        if spec is None:
            raise ConfigError(f"{session.path}: not a generation artifact (its manifest has no {KEY!r} "
                              f"entry; models declare one with edge_generation())")
        self.spec = spec
        self.ids = ids = encode_prompt(spec, prompt)
        n = self.n = int(ids.size)
        classes = []
        for name in spec.prefill:
            b = session.program(name)
            classes.append((next(s for s in b.spec.inputs if s.name == spec.prompt).shape[1], b))
        caps = [c for c, _ in classes]
        fits = [(c, b) for c, b in classes if (c == n if spec.prompt_length is None else c >= n)]
        if n < 1 or not fits:
            need = (f"exactly {' or '.join(map(str, caps))}" if spec.prompt_length is None
                    else f"1 to {caps[-1]}")
            raise InputError(f"prompt has {n} tokens; this artifact takes {need} (its prefill was exported "
                             f"for {'a capacity' if len(caps) == 1 else 'capacities'} of {', '.join(map(str, caps))}: "
                             f"export another capacity for longer prompts, e.g. prompt_lengths=[..., {max(n, 1)}])")
        self.cap, self.prefill = fits[0]
        self._pin = {s.name: s for s in self.prefill.spec.inputs}
        self._pout = [s.name for s in self.prefill.spec.outputs]
        self.step_binding = session.program(spec.step_for(self.prefill.spec.name))
        self.bound = None
        self.last_pos = -1

    def __enter__(self) -> "_Loop":
        spec = self.spec
        sin = [s.name for s in self.step_binding.spec.inputs]
        sout = [s.name for s in self.step_binding.spec.outputs]
        self.groups = _slot_groups(spec.state, self.step_binding.spec)
        self.bound = b = _state.bind(self.step_binding, _state.Stacked(self.groups))
        buf = dict(zip(sin, b.inputs))
        self.token_buf = buf[spec.token]
        self.pos_buf = buf[spec.position] if spec.position else None
        self.logits_at = sout.index(spec.logits)
        self.states = [(s, buf[s.input]) for s in spec.state]
        # (buffer, axis, output index) of the caches each step writes a slot of, and whole-state updates
        slot_states = [(s, a) for s, a in self.states if s.update is not None and s.axis is not None]
        self.slot_updates = [(a, s.axis, sout.index(s.update)) for s, a in slot_states]
        self.slot_inputs = [s.input for s, _ in slot_states]
        self.whole_updates = [(a, sout.index(s.update)) for s, a in self.states
                              if s.update is not None and s.axis is None]
        # whole-state updates the backend feeds back itself (ping-pong buffers), without copies
        self._state_at = [sin.index(s.input) for s in spec.state]
        pairs = [(sin.index(s.input), sout.index(s.update)) for s in spec.state
                 if s.update is not None and s.axis is None]
        if pairs and hasattr(b, "alias") and b.alias(pairs):
            self.whole_updates = []
        self._writes = None  # (destination, source) pairs, planned at the first step
        self.state_bytes = sum(int(a.nbytes) for _, a in self.states)
        if len(b.extent) != len(self.states):  # slots written so far per cache (cleared before reuse)
            b.extent[:] = [0] * len(self.states)
        return self

    def __exit__(self, *exc) -> None:
        if self.bound is None:
            return
        ext = self.bound.extent  # how far the caches were written: cleared before the next use
        for i, (s, buf) in enumerate(self.states):
            if s.axis is not None and s.update is not None:
                ext[i] = max(ext[i], min(self.last_pos + 1, buf.shape[s.axis]))
        _state.release(self.step_binding, self.bound)
        self.bound = None

    def first(self) -> tuple[np.ndarray, int]:
        """Run the prefill (and, without prefill logits, the start step): the logits of the first
        new token and the position the next fed token takes."""
        spec, n, cap = self.spec, self.n, self.cap
        padded = np.full((1, cap), spec.pad, dtype=self._pin[spec.prompt].np_dtype)
        padded[0, :n] = self.ids
        feed = {spec.prompt: padded}
        if spec.prompt_length is not None:
            feed[spec.prompt_length] = np.array([n], dtype=self._pin[spec.prompt_length].np_dtype)
        pout = dict(zip(self._pout, self.prefill.run(feed)))
        extent, inputs = self.bound.extent, self.bound.inputs
        for i, s in enumerate(spec.state):
            buf = inputs[self._state_at[i]]  # the current buffer (ping-pong states alternate)
            if s.init == PROMPT_LENGTH:
                buf[...] = n
                continue
            if s.axis is None:
                if s.init is None:
                    buf.fill(0)
                else:
                    np.copyto(buf, pout[s.init], casting="same_kind")
                continue
            # a cache: the init fills the first slots, and what a previous generation wrote after
            # them is cleared (masked anyway, but a non-finite leftover would poison the softmax)
            end = 0 if s.init is None else _state.write_slot(buf, pout[s.init], 0, s.axis)
            _state.clear_slots(buf, end, extent[i], s.axis)
            extent[i] = end
        if spec.prefill_logits is not None:
            logits = pout[spec.prefill_logits]
            if logits.ndim == 3 and logits.shape[1] == cap and cap > 1:
                logits = logits[:, n - 1]
            return logits, n
        if spec.max_position < 1:
            raise InputError("this artifact's step has no room for a token (max_position < 1)")
        return self.step(spec.start_token, 0), 1

    def step(self, token: int, pos: int) -> np.ndarray:
        """Feed ``token`` at ``pos``: one call of the step program on the bound buffers, then its
        new cache entries written in place at slot ``pos`` and whole states replaced."""
        self.token_buf.fill(token)
        if self.pos_buf is not None:
            self.pos_buf.fill(pos)
        self.last_pos = pos
        out = self.bound()
        slots, whole = self._writes or self._plan(out)
        for dst, src, n in slots:        # dst: the cache with its slot axis first
            dst[pos:pos + n] = src
        for dst, src in whole:
            np.copyto(dst, src, casting="same_kind")
        return out[self.logits_at]

    def _plan(self, out) -> tuple[list, list]:
        """Views for the step's writes: caches with the slot axis moved first, kept when the
        backend returns its outputs in the same arrays at every call. One numpy assignment per
        group of stacked caches (`runtime.state.Stacked`) where the backend placed both the caches
        and their updates there, else one per cache."""
        place, slots, done = getattr(self.bound, "placement", None), [], set()
        if isinstance(place, _state.Stacked) and getattr(self.bound, "fixed_outputs", False):
            for ins, outs in zip(self.groups[0::2], self.groups[1::2]):
                dst, src = place.stack(ins), place.stack(outs)
                k = [self.slot_inputs.index(n) for n in ins]
                if dst is None or src is None or any(
                        self.slot_updates[i][0] is not place.view(n) or out[self.slot_updates[i][2]] is not place.view(o)
                        for i, n, o in zip(k, ins, outs)):
                    continue
                axis = self.slot_updates[k[0]][1] + 1
                slots.append((np.moveaxis(dst, axis, 0), np.moveaxis(src, axis, 0), src.shape[axis]))
                done.update(k)
        slots += [(np.moveaxis(buf, axis, 0), np.moveaxis(out[k], axis, 0), out[k].shape[axis])
                  for i, (buf, axis, k) in enumerate(self.slot_updates) if i not in done]
        whole = [(buf, out[k]) for buf, k in self.whole_updates]
        if getattr(self.bound, "fixed_outputs", False):
            self._writes = (slots, whole)
        return slots, whole


def _slot_groups(states, step_spec) -> list[list[str]]:
    """Caches written a slot per step whose buffers and updates have equal shapes, dtypes and slot
    axes (every layer's keys, every layer's values), as alternating lists of input names and
    update (output) names, for `runtime.state.Stacked`. Groups of one are left out."""
    ins = {s.name: s for s in step_spec.inputs}
    outs = {s.name: s for s in step_spec.outputs}
    if set(ins) & set(outs):
        return []
    by: dict = {}
    for s in states:
        if s.update is None or s.axis is None or s.input not in ins or s.update not in outs:
            continue
        i, o = ins[s.input], outs[s.update]
        key = (tuple(i.shape), i.dtype, tuple(o.shape), o.dtype, s.axis)
        if all(isinstance(d, int) for d in key[0] + key[2]):
            by.setdefault(key, []).append(s)
    groups: list[list[str]] = []
    for members in by.values():
        if len(members) > 1:
            groups += [[s.input for s in members], [s.update for s in members]]
    return groups


def generate(session, prompt, max_new_tokens: int = 32, *, strategy: str = "greedy", top_k: int = 40,
             temperature: float = 1.0, seed: int | None = None, stop_at_eos: bool = True) -> Generation:
    """Run prefill then step programs of ``session`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if strategy == "top_k":
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ConfigError(f"top_k must be a positive int, got {top_k!r}")
        if not (isinstance(temperature, (int, float)) and temperature > 0 and np.isfinite(temperature)):
            raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    loop = _Loop(session, prompt)
    spec = loop.spec
    rng = np.random.default_rng(seed)
    clock = time.perf_counter_ns
    with loop:
        t0 = clock()
        logits, pos = loop.first()
        tok = _sample(logits, strategy, top_k, temperature, rng)
        ttft = (clock() - t0) / 1e6
        out = Generation([tok], loop.n, ttft, state_bytes=loop.state_bytes)
        finish = "length"
        step, steps, tokens = loop.step, out.step_ms, out.tokens
        while True:
            if stop_at_eos and spec.eos is not None and tok == spec.eos:
                finish = "eos"
                break
            if len(tokens) >= max_new_tokens:
                break
            if pos >= spec.max_position:
                finish = "capacity"
                break
            t = clock()
            tok = _sample(step(tok, pos), strategy, top_k, temperature, rng)
            steps.append((clock() - t) / 1e6)
            tokens.append(tok)
            pos += 1
    out.finish_reason = finish
    if spec.tokenizer == "bytes":
        out.text = bytes(t for t in out.tokens if t < 256).decode("utf-8", errors="replace")
    return out


def score(session, prompt, continuation) -> dict:
    """Teacher-forced scoring: feed ``continuation`` after ``prompt`` through the step program
    and return, per continuation token, its log-probability (nats) and whether it was the argmax.

    ``{"logprobs": [...], "correct": [...], "bits_per_token": float, "accuracy": float}`` —
    the model's quality measured on the artifact itself (e.g. held-out bits per character) —
    plus the calls' timings, as `generate` reports them: ``ttft_ms`` (the prefill, up to the first
    scored token's logits), ``step_ms`` (every later step) and ``state_bytes``.
    """
    loop = _Loop(session, prompt)
    cont = encode_prompt(loop.spec, continuation)
    if cont.size < 1:
        raise InputError("continuation: give at least one token to score")
    first = loop.n if loop.spec.prefill_logits is not None else 1
    if first + cont.size - 1 > loop.spec.max_position:
        raise InputError(f"continuation of {cont.size} tokens does not fit: the step's cache holds positions "
                         f"below {loop.spec.max_position}, the first fed one is {first}")
    logprobs, correct, steps = [], [], []
    clock = time.perf_counter_ns
    with loop:
        t0 = clock()
        logits, pos = loop.first()
        ttft = (clock() - t0) / 1e6
        for i, tok in enumerate(cont.tolist()):
            z = logits.reshape(-1).astype(np.float64)
            lse = z.max() + np.log(np.exp(z - z.max()).sum())
            logprobs.append(float(z[tok] - lse))
            correct.append(bool(int(np.argmax(z)) == tok))
            if i + 1 < cont.size:
                t = clock()
                logits = loop.step(tok, pos)
                steps.append((clock() - t) / 1e6)
                pos += 1
    return {"logprobs": logprobs, "correct": correct,
            "bits_per_token": float(-np.mean(logprobs) / np.log(2)), "accuracy": float(np.mean(correct)),
            "ttft_ms": ttft, "step_ms": steps, "state_bytes": loop.state_bytes}
