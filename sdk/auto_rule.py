"""The rule `target="auto"`, `quantize="auto"` and the pipeline's recommendation pick by
(`edgesdk.auto` explains it): which candidates compete, when a quantized one beats its target's
fp32, ties to the smaller artifact, and the quality verdict read from a converted artifact.

Example::

    from edgesdk.auto_rule import choose
    cands = [{"target": "onnx-cpu", "scheme": "fp32", "status": "measured", "latency_ms": 1.0, "size_bytes": 4096},
             {"target": "onnx-cpu", "scheme": "int8-static", "status": "measured", "latency_ms": 0.5,
              "size_bytes": 1024}]
    print(choose(cands)["scheme"], cands[1]["why"])
"""

from __future__ import annotations

import math

TIE = 0.03             # latencies within 3% of the fastest tie; the smaller artifact wins
FASTER_P = 0.05        # a quantized candidate beats fp32 when a sign test on the paired rounds says so at this level
AUTO_MAX_DROP = 0.01   # applied when a quantized artifact carries no gate threshold of its own

# ----------------------------------------------------------------------------- the rule

def latency_ms(profile: dict) -> float | None:
    """What candidates are ranked by: p50 per run, or a whole generation's p50 time."""
    gen = profile.get("generation")
    if gen:
        tp = (gen.get("tpot_ms") or {}).get("p50") or 0.0
        return gen["ttft_ms"]["p50"] + tp * max(gen.get("new_tokens", 1) - 1, 0)
    return profile.get("p50_ms")


def choose(cands: list[dict], tie: float = TIE) -> dict | None:
    """Pick among candidates (dicts with ``target``, ``scheme``, ``status``, ``latency_ms``,
    ``size_bytes``, and ``rounds_ms`` when `confirm` re-timed them side by side); only
    ``status == "measured"`` ones compete. Sets ``picked`` and ``why`` on every competing
    candidate and returns the pick (None when none competes)."""
    measured = [c for c in cands if c.get("status") == "measured" and c.get("latency_ms") is not None]
    fp32 = {c["target"]: c for c in measured if c["scheme"] == "fp32"}
    eligible = []
    for c in measured:
        c["picked"] = False
        base = fp32.get(c["target"])
        why = None if c["scheme"] == "fp32" or base is None else _not_faster_than(c, base, tie)
        if why:
            c["why"] = why
        else:
            eligible.append(c)
    if not eligible:
        return None
    best = min(c["latency_ms"] for c in eligible)
    tied = [c for c in eligible if c["latency_ms"] <= best * (1 + tie)]
    pick = min(tied, key=lambda c: (c.get("size_bytes") or math.inf, c["latency_ms"]))
    for c in eligible:
        if c is pick:
            continue
        if c in tied:
            c["why"] = (f"ties with the pick (within {tie:.0%}: {c['latency_ms']:.4g} vs {pick['latency_ms']:.4g} ms) "
                        f"but is larger ({_kib(c.get('size_bytes'))} vs {_kib(pick.get('size_bytes'))})")
        else:
            c["why"] = f"slower: {c['latency_ms']:.4g} ms, {c['latency_ms'] / pick['latency_ms']:.2f}x the pick"
    pick["picked"] = True
    pick["why"] = ("fastest that passed the gate" if len(tied) == 1 else
                   f"smallest of the {len(tied)} within {tie:.0%} of the fastest that passed the gate")
    if pick["scheme"] != "fp32" and pick["target"] in fp32:
        pick["why"] += f"; {pick['latency_ms'] / fp32[pick['target']]['latency_ms']:.2f}x fp32 on {pick['target']}"
        if pick.get("vs_fp32"):
            pick["why"] += f" ({pick['vs_fp32']})"
    return pick


def sign_test_p(wins: int, n: int) -> float:
    """One-sided sign test: the chance of at least ``wins`` of ``n`` paired rounds going one way
    when neither side is faster (each round a fair coin)."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def paired(a: list[float], b: list[float]) -> tuple[int, int, float, float]:
    """``a`` against ``b`` over rounds timed side by side (same length, round i of each from the
    same pass): (rounds where a was faster, rounds, median of the per-round ratios a/b, one-sided
    sign-test p that a is faster)."""
    ratios = sorted(x / y for x, y in zip(a, b))
    wins, n = sum(r < 1 for r in ratios), len(ratios)
    med = ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
    return wins, n, med, sign_test_p(wins, n)


def _not_faster_than(c: dict, base: dict, tie: float) -> str | None:
    """Why a quantized candidate ``c`` may not compete against ``base`` (its target's fp32), or None
    when it was shown faster: paired side-by-side rounds when both have them (same run of
    `confirm`), else a lead larger than the noise band ``tie``. Records the evidence in
    ``c["vs_fp32"]``."""
    t, lat, ref = c["target"], c["latency_ms"], base["latency_ms"]
    a, b = c.get("rounds_ms"), base.get("rounds_ms")
    if a and b:  # `settle` extends only its head-to-head group: the first rounds are one pass for all
        n = min(len(a), len(b))
        wins, n, med, p = paired(a[:n], b[:n])
        c["vs_fp32"] = f"faster in {wins}/{n} side-by-side rounds, median ratio {med:.3f}, sign test p={p:.3f}"
        if p <= FASTER_P and med < 1:
            return None
        return (f"not shown faster than fp32 on {t} side by side: {c['vs_fp32']} (needs p <= {FASTER_P:g}); "
                f"fp32 keeps the target")
    if lat > ref:
        return f"slower than fp32 on {t} ({lat:.4g} vs {ref:.4g} ms, {lat / ref:.2f}x)"
    if lat > ref * (1 - tie):
        return (f"within the {tie:.0%} noise band of fp32 on {t} ({lat:.4g} vs {ref:.4g} ms, {lat / ref:.2f}x) and "
                f"not re-timed side by side: fp32 keeps the target")
    c["vs_fp32"] = f"{lat / ref:.2f}x fp32 in separate profiles"
    return None


def _kib(b) -> str:
    return "?" if b is None else f"{b / 1024:.1f} KiB"


def gate_verdict(manifest, max_drop=None) -> tuple[bool | None, str]:
    """(passed, quality text) of a converted artifact, from the gate the conversion ran: fp32
    artifacts passed verification; a quantized one passed its accuracy gate (the default
    thresholds per kind of output, or a numeric ``max_drop``). Only an artifact converted with
    the gate off (``max_drop=None``, or by a converter that records no threshold) is held here
    to AUTO_MAX_DROP: auto never picks an artifact whose quality nobody checked."""
    q = manifest.quantization or {}
    v = manifest.verification or {}
    g = q.get("gate")
    if g is None:
        err = v.get("max_abs_err")
        return bool(v.get("passed", True)), ("verified vs PyTorch" + (f" (max abs diff {err:.2g})" if err is not None else ""))
    basis = f" ({g['drop_basis']})" if g.get("drop_basis") else ""
    drop = "" if g.get("drop") is None else f"drop {g['drop']:.4f}"
    if g.get("mode") == "off" or (g.get("mode") is None and g.get("max_drop") is None):
        if g.get("drop") is None:
            return None, f"not scored: {g.get('drop_basis') or 'the gate could not score its outputs'}"
        thr = AUTO_MAX_DROP if max_drop in (None, "default") else max_drop
        return g["drop"] <= thr, f"{drop} vs max_drop {thr:g} (gate off at conversion; applied by auto){basis}"
    if g.get("passed") is None:
        why = "; ".join(f"{n['output']}: {n['why']}" for n in g.get("not_scorable") or []) or g.get("drop_basis")
        return None, f"not scored: {why or 'the gate could not score its outputs'}"
    if g.get("mode") == "default":
        th = g.get("thresholds") or {}
        rule = (f"default gate (top-1 >= {th.get('min_top1_agreement', 0.99):.0%}, min cosine >= "
                f"{th.get('min_cosine', 0.99):g})")
        if g.get("failing"):
            return False, f"{rule} failed: {'; '.join(g['failing'])}"
        return bool(g["passed"]), f"{drop}{basis}, {rule} passed" if drop else f"{rule} passed"
    return bool(g["passed"]), f"{drop} vs max_drop {g['max_drop']:g}{basis}"
