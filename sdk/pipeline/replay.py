"""A family's quality function read from a generation profile's own runs.

On an emulated device (the HTP emulator, a software GPU) one generation takes seconds of host
time, and the profile's timed generations and the quality score's generations are the same kind
of work: a prefill, then one step per token. So the pipeline times the score's runs instead of a
random prompt (`runtime.profile`'s ``workload``) and reads the quality from them:

- `record` runs the quality function once against a stand-in runner that only notes its
  ``generate`` / ``score`` calls (the prompts, the continuations, how many tokens), and returns them
  as a workload. A quality function that does anything else with its runner (``run``, ``map``,
  sampling options) cannot be recorded: None, and the pipeline scores it apart as before.
- `replay` runs the quality function again against a runner that answers each call with the
  profile's output for it, and checks every call is the one recorded (a function whose calls depend
  on the answers is refused: None, scored apart).

The artifact is a deterministic function of its inputs, so the replayed quality is the one the
function computes through `Runner.artifact` on the same device and thread count
(tests/test_generate.py checks it equal on a real artifact).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np


class _Unsupported(Exception):
    """The quality function asked the runner for something a workload cannot hold."""


def _ids(tokens) -> Any:
    if isinstance(tokens, str):
        return tokens
    return [int(t) for t in np.asarray(tokens).reshape(-1).tolist()]


def _call(kind: str, prompt, arg, kw: dict) -> dict:
    if kw:
        raise _Unsupported(f"{kind} with {sorted(kw)}")
    if kind == "generate":
        return {"prompt": _ids(prompt), "max_new_tokens": int(arg)}
    return {"prompt": _ids(prompt), "continuation": _ids(arg)}


class _Stub:
    """What both runners share: the Runner attributes a quality function may read, nothing runnable."""

    kind, batch = "artifact", None

    def run(self, *a, **k):
        raise _Unsupported("run")

    map = run


class _Recorder(_Stub):
    def __init__(self):
        self.calls: list[dict] = []

    def generate(self, prompt, max_new_tokens: int = 32, **kw):
        from edgesdk.runtime.generate import Generation
        self.calls.append(_call("generate", prompt, max_new_tokens, kw))
        return Generation([], len(self.calls[-1]["prompt"]), 0.0)

    def score(self, prompt, continuation) -> dict:
        self.calls.append(_call("score", prompt, continuation, {}))
        n = len(self.calls[-1]["continuation"])
        return {"logprobs": [0.0] * n, "correct": [False] * n, "bits_per_token": 0.0, "accuracy": 0.0}


class _Replayer(_Stub):
    def __init__(self, calls: list[dict], outputs: list[dict]):
        self.calls, self.outputs, self.i = calls, outputs, 0

    def _answer(self, call: dict) -> dict:
        if self.i >= len(self.calls) or call != self.calls[self.i]:
            raise _Unsupported("the quality function's calls changed with the answers")
        self.i += 1
        return self.outputs[self.i - 1]

    def generate(self, prompt, max_new_tokens: int = 32, **kw):
        from edgesdk.runtime.generate import Generation
        out = self._answer(_call("generate", prompt, max_new_tokens, kw))
        return Generation(list(out["tokens"]), int(out["prompt_tokens"]), 0.0, finish_reason=out["finish_reason"],
                          text=out.get("text"))

    def score(self, prompt, continuation) -> dict:
        return dict(self._answer(_call("score", prompt, continuation, {})))


def record(quality: Callable) -> list[dict] | None:
    """The ``generate`` / ``score`` calls ``quality(runner)`` makes, as a `runtime.profile` workload
    (None: it does something a workload cannot hold, or makes no such call)."""
    rec = _Recorder()
    try:
        quality(rec)
    except Exception:  # noqa: BLE001 - unsupported (`_Unsupported`), or failing on the stand-in's answers: scored apart
        return None
    return rec.calls or None


def replay(quality: Callable, workload: list[dict], outputs: list[dict]) -> float | None:
    """``quality(runner)`` where every call is answered by the profile's output for it (None: the
    function's calls were not the recorded ones)."""
    if len(outputs) != len(workload) or any(o is None for o in outputs):
        return None
    r = _Replayer(workload, outputs)
    try:
        value = float(quality(r))
    except _Unsupported:
        return None
    return value if r.i == len(workload) else None
