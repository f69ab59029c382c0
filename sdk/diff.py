"""`edgesdk diff A/results.json B/results.json`: what changed between two pipeline runs.

Artifacts are matched by key (``family/model/target/scheme``). Reported:

- inputs: the hashes of weights, exported graph, quantization config and calibration set;
- versions (torch, ExecuTorch, ONNX Runtime, LiteRT, QNN, coremltools...) and the machine;
- metrics: status, quality, size (any change), latency percentiles (as information);
- latency regressions, decided on the raw samples of both runs, not on a fixed percentage:
  B is slower than A when (1) a one-sided Mann-Whitney U test says so (p < ``alpha``), (2) the
  95% bootstrap confidence interval of median(B) / median(A) lies wholly above
  ``(1 + max(min_effect, noise)) * exp(between)``, where ``noise`` is the relative spread
  (IQR / median) of the two runs' samples and ``between`` the two runs' disagreement across all
  artifacts (the machine-wide drift plus three robust standard deviations of the per-artifact
  log ratios, from 4 artifacts up), and (3) the two runs are apart beyond their own spread:
  median(B) > p90(A) and p10(B) > median(A). A shift inside the runs' own jitter, one its peers
  show as well, or a run that flips between two modes (a thread pool waking up or not) is never
  flagged. Improvements are reported the same way (never an error).

Example::

    from edgesdk.diff import diff, format_diff
    d = diff(lockfile.read("run1"), lockfile.read("run2"))
    print(format_diff(d)); exit(1 if d["regressions"] else 0)
"""

from __future__ import annotations

import math

import numpy as np

ALPHA = 0.01
MIN_EFFECT = 0.10
RESAMPLES = 2000
HASH_KEYS = ("weights", "graph", "quant_config", "calibration")
VALUE_METRICS = ("quality", "size_bytes")
LATENCY_METRICS = ("p50_ms", "p90_ms", "p99_ms", "first_run_ms", "peak_rss_mb")


# ----------------------------------------------------------------------------- statistics

def _rank(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    i = 0
    n = len(x)
    while i < n:
        j = i
        while j + 1 < n and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def mann_whitney_greater(b, a) -> tuple[float, float]:
    """One-sided Mann-Whitney U test that ``b`` tends to be larger than ``a``: (U_b, p).

    Normal approximation with tie and continuity corrections (fine for the >= 20 samples a
    profile holds)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    n1, n2 = len(b), len(a)
    if n1 == 0 or n2 == 0:
        return math.nan, math.nan
    both = np.concatenate([b, a])
    r = _rank(both)
    u = r[:n1].sum() - n1 * (n1 + 1) / 2.0
    mu = n1 * n2 / 2.0
    _, counts = np.unique(both, return_counts=True)
    n = n1 + n2
    tie = (counts ** 3 - counts).sum() / (n * (n - 1)) if n > 1 else 0.0
    sigma = math.sqrt(n1 * n2 / 12.0 * ((n + 1) - tie))
    if sigma == 0:
        return float(u), 1.0
    z = (u - mu - 0.5) / sigma
    return float(u), float(0.5 * math.erfc(z / math.sqrt(2)))


def median_ratio_ci(a, b, resamples: int = RESAMPLES, seed: int = 0, chunk: int = 250) -> tuple[float, float, float]:
    """median(b)/median(a) and its 95% percentile-bootstrap CI (each run resampled independently)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    ratios = []
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        ma = np.median(a[rng.integers(0, len(a), size=(k, len(a)))], axis=1)
        mb = np.median(b[rng.integers(0, len(b), size=(k, len(b)))], axis=1)
        ratios.append(mb / ma)
    ratios = np.concatenate(ratios)
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(np.median(b) / np.median(a)), float(lo), float(hi)


def relative_spread(x) -> float:
    """IQR / median: how much a run's samples jitter, robust to the outliers every machine has."""
    x = np.asarray(x, np.float64)
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return float((q3 - q1) / med) if med > 0 else math.inf


def between_run_noise(log_ratios: list[float], min_artifacts: int = 4) -> float:
    """How much the two runs disagree on the artifacts as a whole (log scale): the absolute median
    log ratio (a machine-wide drift) plus three robust standard deviations (1.4826 MAD) of the
    per-artifact log ratios. An artifact must move further than its peers' spread to count.
    0 with fewer than ``min_artifacts`` artifacts (nothing to estimate it from)."""
    x = np.asarray([v for v in log_ratios if math.isfinite(v)], np.float64)
    if len(x) < min_artifacts:
        return 0.0
    center = float(np.median(x))
    return abs(center) + 3 * 1.4826 * float(np.median(np.abs(x - center)))


def latency_test(a_samples, b_samples, *, alpha: float = ALPHA, min_effect: float = MIN_EFFECT,
                 resamples: int = RESAMPLES, seed: int = 0, between: float = 0.0) -> dict:
    """Is run B slower (or faster) than run A beyond the noise of the two runs? ``between`` is
    the runs' disagreement across artifacts (`between_run_noise`, log scale)."""
    ratio, lo, hi = median_ratio_ci(a_samples, b_samples, resamples, seed)
    _, p_slower = mann_whitney_greater(b_samples, a_samples)
    _, p_faster = mann_whitney_greater(a_samples, b_samples)
    noise = 0.5 * (relative_spread(a_samples) + relative_spread(b_samples))
    threshold = (1.0 + max(min_effect, noise)) * math.exp(between)
    pa = np.percentile(np.asarray(a_samples, np.float64), [10, 50, 90])
    pb = np.percentile(np.asarray(b_samples, np.float64), [10, 50, 90])
    # separated beyond each run's own spread: B's typical run is slower than 90% of A's, and A's
    # typical run faster than 90% of B's (a run that flips between two modes never qualifies)
    slower_apart = pb[1] > pa[2] and pb[0] > pa[1]
    faster_apart = pb[1] < pa[0] and pb[2] < pa[1]
    if p_slower < alpha and lo > threshold and slower_apart:
        verdict = "regression"
    elif p_faster < alpha and hi < 1.0 / threshold and faster_apart:
        verdict = "improvement"
    else:
        verdict = "no significant change"
    return {"ratio": ratio, "ci95": [lo, hi], "p_slower": p_slower, "p_faster": p_faster, "noise": noise,
            "between_runs": between,
            "threshold": threshold, "verdict": verdict, "n_a": len(a_samples), "n_b": len(b_samples),
            "p50_a": float(np.median(a_samples)), "p50_b": float(np.median(b_samples))}


# ----------------------------------------------------------------------------- diff

def _changes(a: dict, b: dict, prefix: str = "") -> list[dict]:
    out = []
    for k in sorted(set(a) | set(b)):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _changes(va, vb, f"{prefix}{k}.")
        elif va != vb:
            out.append({"field": f"{prefix}{k}", "a": va, "b": vb})
    return out


def diff(a: dict, b: dict, *, alpha: float = ALPHA, min_effect: float = MIN_EFFECT, resamples: int = RESAMPLES,
         seed: int = 0) -> dict:
    """Compare two results.json documents (see the module docstring)."""
    from edgesdk.lockfile import rows
    arts_a = {r.key: r for r in rows(a)}   # typed rows (edgesdk.pipeline.Row), matched by family/model/target/scheme
    arts_b = {r.key: r for r in rows(b)}
    common = [k for k in arts_a if k in arts_b]
    inputs, metrics, latency = [], [], []
    for k in common:
        xa, xb = arts_a[k], arts_b[k]
        ha, hb = xa.hashes or {}, xb.hashes or {}
        for h in HASH_KEYS:
            if ha.get(h) != hb.get(h):
                inputs.append({"artifact": k, "input": h, "a": ha.get(h), "b": hb.get(h)})
        if xa.status != xb.status:
            metrics.append({"artifact": k, "metric": "status", "a": xa.status, "b": xb.status})
        for m in VALUE_METRICS:
            va, vb = xa.get(m), xb.get(m)
            if va != vb and not (isinstance(va, float) and isinstance(vb, float) and math.isclose(va, vb, rel_tol=1e-9)):
                metrics.append({"artifact": k, "metric": m, "a": va, "b": vb})
    timed = [k for k in common if len(arts_a[k].samples_ms or []) >= 5 and len(arts_b[k].samples_ms or []) >= 5]
    between = between_run_noise([math.log(np.median(arts_b[k].samples_ms) / np.median(arts_a[k].samples_ms))
                                 for k in timed if np.median(arts_a[k].samples_ms) > 0
                                 and np.median(arts_b[k].samples_ms) > 0])
    for k in timed:
        xa, xb = arts_a[k], arts_b[k]
        t = latency_test(xa.samples_ms, xb.samples_ms, alpha=alpha, min_effect=min_effect,
                         resamples=resamples, seed=seed, between=between)
        t["artifact"] = k
        t["label"] = xb.label or ""
        t["percentiles"] = {m: [xa.get(m), xb.get(m)] for m in LATENCY_METRICS}
        latency.append(t)
    regressions = [t["artifact"] for t in latency if t["verdict"] == "regression"]
    return {
        "a": {"name": a.get("name"), "run_id": a.get("run_id"), "created_at": a.get("created_at")},
        "b": {"name": b.get("name"), "run_id": b.get("run_id"), "created_at": b.get("created_at")},
        "added": sorted(set(arts_b) - set(arts_a)), "removed": sorted(set(arts_a) - set(arts_b)),
        "inputs": inputs, "versions": _changes(a.get("versions", {}), b.get("versions", {})),
        "machine": _changes(a.get("machine", {}), b.get("machine", {})),
        "config": _changes(a.get("config", {}), b.get("config", {})),
        "metrics": metrics, "latency": latency, "regressions": regressions,
        "improvements": [t["artifact"] for t in latency if t["verdict"] == "improvement"],
        "method": {"test": "one-sided Mann-Whitney U on the raw samples + 95% bootstrap CI of median(B)/median(A)",
                   "alpha": alpha, "min_effect": min_effect, "resamples": resamples,
                   "between_runs": between,
                   "noise": "the CI must clear (1 + max(min_effect, mean IQR/median of the two runs' samples)) x "
                            "exp(between-run noise: |median log ratio| + 3 robust SD of the log ratios across "
                            "artifacts, 0 with fewer than 4), and median(B) > p90(A) and p10(B) > median(A)"},
    }


def _short(v) -> str:
    if isinstance(v, str) and len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v[:12]
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def format_diff(d: dict) -> str:
    lines = [f"A: {d['a']['name']} run {d['a']['run_id']} ({d['a']['created_at']})",
             f"B: {d['b']['name']} run {d['b']['run_id']} ({d['b']['created_at']})"]
    if d["added"] or d["removed"]:
        lines += [f"added artifacts: {', '.join(d['added']) or 'none'}",
                  f"removed artifacts: {', '.join(d['removed']) or 'none'}"]
    for title, items in (("versions", d["versions"]), ("machine", d["machine"]), ("config", d["config"])):
        if items:
            lines.append(f"{title} changed:")
            lines += [f"  {c['field']}: {_short(c['a'])} -> {_short(c['b'])}" for c in items]
        else:
            lines.append(f"{title}: unchanged")
    if d["inputs"]:
        lines.append("inputs changed:")
        lines += [f"  {c['artifact']}: {c['input']} {_short(c['a'])} -> {_short(c['b'])}" for c in d["inputs"]]
    else:
        lines.append("inputs (weights, graph, quantization config, calibration): unchanged")
    if d["metrics"]:
        lines.append("metrics changed:")
        lines += [f"  {c['artifact']}: {c['metric']} {_short(c['a'])} -> {_short(c['b'])}" for c in d["metrics"]]
    m = d["method"]
    lines.append(f"latency ({m['test']}; alpha {m['alpha']}, min effect {m['min_effect']:.0%}, between-run noise "
                 f"x{math.exp(m.get('between_runs', 0.0)):.2f}):")
    if d["latency"]:
        w = max(len(t["artifact"]) for t in d["latency"])
        lines.append(f"  {'artifact':<{w}}  {'p50 A ms':>9} {'p50 B ms':>9} {'B/A':>6} {'95% CI':>15} {'p':>8} "
                     f"{'noise':>6}  verdict")
        for t in d["latency"]:
            p = t["p_slower"] if t["ratio"] >= 1 else t["p_faster"]
            ci = f"[{t['ci95'][0]:.2f}, {t['ci95'][1]:.2f}]"
            lines.append(f"  {t['artifact']:<{w}}  {t['p50_a']:>9.4f} {t['p50_b']:>9.4f} {t['ratio']:>6.2f} {ci:>15} "
                         f"{p:>8.1e} {t['noise']:>6.2f}  "
                         + (t["verdict"].upper() if t["verdict"] == "regression" else t["verdict"]))
    else:
        lines.append("  no artifact has latency samples in both runs")
    if d["regressions"]:
        lines.append(f"REGRESSION: {', '.join(d['regressions'])} slower beyond the noise of the two runs")
    else:
        lines.append("no latency regression")
    return "\n".join(lines)
