"""This machine's fp32 GEMM peak at a thread count, measured with ONNX Runtime's own GEMM (MLAS)
and cached per machine: the denominator of a profile's "% of peak".

A profile reports the FLOPs the model does per run (counted from the exported graph at
conversion time) and the GFLOP/s it achieved; dividing by what a large matrix multiply reaches
on the same cores, at the same thread count, says how much of the machine the model uses.
The microbenchmark is a one-node ONNX ``MatMul`` (embedded below, 113 bytes, dynamic shapes) run
at a few square sizes; the peak is the best GFLOP/s of any run. It takes about a second and
is cached in ``$EDGESDK_CACHE_DIR/gemm_peak.json`` (default ``~/.cache/edgesdk``), keyed by
CPU model, usable cores, ONNX Runtime version and thread count.

Example::

    from edgesdk.runtime.peak import gemm_peak
    p = gemm_peak(threads=2)
    print(p["gflops"], p["backend"], p["cached"])
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import os
import platform
import time
from pathlib import Path

import numpy as np

from edgesdk.runtime.machine import HostSampler, cpu_name, usable_cores

# onnx.helper: MatMul(a: float[m, k], b: float[k, n]) -> c: float[m, n], opset 13, IR 8
# (tests/test_profile.py rebuilds it with onnx.helper and checks these bytes)
GEMM_ONNX = base64.b64decode(
    "CAgSB2VkZ2VzZGs6XgoRCgFhCgFiEgFjIgZNYXRNdWwSBGdlbW1aFQoBYRIQCg4IARIKCgMSAW0KAxIBa1oVCgFiEhAKDggBEgoKAxIBawoD"
    "EgFuYhUKAWMSEAoOCAESCgoDEgFtCgMSAW5CBAoAEA0=")
SIZES = (256, 512, 1024)
BACKEND = "onnxruntime MLAS sgemm (fp32 MatMul)"
CACHE_FILE = "gemm_peak.json"


def cache_dir() -> Path:
    d = os.environ.get("EDGESDK_CACHE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgesdk"


def _key(threads: int, ort_version: str) -> str:
    return f"{cpu_name()} | {platform.machine()} | {usable_cores()} cores | onnxruntime {ort_version} | {threads} threads"


def _read(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
        return d if isinstance(d, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(path: Path, data: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home must not fail a profile; the peak is just measured again next time


def measure(threads: int, sizes=SIZES, budget_s: float = 0.3) -> dict:
    """Best GFLOP/s of an ``n x n @ n x n`` fp32 MatMul per size, ``threads`` intra-op threads."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    sess = ort.InferenceSession(GEMM_ONNX, so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    per_size = {}
    host = HostSampler().start()
    for n in sizes:
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        feed = {"a": a, "b": b}
        sess.run(None, feed)  # first run allocates
        best, t_end, runs = float("inf"), time.perf_counter() + budget_s, 0
        while runs < 3 or (time.perf_counter() < t_end and runs < 200):
            t = time.perf_counter_ns()
            sess.run(None, feed)
            best = min(best, (time.perf_counter_ns() - t) / 1e9)
            runs += 1
        per_size[str(n)] = 2.0 * n ** 3 / best / 1e9
    h = host.stop()
    return {"gflops": max(per_size.values()), "per_size_gflops": per_size, "threads": threads, "backend": BACKEND,
            "backend_version": ort.__version__, "others_cores": h["others_cores"],
            "measured_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}


def gemm_peak(threads: int, *, refresh: bool = False) -> dict | None:
    """This machine's fp32 GEMM peak at ``threads`` (cached; measured on first use or when the
    cached value was taken while other processes loaded the machine, keeping the better one).
    None when ONNX Runtime is not installed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    path = cache_dir() / CACHE_FILE
    key = _key(threads, ort.__version__)
    data = _read(path)
    old = data.get(key)
    if isinstance(old, dict) and isinstance(old.get("gflops"), (int, float)) and not refresh \
            and (old.get("others_cores") or 0) < 0.25:
        return {**old, "cached": True, "cache": str(path)}
    new = measure(threads)
    if isinstance(old, dict) and isinstance(old.get("gflops"), (int, float)) and old["gflops"] > new["gflops"] \
            and not refresh:
        new = old
    data[key] = new
    _write(path, data)
    return {**new, "cached": False, "cache": str(path)}
