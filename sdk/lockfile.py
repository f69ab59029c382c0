"""`results.json`: the deployment lockfile a pipeline run writes.

For every artifact it records what went in (sha256 of the PyTorch weights, of the exported
graph — the payload files the manifest lists —, of the quantization config and of the
calibration set), the tool versions (torch, ExecuTorch, ONNX Runtime, LiteRT, QNN,
coremltools...), the machine (CPU model, cores, OS) and what was measured (quality, size,
latency percentiles *and the raw samples*, cold start, the artifact's own memory, FLOPs and GFLOP/s,
steady state, placement) and the recommendation (`edgesdk.auto.recommend`). `edgesdk diff` compares
two of these files.

Schema ``edgesdk.results/1``::

    {"schema": "edgesdk.results/1", "name", "created_at", "config", "machine", "versions",
     "families": [...], "timings", "cache", "executor": {"name", ...}, "recommendations": [...],
     "artifacts": [{"key": "family/model/target/scheme", "status", "hashes": {...}, "metrics": {...},
                    "samples_ms": [...], "profiled_on": {"host", "device"}, ...row fields}]}

An artifact entry is a `edgesdk.pipeline.Row` (``Row.to_dict``; `rows` reads them back).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import uuid
from importlib import metadata
from pathlib import Path

SCHEMA = "edgesdk.results/1"
VERSION_PACKAGES = ("edge-sdk", "torch", "executorch", "onnx", "onnxscript", "onnxruntime", "onnxruntime-qnn",
                    "litert-torch", "ai-edge-litert", "ai-edge-quantizer", "coremltools", "torchao", "numpy",
                    "safetensors", "scikit-learn", "matplotlib")
METRIC_KEYS = ("quality", "fp32_quality", "reference_quality", "quality_drop", "size_bytes", "p50_ms", "p90_ms",
               "p99_ms", "mean_ms", "cv", "load_ms", "first_run_ms", "peak_rss_mb", "mem_init_mb", "mem_peak_mb",
               "flops", "gflops_per_s", "pct_of_peak", "max_abs_err", "min_cosine")


def _sha_json(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def artifact_hashes(manifest, weights_sha256: str | None) -> dict:
    """The input hashes of one artifact, from its manifest (payload sha256s, quantization,
    calibration) and the PyTorch weights' content hash."""
    files = sorted((f.path, f.sha256) for f in manifest.files)
    q = manifest.quantization or {}
    quant_cfg = {"scheme": q.get("scheme", "fp32"), "details": q.get("details"),
                 "kept_float": [k.get("layer") if isinstance(k, dict) else k for k in q.get("kept_float", [])],
                 "max_drop": (q.get("gate") or {}).get("max_drop"),
                 "calibration_samples": (q.get("calibration") or {}).get("samples")}
    cal = q.get("calibration") or {}
    return {
        "weights": weights_sha256,
        "graph": hashlib.sha256("".join(f"{p}:{h}\n" for p, h in files).encode()).hexdigest(),
        "files": {p: h for p, h in files},
        "quant_config": _sha_json(quant_cfg),
        "calibration": cal.get("sha256"),
    }


def tool_versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in VERSION_PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    try:
        from onnxruntime_qnn import build_and_package_info as qi  # the QNN SDK bundled in the wheel
        out["qnn-sdk"] = getattr(qi, "qnn_version", None)
    except Exception:
        out["qnn-sdk"] = None
    return out


def machine() -> dict:
    from edgesdk.runtime.profile import cpu_name
    from edgesdk.runtime.session import default_threads
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = round(int(f.readline().split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu_name(), "arch": platform.machine(), "cores": os.cpu_count(), "usable_cores": default_threads(),
            "os": platform.platform(), "system": platform.system(), "memory_gb": mem}


def profile_fields(rep) -> dict:
    """What a `runtime.ProfileReport` adds to an artifact's row beyond latency: the artifact's own
    memory (``mem_init_mb``: load; ``mem_peak_mb``: peak during the timed runs; both deltas over
    RSS before load, measured in an isolated child unless ``memory.mode`` says in-process), the
    compute figures, the steady-state verdict and the thread sweep."""
    m, c, st = rep.memory, rep.compute, rep.steady_state
    out = {"mem_init_mb": m.get("init_mb"), "mem_peak_mb": m.get("run_peak_mb"),
           "memory": {k: v for k, v in m.items()} if m else None,
           "flops": c.get("flops"), "gflops_per_s": c.get("gflops_per_s"), "pct_of_peak": c.get("pct_of_peak"),
           "compute": c or None, "settled": st.get("settled"),
           "steady_state": {k: st.get(k) for k in ("settled", "flags", "causes", "drift")} if st else None,
           "warmup_detail": st.get("warmup"), "host": rep.extra.get("host")}
    sweep = rep.extra.get("threads_sweep")
    if sweep:
        out["threads_sweep"] = {"chosen": sweep["chosen"], "rule": sweep["rule"],
                                "rows": [{k: r[k] for k in ("threads", "p50_ms", "runs")} for r in sweep["rows"]]}
    return out


def build(cfg, rows: list, families: list[dict], timings: dict, cache: dict, executor: dict | None = None) -> dict:
    """The lockfile of one run from its `Row`s (``executor``: which executor ran it, where)."""
    artifacts = []
    for r in rows:
        d = r.to_dict()
        a = {"key": r.key, **d}
        a["metrics"] = {k: d.get(k) for k in METRIC_KEYS if d.get(k) is not None}
        artifacts.append(a)
    out = {
        "schema": SCHEMA,
        "name": cfg.name,
        "run_id": uuid.uuid4().hex[:12],
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": cfg.to_dict(),
        "machine": machine(),
        "versions": tool_versions(),
        "families": families,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "cache": cache,
        "artifacts": artifacts,
    }
    if executor is not None:
        out["executor"] = executor
    return out


# What varies from run to run of the same config on the same inputs: clocks, memory, where it
# ran and where it was written. `comparable` drops them; everything else must match.
# "recommendations" (and a row's recommended / target_pick) follow measured latencies; with
# threads: auto and warmup: auto, the thread count and warm-up runs are measured too
RUN_KEYS = ("run_id", "created_at", "timings", "machine", "executor", "cache", "recommendations")
MEASURED = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "cv", "noisy", "load_ms", "first_run_ms", "peak_rss_mb",
            "samples_ms", "ops", "ops_note", "program_profiles", "conversion_s", "profiled_on", "attempts", "path",
            "conversion_cached", "threads", "warmup", "mem_init_mb", "mem_peak_mb", "memory", "gflops_per_s",
            "pct_of_peak", "compute", "settled", "steady_state", "warmup_detail", "host", "threads_sweep",
            "recommended", "target_pick")
_GENERATION_MEASURED = ("ttft_ms", "tpot_ms", "tokens_per_s")


def comparable(results: dict) -> dict:
    """``results`` without what differs between two runs of the same config (timings, memory,
    hosts, executor, output paths, cache hits): two executors' runs must give equal values."""
    out = {k: v for k, v in results.items() if k not in RUN_KEYS}
    out["config"] = {**results.get("config", {}), "output": {k: v for k, v in results.get("config", {})
                                                              .get("output", {}).items() if k not in ("dir", "cache")}}
    out["families"] = [{k: v for k, v in f.items()
                        if k not in ("seconds", "cache_dir", "cache_hits", "cache_misses", "trained_in")}
                       for f in results.get("families", [])]
    arts = []
    for a in results.get("artifacts", []):
        a = {k: v for k, v in a.items() if k not in MEASURED}
        a["metrics"] = {k: v for k, v in a.get("metrics", {}).items() if k not in MEASURED}
        if isinstance(a.get("generation"), dict):
            a["generation"] = {k: v for k, v in a["generation"].items() if k not in _GENERATION_MEASURED}
        arts.append(a)
    out["artifacts"] = arts
    return out


def rows(results: dict) -> list:
    """The typed rows (`edgesdk.pipeline.Row`) of a results file read with `read`."""
    from edgesdk.pipeline.row import Row
    return [Row.from_dict(a) for a in results.get("artifacts", [])]


def write(results: dict, path: Path) -> Path:
    """Atomic write (temporary file + rename); NaN/inf become null."""
    from edgesdk.runtime.profile import json_safe
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(json_safe(results), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def read(path) -> dict:
    from edgesdk.runtime.errors import ConfigError
    p = Path(path)
    if p.is_dir():
        p = p / "results.json"
    if not p.is_file():
        raise ConfigError(f"{path}: no such results file (expected the results.json an `edgesdk deploy`/`demo` run wrote)")
    try:
        d = json.loads(p.read_text())
    except ValueError as e:
        raise ConfigError(f"{p}: not valid JSON: {e}") from None
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise ConfigError(f"{p}: not a pipeline results file (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                          f"expected {SCHEMA!r})")
    return d
