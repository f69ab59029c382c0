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
