"""Latency statistics, defined once and exactly (the Android twin implements the same).

- percentile: linear interpolation between closest ranks (numpy's default "linear"):
  rank = q/100 * (n-1); value = s[floor] + (s[ceil] - s[floor]) * frac(rank)
- mean: arithmetic mean; std: population standard deviation (divide by n)
- cv: std / mean
Shared test vectors live in tests/vectors/profile_stats.json.
"""

from __future__ import annotations

import math


def percentile(sorted_samples: list[float], q: float) -> float:
    n = len(sorted_samples)
    if n == 0:
        return math.nan
    rank = q / 100.0 * (n - 1)
    lo = math.floor(rank)
    hi = min(lo + 1, n - 1)
    frac = rank - lo
    return sorted_samples[lo] + (sorted_samples[hi] - sorted_samples[lo]) * frac


def summarize(samples: list[float]) -> dict:
    """p50/p90/p99/mean/std/cv/min/max of raw samples."""
    s = sorted(samples)
    n = len(s)
    if n == 0:
        nan = math.nan
        return {"count": 0, "p50": nan, "p90": nan, "p99": nan, "mean": nan, "std": nan,
                "cv": nan, "min": nan, "max": nan}
    mean = math.fsum(s) / n
    std = math.sqrt(math.fsum((x - mean) ** 2 for x in s) / n)
    return {
        "count": n,
        "p50": percentile(s, 50), "p90": percentile(s, 90), "p99": percentile(s, 99),
        "mean": mean, "std": std, "cv": std / mean if mean else math.nan,
        "min": s[0], "max": s[-1],
    }


# ---------------------------------------------------------------- steady state and shape of a series

def median(samples: list[float]) -> float:
    return percentile(sorted(samples), 50)


def window_medians(samples: list[float], window: int) -> list[float]:
    """Median of each consecutive full window of ``window`` samples."""
    n = len(samples) // window if window > 0 else 0
    return [median(samples[i * window:(i + 1) * window]) for i in range(n)]


def settled(medians: list[float], tol: float) -> bool:
    """True when the last window's median moved by at most ``tol`` (relative) from the one before."""
    if len(medians) < 2 or not medians[-2] > 0:
        return False
    return abs(medians[-1] - medians[-2]) <= tol * medians[-2]


def drift(samples: list[float], segments: int = 4) -> dict:
    """Medians of ``segments`` consecutive slices of the timed runs and how far they spread:
    ``drift = max/min - 1``. A steady series stays within a few percent; a series that speeds up
    or slows down during the run (warm-up not over, throttling, a neighbour starting) does not."""
    k = len(samples) // segments
    if k < 3:
        return {"segment_medians": [], "drift": 0.0}
    meds = [median(samples[i * k:(i + 1) * k]) for i in range(segments)]
    lo = min(meds)
    return {"segment_medians": meds, "drift": (max(meds) / lo - 1.0) if lo > 0 else math.inf}


def bimodality(samples: list[float], min_share: float = 0.10, min_ratio: float = 1.10,
               max_valley: float = 0.03) -> dict | None:
    """Two clusters of timings, or None.

    The samples (in log space) are split where the between-cluster variance is largest (Otsu's
    threshold).
    They count as bimodal when each cluster holds at least ``min_share`` of the runs, the slower
    cluster's median is at least ``min_ratio`` times the faster one's, and the valley between them
    is nearly empty: the middle third of the interval between the two cluster medians holds at most
    ``max_valley`` of the runs (a single bell puts ~18% there; a long tail fails ``min_share``).
    """
    n = len(samples)
    if n < 20 or min(samples) <= 0:
        return None
    logs = sorted(math.log(x) for x in samples)
    prefix = [0.0]
    for v in logs:
        prefix.append(prefix[-1] + v)
    total = prefix[-1]
    best, cut = -1.0, None
    for i in range(1, n):  # clusters logs[:i] and logs[i:]
        m1, m2 = prefix[i] / i, (total - prefix[i]) / (n - i)
        between = i * (n - i) * (m1 - m2) ** 2
        if between > best:
            best, cut = between, i
    fast, slow = logs[:cut], logs[cut:]
    if min(len(fast), len(slow)) < min_share * n:  # a few outliers, not a second mode
        return None
    f_med, s_med = percentile(fast, 50), percentile(slow, 50)
    if math.exp(s_med - f_med) < min_ratio:
        return None
    a, b = f_med + (s_med - f_med) / 3, s_med - (s_med - f_med) / 3
    valley = sum(1 for v in logs if a <= v <= b) / n
    if valley > max_valley:
        return None
    return {"fast_ms": math.exp(f_med), "slow_ms": math.exp(s_med), "slow_share": len(slow) / n,
            "valley_share": valley}
