"""Latency statistics agree with the shared vectors (the Android twin uses the same file)."""

import json
import math

import numpy as np
import pytest

from conftest import ROOT
from edgesdk.runtime.stats import percentile, summarize

VECTORS = json.loads((ROOT / "tests/vectors/profile_stats.json").read_text())


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda c: c["name"])
def test_shared_vectors(case):
    got = summarize(case["samples_ms"])
    for k, v in case["expected"].items():
        assert math.isclose(got[k], v, rel_tol=VECTORS["tolerance"], abs_tol=VECTORS["tolerance"]), k
    assert got["count"] == len(case["samples_ms"])


def test_matches_numpy_on_random_samples():
    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 10, 101, 1000):
        s = rng.gamma(2.0, 1.0, n).tolist()
        st = summarize(s)
        for q in (0, 1, 50, 90, 99, 100):
            assert math.isclose(percentile(sorted(s), q), float(np.percentile(s, q)), rel_tol=1e-12)
        assert math.isclose(st["std"], float(np.std(s)), rel_tol=1e-9, abs_tol=1e-15)


def test_empty_is_nan_not_an_exception():
    st = summarize([])
    assert st["count"] == 0 and math.isnan(st["p50"])
