"""How `target="auto"` measures its candidates before `edgesdk.auto_rule.choose` picks: an
isolated profile each at its best thread count (`measure_and_choose`), the close contenders
re-timed side by side in interleaved rounds (`confirm`), and, where the pick's lead over a
contender (or a quantized contender's lead over its target's fp32) is still inside the noise,
more head-to-head rounds among just those until a sign test decides or a round budget runs out
(`settle`). Every candidate's ``latency_ms`` is then the median of all its side-by-side rounds.

Example::

    from edgesdk.auto_measure import measure_and_choose
    cands = [{"target": "onnx-cpu", "scheme": "fp32", "status": "converted", "path": "out/m-onnx-cpu",
              "size_bytes": 4096}, ...]
    pick = measure_and_choose(cands, iters=100, threads="auto")
"""

from __future__ import annotations

from edgesdk.auto_rule import FASTER_P, choose, latency_ms, paired
from edgesdk.runtime.errors import SdkError

CONFIRM_WITHIN = 0.15  # candidates within 15% of the fastest are re-timed side by side before the pick
CONFIRM_ROUNDS = 8
SETTLE_BAND = 0.05     # a comparison whose median paired ratio is within 5% of 1 and no sign test decides...
SETTLE_MAX_ROUNDS = 32  # ...gets more head-to-head rounds, in chunks of CONFIRM_ROUNDS, up to this many in all


def measure_and_choose(cands: list[dict], *, iters: int = 100, threads="auto", isolate: bool = True,
                       progress=None) -> dict | None:
    """Profile every converted candidate (isolated, ``threads``: ``"auto"`` sweeps the counts) and
    `choose`; candidates that competed and did not win get status ``"lost"``."""
    from edgesdk import runtime
    say = progress or (lambda msg: None)
    todo = [c for c in cands if c["status"] == "converted"]
    for i, c in enumerate(todo, 1):
        try:
            say(f"[{i}/{len(todo)}] {c['target']} {c['scheme']}: profiling (isolated={isolate}, threads {threads})")
            rep = runtime.profile(c["path"], iters=iters, threads=threads, isolate=isolate, per_op=False)
        except SdkError as e:
            c.update(status="failed", why=f"profiling: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            continue
        prof = {"p50_ms": rep.p50_ms, "generation": rep.extra.get("generation")}
        c.update(status="measured", p50_ms=rep.p50_ms, latency_ms=latency_ms(prof), threads=rep.threads,
                 cv=rep.cv, settled=rep.settled, memory_mb=rep.memory.get("run_peak_mb"),
                 gflops_per_s=rep.gflops_per_s)
    confirm(cands, progress=say)
    settle(cands, progress=say)
    pick = choose(cands)
    for c in cands:
        if c["status"] == "measured" and not c.get("picked"):
            c["status"] = "lost"
    return pick


def confirm(cands: list[dict], within: float = CONFIRM_WITHIN, rounds: int = CONFIRM_ROUNDS, progress=None) -> None:
    """Re-time the close contenders side by side (`runtime.profile.interleaved`) so a burst of load
    from other processes during one candidate's profile cannot decide the pick: every measured
    candidate within ``within`` of the fastest, and the fp32 candidate of each of their targets
    (the "never slower than fp32" baseline), again with any candidate that comes within reach once
    they are re-timed. Their ``latency_ms`` becomes the median of the interleaved blocks; the
    profile's figure stays in ``profile_latency_ms``."""
    from edgesdk.runtime.profile import interleaved
    from edgesdk.runtime.stats import median
    measured = [c for c in cands if c.get("status") == "measured" and c.get("latency_ms") is not None]
    if len(measured) < 2:
        return
    timed: set[int] = set()
    # A candidate whose isolated profile was flattered by a quiet moment loses its lead once re-timed;
    # then others come within reach of the new fastest, so repeat until the close set was all timed
    # together (a few rounds at most: each adds at least one candidate).
    for _ in range(len(measured)):
        best = min(c["latency_ms"] for c in measured)
        close = [c for c in measured if c["latency_ms"] <= best * (1 + within)]
        targets = {c["target"] for c in close}
        close += [c for c in measured if c["scheme"] == "fp32" and c["target"] in targets and c not in close]
        close += [c for c in measured if id(c) in timed and c not in close]  # all the figures from one run
        if len(close) < 2 or all(id(c) in timed for c in close):
            return
        if progress:
            progress(f"confirming {len(close)} close candidates side by side ({rounds} rounds)")
        blocks = interleaved([(c["path"], c["threads"]) for c in close], rounds=rounds)
        for c, b in zip(close, blocks):
            c.setdefault("profile_latency_ms", c["latency_ms"])
            c.update(latency_ms=median(b), rounds_ms=list(b), confirmed=True)
            timed.add(id(c))


def _undecided(a: dict, b: dict, band: float) -> bool:
    """True when ``a`` and ``b``'s paired rounds neither differ by more than ``band`` (median
    ratio) nor show either side faster by a sign test at FASTER_P."""
    _, _, med, p_a = paired(a["rounds_ms"], b["rounds_ms"])
    p_b = paired(b["rounds_ms"], a["rounds_ms"])[3]  # equal rounds count for neither side
    return abs(med - 1) <= band and min(p_a, p_b) > FASTER_P


def settle(cands: list[dict], band: float = SETTLE_BAND, chunk: int = CONFIRM_ROUNDS,
           max_rounds: int = SETTLE_MAX_ROUNDS, progress=None) -> None:
    """After `confirm`: the candidate `choose` would pick now, every re-timed candidate within
    ``band`` of its latency (either side), and the fp32 of each of their targets are timed head to
    head in ``chunk`` more interleaved rounds, appended to their paired rounds, while any of the
    comparisons the rule makes among them (each contender against the pick, each quantized one
    against its target's fp32) is undecided (`_undecided`) and fewer than ``max_rounds`` rounds
    were run. A close call is thus decided on more evidence instead of one run's noise; a real
    tie stays a tie (fp32 keeps its target, the smaller artifact wins among equals)."""
    from edgesdk.runtime.profile import interleaved
    from edgesdk.runtime.stats import median
    timed = [c for c in cands if c.get("status") == "measured" and c.get("rounds_ms")]
    if len(timed) < 2 or len({len(c["rounds_ms"]) for c in timed}) != 1:
        return  # nothing re-timed side by side, or not in one pass: no paired rounds to extend
    trial = [dict(c) for c in cands]  # choose writes `why` / `picked`; the real call comes after
    got = choose(trial)
    pick = next((c for c, t in zip(cands, trial) if t is got), None)
    if pick is None or not pick.get("rounds_ms"):
        return
    ref = pick["latency_ms"]
    group = [pick] + [c for c in timed if c is not pick and abs(c["latency_ms"] / ref - 1) <= band]
    fp32 = {c["target"]: c for c in timed if c["scheme"] == "fp32"}
    group += [fp32[t] for t in {c["target"] for c in group} if t in fp32 and fp32[t] not in group]
    pairs = [(c, pick) for c in group if c is not pick]
    pairs += [(c, fp32[c["target"]]) for c in group if c["scheme"] != "fp32" and c["target"] in fp32]
    while (len(group) > 1 and len(pick["rounds_ms"]) < max_rounds
           and any(_undecided(a, b, band) for a, b in pairs)):
        if progress:
            progress(f"close call among {len(group)} candidates: {chunk} more head-to-head rounds "
                     f"({len(pick['rounds_ms'])} so far, at most {max_rounds})")
        blocks = interleaved([(c["path"], c["threads"]) for c in group], rounds=chunk)
        for c, b in zip(group, blocks):
            c["rounds_ms"] = c["rounds_ms"] + list(b)
            c.update(latency_ms=median(c["rounds_ms"]), settled_rounds=len(c["rounds_ms"]))
