"""Executing one `Job`: convert (reusing the content-addressed cache), verify, then measure
(profile + quality) -> its typed `Row`. Every executor runs these same functions, in this
process, in a pool worker, or in a Ray task, so their rows agree.

- `convert` returns the row and the artifact (None when the job was skipped, rejected by the
  accuracy gate, or failed); a failure is recorded in the row unless ``quantize.on_fail:
  error``, which raises.
- `measure` profiles the artifact on its device and scores it with the entry's quality
  function; `finish` settles a row that is not measured (convert-only, profiling off).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from edgesdk.runtime.errors import SdkError, ToleranceError, UnsupportedModelError
from edgesdk.cache import ArtifactCache, code_version, fingerprint, key_of
from edgesdk.families import Runner
from edgesdk.pipeline.config import PipelineConfig
from edgesdk.pipeline.plan import Job, runs_label
from edgesdk.pipeline.row import Row


def base_row(e, job: Job) -> Row:
    t = job.target
    return Row(family=e.family, model=e.name, target=t.name, device=t.device, format=t.format, scheme=job.scheme,
               runs=runs_label(t), params=e.n_params, metric=e.metric, reference=e.reference,
               reference_quality=e.reference_quality, fp32_quality=e.fp32_quality, weights_sha256=e.weights_sha256)


def skipped_row(e, job: Job) -> Row:
    return base_row(e, job).update(status="skipped", message=job.skip)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


# ----------------------------------------------------------------------------- conversion

_CONVERT_SOURCES = None


def _convert_code_version() -> str:
    global _CONVERT_SOURCES
    if _CONVERT_SOURCES is None:
        from edgesdk.cache import ROOT
        files = sorted(str(p.relative_to(ROOT)) for d in ("converters", "runtime") for p in (ROOT / d).glob("*.py"))
        _CONVERT_SOURCES = code_version(files)
    return _CONVERT_SOURCES


def artifact_key(e, job: Job, cfg: PipelineConfig) -> str:
    """Content address of a conversion: everything that goes into it (weights, inputs, target,
    scheme, calibration, gate settings, whether the deployment CPU has int8 dot products,
    converter/runtime code, tool versions)."""
    from edgesdk.lockfile import tool_versions
    from edgesdk.runtime.machine import int8_dot_product
    parts = {"name": job.name, "weights": e.weights_sha256, "class": type(e.module).__qualname__,
             "example": fingerprint(e.example_inputs) if e.example_inputs is not None else
             fingerprint([ex for _, ex in e.module.edge_programs().values()]),
             "target": job.target.name, "scheme": job.scheme, "code": _convert_code_version(),
             "versions": tool_versions()}
    if e.prompt_lengths is not None:  # generation models' prompt length classes (other keys unchanged)
        parts["prompt_lengths"] = e.prompt_lengths
    if job.scheme != "fp32":
        cal = e.calibration
        parts.update(calibration=fingerprint(cal) if not isinstance(cal, str) else fingerprint(Path(cal).read_bytes()),
                     eval=fingerprint(e.eval_data) if e.eval_data is not None else None,
                     max_drop=cfg.quantize.max_drop, auto_fallback=cfg.quantize.auto_fallback,
                     min_calibration=cfg.calibration.min_samples,
                     # int8 recipes follow the deployment CPU (ExecuTorch's depthwise rule): not one artifact for both
                     int8_dot=int8_dot_product())
    elif _fp32_prompts(e):
        parts["eval"] = fingerprint(e.eval_data)
    return key_of(parts)


def _fp32_prompts(e) -> bool:
    """Whether an fp32 conversion gets the family's held-out prompts: a generation model (several
    programs), where a device computing float graphs at fp16 judges the artifact by the tokens it
    generates (`converters.fp16_compute`) and real prompts are the stronger evidence (and agree
    more often than random ones, so the teacher-forced second pass is skipped more often)."""
    return e.multi and e.eval_data is not None


def from_cache(e, job: Job, cfg: PipelineConfig, art_dir: Path, key: str, say):
    """The cached conversion copied to ``art_dir/name`` (payload hashes re-checked first), or None."""
    from edgesdk.converters import Artifact
    from edgesdk.runtime.errors import IntegrityError
    from edgesdk.cache import copy_artifact
    if not cfg.output.use_cache:
        return None
    cache = ArtifactCache(cfg.output.cache)
    try:
        hit = cache.get(job.target.name, key, job.name)
        if hit is None:
            return None
        final = copy_artifact(hit.path, art_dir / job.name)
        say(f"reused the cached conversion ({key[:12]})")
        return Artifact.open(final)
    except (OSError, ValueError, IntegrityError) as err:
        say(f"cached conversion unusable ({type(err).__name__}); converting again")
        return None


def _convert(e, job: Job, cfg: PipelineConfig, art_dir: Path, say):
    import edgesdk
    conv_kw: dict = {}
    if job.scheme != "fp32":
        conv_kw.update(max_drop=cfg.quantize.max_drop, auto_fallback=cfg.quantize.auto_fallback,
                       min_calibration=cfg.calibration.min_samples)
        if e.calibration is not None:
            conv_kw["calibration"] = e.calibration
        if e.eval_data is not None:
            conv_kw["eval_data"] = e.eval_data
    elif _fp32_prompts(e):
        conv_kw["eval_data"] = e.eval_data
    if e.prompt_lengths is not None:
        conv_kw["prompt_lengths"] = e.prompt_lengths
    return edgesdk.convert(e.module, e.example_inputs, job.target.name, quantize=job.scheme, out_dir=art_dir,
                       name=job.name, progress=say, **conv_kw)


def convert(e, job: Job, cfg: PipelineConfig, art_dir: Path, say, key: str | None = None,
            exports: Path | None = None):
    """Convert (or reuse) one job's artifact into ``art_dir/<name>`` -> (row, artifact or None).
    ``key``: its content address when the caller computed it already. ``exports``: the run's
    folder of shared exports (`converters.export_memo`), where conversions of one model that
    write the same file make it once."""
    row = base_row(e, job)
    if job.skip:
        return row.update(status="skipped", message=job.skip), None
    try:
        key = key or (artifact_key(e, job, cfg) if cfg.output.use_cache else None)
        art = from_cache(e, job, cfg, art_dir, key, say) if key else None
        if art is None:
            from edgesdk.converters.export_memo import shared_exports
            with shared_exports(exports):
                art = _convert(e, job, cfg, art_dir, say)
            if key:
                ArtifactCache(cfg.output.cache).put(job.target.name, key, job.name, art.path)
            row.conversion_cached = False
        else:
            row.conversion_cached = True
    except ToleranceError as err:
        if cfg.quantize.on_fail == "error":
            raise
        rep = getattr(err, "report", {}) or {}
        if "drop" in rep:  # the accuracy gate refused a quantized artifact
            row.update(status="rejected", message=_one_line(err),
                       gate={"max_drop": cfg.quantize.max_drop, "drop": rep.get("drop"), "passed": False,
                             "drop_basis": rep.get("drop_basis")})
            say("rejected by the accuracy gate")
        else:  # verification against PyTorch failed
            row.update(status="failed", message=f"ToleranceError: {_one_line(err)}")
            say(f"failed verification ({row.message[:160]})")
        return row, None
    except UnsupportedModelError as err:  # the target declared it cannot take this model: not a failure
        row.update(status="skipped", message=_one_line(err))
        say("skipped: the target cannot take this model")
        return row, None
    except SdkError as err:
        if cfg.quantize.on_fail == "error":
            raise
        row.update(status="failed", message=f"{type(err).__name__}: {_one_line(err)}")
        say(f"failed ({row.message[:160]})")
        return row, None
    fill_artifact(row, art, e)
    return row, art


def fill_artifact(row: Row, art, e) -> None:
    from edgesdk.lockfile import artifact_hashes
    m = art.manifest
    v = m.verification or {}
    q = m.quantization or {}
    row.update(path=str(art.path), artifact=art.path.name, size_bytes=art.size_bytes,
               conversion_s=m.extra.get("conversion_s"), verification=v.get("kind", "numerical vs PyTorch"),
               max_abs_err=v.get("max_abs_err"), min_cosine=v.get("min_cosine"),
               placement=_placement(m), programs=list(m.programs), label=m.extra.get("runs_label", ""),
               device_label=m.extra.get("device_label"))
    if "gate" in q:
        g = q["gate"]
        row.gate = {k: g.get(k) for k in ("max_drop", "drop", "passed", "drop_basis")}
        row.gate.update({k: g[k] for k in ("greedy_agreement", "teacher_forced_agreement") if k in g})
        row.kept_float = [k["layer"] for k in q.get("kept_float", [])]
        if q.get("calibration"):
            row.calibration = {**q["calibration"], "source": e.calibration_source or q["calibration"].get("source")}
    row.hashes = artifact_hashes(m, row.weights_sha256)
    row.versions = dict(m.versions)


def _placement(manifest) -> dict | None:
    """The row's placement from the manifest's normalized block (`converters.placement`): kind and
    share on the accelerator, node counts and fallen-back nodes where the converter counted them,
    the compiler's verdict where it gave one."""
    from edgesdk.converters.placement import of
    b = of(manifest)
    if b is None:
        return None
    row = {"kind": b["kind"], "fraction": b.get("fraction")}
    if b.get("compute_nodes") is not None:
        row.update(on_accelerator=b.get("on_accelerator"), compute_nodes=b["compute_nodes"],
                   fallback=[_fallback_text(f) for f in b.get("fallback", [])])
    if b.get("fully_accelerated") is not None:
        row["fully_accelerated"] = b["fully_accelerated"]
    return row


def _fallback_text(f: dict) -> str:
    """``/Gather_3 (Gather)`` for a node, ``aten_gelu x3`` for an op type a delegate left out."""
    node, op = f.get("node"), f.get("op_type")
    text = f"{node}" if node == op else f"{node} ({op})"
    return text + (f" x{f['count']}" if f.get("count", 1) > 1 else "")


# ----------------------------------------------------------------------------- measurement

def finish(row: Row, job: Job) -> Row:
    """A converted row that is not measured: convert-only target, or profiling switched off."""
    return row.update(status="ok" if job.target.runs_here else "convert-only")


def measure(row: Row, art, e, job: Job, cfg: PipelineConfig, warmup: int, iters: int, say, bar=None,
            node: str | None = None, defer_quality: bool = False):
    """Profile the artifact on the job's device and score its quality; a profiling failure is
    recorded in the row (``quantize.on_fail: error`` raises it). Returns the row, or with
    ``defer_quality`` ``(row, score)``: ``score()`` scores the quality into the row later (None
    when the profile failed), so an executor can time every artifact first and then score several
    at once (a score is correctness, not timing: it needs no quiet machine). ``score(evaluate)``
    takes an optional ``evaluate(quality, path, threads) -> float`` that runs the family's quality
    function elsewhere (the local executor: in one of its worker processes)."""
    t0 = time.perf_counter()
    score = None
    try:
        score = _profile_into(row, art, e, cfg, warmup, iters, say, bar, job.device)
    except SdkError as err:
        if cfg.quantize.on_fail == "error":
            raise
        row.update(status="failed", message=f"profiling: {type(err).__name__}: {_one_line(err)}")
        say(row.message[:160])
    row.profiled_on = {"host": socket.gethostname(), "device": job.device, **({"node": node} if node else {})}
    done = None
    if score is not None:
        t_profile = time.perf_counter() - t0

        def done(evaluate=None):
            t = time.perf_counter()
            score(evaluate)
            q = time.perf_counter() - t
            say(f"measured in {t_profile + q:.1f}s (profile {t_profile:.1f}s, quality {q:.1f}s)")
        if not defer_quality:
            done()
    return (row, done) if defer_quality else row


def _top_ops(rep, n: int = 10) -> list[dict]:
    return [{"name": r["name"], "op_type": r["op_type"], "mean_ms": r["mean_ms"], "share": r["share"],
             "calls": r["calls"]} for r in rep.ops[:n]]


# where a target's row says its device is emulated on this machine's CPU (`plan.runs_label`): the
# HTP emulator, a software GPU (lavapipe); a real GPU driver makes litert-gpu's row "yes"
EMULATED_RUNS = ("simulated", "software GPU")


def profile_settings(generation: bool, runs: str, warmup, iters: int, threads):
    """The ``(warmup, iters, threads)`` a profile of this artifact takes, from the config's: a
    generation artifact (``generation``) on a device that ``runs`` as `plan.runs_label` says."""
    if generation:
        # one timed run is a whole generation (prefill + 32 steps): a fifth of the runs still
        # gives ~30 per-token samples per run, and keeps generation models within the budget
        warmup = warmup if warmup == "auto" else min(warmup, max(1, warmup // 5))
        iters = min(iters, max(5, iters // 5))
    if generation and runs in EMULATED_RUNS:
        # an emulated device (the NPU emulator, a software GPU) runs one generation in ~0.5-5 s of
        # host time and its latency is not the device's: three whole generations on one thread (no
        # sweep), after the cold first run and no further warm-up (the four demo rows on the HTP
        # emulator: 84.3 -> 71.4 s of profiling, p50s within their round-to-round spread;
        # benchmarks/emulated_profile.py, RESULTS.md "#21, nineteenth session")
        warmup, iters, threads = 0, min(iters, 3), 1
    return warmup, iters, threads


def _profile_into(row: Row, art, e, cfg: PipelineConfig, warmup: int, iters: int, say, bar, device: str):
    """Profile into ``row``; returns ``score()``, which scores the quality into it."""
    from edgesdk import runtime
    emulated_generation = "generation" in art.manifest.extra and row.runs in EMULATED_RUNS
    warmup, iters, threads = profile_settings("generation" in art.manifest.extra, row.runs, warmup, iters,
                                              cfg.profile.threads)
    programs = e.profile_programs or [None]
    workload = _scored_workload(e) if emulated_generation and programs == [None] and not device.startswith("adb:") \
        else None
    if workload is not None:
        # the quality subset's runs are the timed ones: every item at least once after the cold run
        iters = max(iters, len(workload) - 1)
    reps = {}
    for prog in programs:
        say(f"profiling{' ' + prog if prog else ''} ({warmup} warm-up + {iters} runs"
            + (f" on the quality subset, {e.quality_subset[1]}, scored from them" if workload else "")
            + ")" + (f" on {device}" if device.startswith("adb:") else ""))
        if device.startswith("adb:"):  # a phone: the android_demo app measures, the report comes back
            from edgesdk.runtime.devices import parse_device, profile_on_device
            # the phone app has the same adaptive warm-up and thread sweep ("auto" passes through)
            reps[prog or "default"] = profile_on_device(art.path, parse_device(device), warmup=warmup, iters=iters,
                                                        threads=cfg.profile.threads, program=prog, log=say)
            continue
        reps[prog or "default"] = runtime.profile(art.path, warmup=warmup, iters=iters, threads=threads,
                                                  program=prog, per_op=cfg.profile.per_op, isolate=cfg.profile.isolate,
                                                  progress=bar, workload=workload)
    rep = next(iter(reps.values()))
    st = rep.stats
    row.update(status="ok", p50_ms=st["p50"], p90_ms=st["p90"], p99_ms=st["p99"], mean_ms=st["mean"],
               std_ms=st["std"], cv=st["cv"], noisy=rep.noisy, load_ms=rep.load_ms, first_run_ms=rep.first_run_ms,
               peak_rss_mb=rep.peak_rss_mb, threads=rep.threads, backend=rep.backend,
               backend_version=rep.backend_version, device_name=rep.device, label=rep.label or row.label or "",
               program=rep.program, samples_ms=[round(x, 6) for x in rep.samples_ms], ops=_top_ops(rep),
               ops_note=rep.ops_note, warmup=rep.warmup, iters=iters)
    from edgesdk.lockfile import profile_fields
    row.update(**profile_fields(rep))
    if rep.extra.get("generation"):  # generation artifacts: samples are times to first token
        row.generation = rep.extra["generation"]
    if len(reps) > 1:
        row.program_profiles = {k: {"p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "p99_ms": r.p99_ms,
                                    "samples_ms": [round(x, 6) for x in r.samples_ms], "ops": _top_ops(r)}
                                for k, r in reps.items()}
    scored = None
    if workload is not None:
        from edgesdk.pipeline.replay import replay
        scored = replay(e.quality_subset[0], workload, (rep.extra.get("workload") or {}).get("outputs") or [])
    if scored is not None:
        # the quality is in the row already: its score has nothing left to run
        _score_into(row, art, e, emulated_generation, rep.threads, scored=scored)
        return lambda evaluate=None: None
    return lambda evaluate=None: _score_into(row, art, e, emulated_generation, rep.threads, evaluate)


def _scored_workload(e) -> list[dict] | None:
    """The calls of the entry's quality subset as a profile workload (`pipeline.replay`), recorded
    once per entry; None when the family has no subset or its function cannot be recorded."""
    if e.quality_subset is None or e.quality is None:
        return None
    if e.scored_workload is None:
        from edgesdk.pipeline.replay import record
        e.scored_workload = record(e.quality_subset[0]) or []
    return e.scored_workload or None


def evaluate_here(quality, path, threads: int) -> float:
    """The family's quality function on the artifact at ``path``, in this process."""
    return float(quality(Runner.artifact(path, threads=threads)))


def _score_into(row: Row, art, e, emulated_generation: bool, threads: int, evaluate=None,
                scored: float | None = None) -> None:
    """The artifact's quality (the family's function through the runtime, at the profile's thread
    count; run by ``evaluate``, default `evaluate_here`; ``scored``: read from the profile's runs
    already), its drop against fp32 and its distance to the reference."""
    quality, fp32_quality = e.quality, row.fp32_quality
    if emulated_generation and e.quality_subset is not None and e.quality is not None:
        # one generation takes seconds on an emulated device: the family's spread subset of its
        # held-out data, compared with fp32 PyTorch on the same subset (the row says which)
        quality, note = e.quality_subset
        fp32_quality = e.fp32_quality_subset
        row.quality_subset = {"samples": note, "fp32_quality": fp32_quality}
        if scored is not None:
            row.quality_subset["scored_from"] = "the profile's timed runs"
    if scored is not None:
        row.quality = float(scored)
    elif quality is not None:
        try:
            row.quality = float((evaluate or evaluate_here)(quality, art.path, threads))
        except Exception as err:  # a quality function that cannot run on this artifact: say so, keep going
            row.quality_error = f"{type(err).__name__}: {_one_line(err)[:300]}"
    elif row.gate is not None and row.gate.get("drop") is not None:
        row.quality = 1.0 - row.gate["drop"]
        row.metric = "agreement with fp32 (1 - gate drop)"
    elif row.min_cosine is not None:
        row.quality = row.min_cosine
        row.metric = "min cosine vs fp32"
    if row.quality is not None and fp32_quality is not None:
        row.quality_drop = fp32_quality - row.quality
    if row.quality is not None and row.reference_quality is not None and row.quality_subset is None:
        row.quality_vs_reference = row.quality - row.reference_quality
