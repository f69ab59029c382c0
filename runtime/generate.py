"""Autoregressive generation over exported programs, in numpy (no torch).

A generation artifact holds two programs, a *prefill* run once on the prompt and a *step* run
once per new token, plus a ``"generation"`` entry in its manifest that says how to wire them.
The model declares that entry with ``edge_generation()`` next to ``edge_programs()``; the
converter checks every name in it against the exported programs and records it. Three shapes of
model fit one loop:

- **encoder-decoder**: prefill = ``encode(src, src_len) -> cross_kv, src_mask``; the step starts
  from ``start_token`` (bos) at position 0; states: a self-attention KV cache (zeros at first,
  updated by every step) and the cross K/V (from prefill, constant).
- **decoder-only with a KV cache**: prefill = ``prefill(tokens, length) -> logits, kv``; the first
  token comes from the prefill's logits and is fed to the step at position ``prompt length``.
- **recurrent (Mamba)**: prefill -> logits, conv_state, ssm_state; the step updates both states.

The manifest entry (every name is a program, input or output name of the artifact)::

    "generation": {
      "prefill": "encode",              # program run once on the prompt
      "step": "decode_step",            # program run once per generated token
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
        {"input": "self_kv", "init": null, "update": "new_self_kv"},   # zeros, then updated
        {"input": "cross_kv", "init": "cross_kv", "update": null},     # from prefill, constant
        {"input": "src_len", "init": "@prompt_length", "update": null} # the (1,) true length
      ],
      "eos": 258, "pad": 256,           # eos ends generation (may be null); pad fills prompts
      "max_position": 64,               # step positions must stay below this (cache capacity)
      "tokenizer": "bytes"              # optional: ids 0..255 are UTF-8 bytes (enables text I/O)
    }

Positions: with ``prefill_logits`` the k-th generated token (k = 0, 1, ...) is fed to the step at
position ``prompt_len + k``; without, ``start_token`` goes in at 0 and the k-th generated token at
``k + 1``. Generation stops at ``eos``, after ``max_new_tokens``, or when the next position would
reach ``max_position`` (``finish_reason`` says which).

Timing: ``ttft_ms`` runs from the call to the first generated token being known (prefill, plus
the first step for encoder-decoders, plus sampling); ``step_ms`` holds the time of every later
token; ``tokens_per_s`` is the decode rate over those later tokens. ``state_bytes`` is the size of
the carried state (KV caches or recurrent states): what decoding keeps in memory per sequence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from runtime.errors import ConfigError, InputError, IntegrityError

KEY = "generation"
STRATEGIES = ("greedy", "top_k")
_REQUIRED = ("prefill", "step", "prompt", "token", "logits", "state", "max_position")
_OPTIONAL = ("prompt_length", "position", "prefill_logits", "start_token", "eos", "pad", "tokenizer")
PROMPT_LENGTH = "@prompt_length"


@dataclass(frozen=True)
class StateSpec:
    input: str          # step input carried from call to call
    init: str | None    # prefill output, PROMPT_LENGTH, or None for zeros
    update: str | None  # step output that replaces it after every step, or None (constant)


@dataclass(frozen=True)
class GenerationSpec:
    """The validated ``"generation"`` manifest entry (see the module docstring)."""

    prefill: str
    step: str
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

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _REQUIRED + _OPTIONAL if k != "state"}
        d["state"] = [{"input": s.input, "init": s.init, "update": s.update} for s in self.state]
        return d


def _names(specs) -> list[str]:
    return [s.name for s in specs]


def parse_spec(d, programs: dict) -> GenerationSpec:
    """Validate a generation entry against the artifact's programs ({name: ProgramSpec}).

    Raises `IntegrityError` naming the bad field: the entry comes from an untrusted manifest (or
    from a model's ``edge_generation()``, where the converter turns it into a `ConfigError`).
    """
    where = f"manifest {KEY}"
    if not isinstance(d, dict):
        raise IntegrityError(f"{where}: expected an object, got {type(d).__name__}")
    unknown = sorted(set(d) - set(_REQUIRED) - set(_OPTIONAL))
    missing = [k for k in _REQUIRED if k not in d]
    if unknown or missing:
        raise IntegrityError(f"{where}: unknown keys {unknown}, missing keys {missing} "
                             f"(keys: {', '.join(_REQUIRED + _OPTIONAL)})")

    def program(key):
        name = d[key]
        if name not in programs:
            raise IntegrityError(f"{where}.{key}: {name!r} is not a program of this artifact "
                                 f"({', '.join(programs)})")
        return programs[name]

    prefill, step = program("prefill"), program("step")
    if prefill.name == step.name:
        raise IntegrityError(f"{where}: prefill and step must be different programs")
    p_in, p_out = _names(prefill.inputs), _names(prefill.outputs)
    s_in, s_out = _names(step.inputs), _names(step.outputs)

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

    states = d["state"]
    if not isinstance(states, list):
        raise IntegrityError(f"{where}.state: expected a list, got {type(states).__name__}")
    parsed = []
    for i, s in enumerate(states):
        if not isinstance(s, dict) or set(s) != {"input", "init", "update"}:
            raise IntegrityError(f"{where}.state[{i}]: expected {{input, init, update}}, got {s!r}")
        if s["input"] not in s_in:
            raise IntegrityError(f"{where}.state[{i}].input: {s['input']!r} is not an input of "
                                 f"{step.name!r} ({', '.join(s_in)})")
        if s["init"] is not None and s["init"] != PROMPT_LENGTH and s["init"] not in p_out:
            raise IntegrityError(f"{where}.state[{i}].init: {s['init']!r} is not an output of "
                                 f"{prefill.name!r} ({', '.join(p_out)}), {PROMPT_LENGTH!r} or null")
        if s["update"] is not None and s["update"] not in s_out:
            raise IntegrityError(f"{where}.state[{i}].update: {s['update']!r} is not an output of "
                                 f"{step.name!r} ({', '.join(s_out)})")
        parsed.append(StateSpec(s["input"], s["init"], s["update"]))
    spec = GenerationSpec(
        prefill=prefill.name, step=step.name,
        prompt=name_in("prompt", p_in, f"an input of {prefill.name!r}"),
        prompt_length=name_in("prompt_length", p_in, f"an input of {prefill.name!r}", optional=True),
        token=name_in("token", s_in, f"an input of {step.name!r}"),
        position=name_in("position", s_in, f"an input of {step.name!r}", optional=True),
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
    shape = prefill.inputs[p_in.index(spec.prompt)].shape
    if len(shape) != 2 or shape[0] != 1 or not isinstance(shape[1], int):
        raise IntegrityError(f"{where}.prompt: expected a static (1, P) input, got shape {list(shape)}")
    return spec


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
    z = logits.reshape(-1).astype(np.float64)
    if strategy == "greedy":
        return int(np.argmax(z))
    k = min(top_k, z.size)
    idx = np.argpartition(-z, k - 1)[:k]
    zk = z[idx] / temperature
    p = np.exp(zk - zk.max())
    return int(idx[rng.choice(k, p=p / p.sum())])


class _Loop:
    """Prefill once, then step: the part of generation shared by `generate` and `score`."""

    def __init__(self, session, prompt):
        spec = session.generation
        if spec is None:
            raise ConfigError(f"{session.path}: not a generation artifact (its manifest has no {KEY!r} "
                              f"entry; models declare one with edge_generation())")
        self.spec = spec
        self.ids = ids = encode_prompt(spec, prompt)
        self.prefill, self.step_prog = session.program(spec.prefill), session.program(spec.step)
        pin = {s.name: s for s in self.prefill.spec.inputs}
        self.cap = cap = pin[spec.prompt].shape[1]
        n = self.n = int(ids.size)
        if n < 1 or n > cap or (spec.prompt_length is None and n != cap):
            need = f"exactly {cap}" if spec.prompt_length is None else f"1 to {cap}"
            raise InputError(f"prompt has {n} tokens; this artifact takes {need} (its prefill was exported "
                             f"for a capacity of {cap}: export another capacity for longer prompts)")
        self._pin = pin
        sin = {s.name: s for s in self.step_prog.spec.inputs}
        self._sin = sin
        self._sout = [s.name for s in self.step_prog.spec.outputs]
        self._tok_dtype = sin[spec.token].np_dtype
        self._pos_dtype = sin[spec.position].np_dtype if spec.position else None
        self.carried = [s for s in spec.state if s.update is not None]
        self.state: dict = {}
        self.state_bytes = 0

    def first(self) -> tuple[np.ndarray, int]:
        """Run the prefill (and, without prefill logits, the start step): the logits of the first
        new token and the position the next fed token takes."""
        spec, n, cap = self.spec, self.n, self.cap
        padded = np.full((1, cap), spec.pad, dtype=self._pin[spec.prompt].np_dtype)
        padded[0, :n] = self.ids
        length = np.array([n], dtype=np.int64)
        feed = {spec.prompt: padded}
        if spec.prompt_length is not None:
            feed[spec.prompt_length] = length.astype(self._pin[spec.prompt_length].np_dtype)
        pout = dict(zip((s.name for s in self.prefill.spec.outputs), self.prefill.run(feed)))
        for s in spec.state:
            want = self._sin[s.input]
            if s.init is None:
                self.state[s.input] = np.zeros(want.shape, dtype=want.np_dtype)
            elif s.init == PROMPT_LENGTH:
                self.state[s.input] = length.reshape(want.shape).astype(want.np_dtype)
            else:
                self.state[s.input] = pout[s.init]
        self.state_bytes = sum(int(self.state[s.input].nbytes) for s in self.carried)
        if spec.prefill_logits is not None:
            logits = pout[spec.prefill_logits]
            if logits.ndim == 3 and logits.shape[1] == cap and cap > 1:
                logits = logits[:, n - 1]
            return logits, n
        if spec.max_position < 1:
            raise InputError("this artifact's step has no room for a token (max_position < 1)")
        return self.step(spec.start_token, 0), 1

    def step(self, token: int, pos: int) -> np.ndarray:
        spec = self.spec
        feed = {spec.token: np.array([[token]], dtype=self._tok_dtype), **self.state}
        if spec.position:
            feed[spec.position] = np.array([pos], dtype=self._pos_dtype)
        out = dict(zip(self._sout, self.step_prog.run(feed)))
        for s in self.carried:
            self.state[s.input] = out[s.update]
        return out[spec.logits]


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
    t0 = time.perf_counter_ns()
    logits, pos = loop.first()
    tok = _sample(logits, strategy, top_k, temperature, rng)
    ttft = (time.perf_counter_ns() - t0) / 1e6
    out = Generation([tok], loop.n, ttft, state_bytes=loop.state_bytes)
    finish = "length"
    while True:
        if stop_at_eos and spec.eos is not None and tok == spec.eos:
            finish = "eos"
            break
        if len(out.tokens) >= max_new_tokens:
            break
        if pos >= spec.max_position:
            finish = "capacity"
            break
        t = time.perf_counter_ns()
        tok = _sample(loop.step(tok, pos), strategy, top_k, temperature, rng)
        out.step_ms.append((time.perf_counter_ns() - t) / 1e6)
        out.tokens.append(tok)
        pos += 1
    out.finish_reason = finish
    if spec.tokenizer == "bytes":
        out.text = bytes(t for t in out.tokens if t < 256).decode("utf-8", errors="replace")
    return out


def score(session, prompt, continuation) -> dict:
    """Teacher-forced scoring: feed ``continuation`` after ``prompt`` through the step program
    and return, per continuation token, its log-probability (nats) and whether it was the argmax.

    ``{"logprobs": [...], "correct": [...], "bits_per_token": float, "accuracy": float}`` —
    the model's quality measured on the artifact itself (e.g. held-out bits per character).
    """
    loop = _Loop(session, prompt)
    cont = encode_prompt(loop.spec, continuation)
    if cont.size < 1:
        raise InputError("continuation: give at least one token to score")
    logits, pos = loop.first()
    if pos + cont.size - 1 > loop.spec.max_position:
        raise InputError(f"continuation of {cont.size} tokens does not fit: the step's cache holds positions "
                         f"below {loop.spec.max_position}, the first fed one is {pos}")
    logprobs, correct = [], []
    for i, tok in enumerate(cont.tolist()):
        z = logits.reshape(-1).astype(np.float64)
        lse = z.max() + np.log(np.exp(z - z.max()).sum())
        logprobs.append(float(z[tok] - lse))
        correct.append(bool(int(np.argmax(z)) == tok))
        if i + 1 < cont.size:
            logits = loop.step(tok, pos)
            pos += 1
    return {"logprobs": logprobs, "correct": correct,
            "bits_per_token": float(-np.mean(logprobs) / np.log(2)), "accuracy": float(np.mean(correct))}
