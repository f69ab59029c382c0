"""`runtime.profile(path) -> ProfileReport`: load time, cold start, warm percentiles, memory, per-op.

Raw samples are kept; every statistic is derived from them (see `runtime.stats`).
"""

from __future__ import annotations

import datetime as _dt
import gc
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.machine import HostSampler, causes, cpu_name, hwm_mb, reset_hwm, rss_mb, usable_cores
from edgesdk.runtime.manifest import TensorSpec
from edgesdk.runtime.session import Session, load
from edgesdk.runtime.stats import bimodality, drift, median, settled, summarize, window_medians

SCHEMA = "edgesdk.profile/1"
NOISY_CV = 0.10
DELEGATE_SHARE_WARN = 0.80  # below this share of time inside the delegate, a profile says so

# Steady state. Adaptive warm-up runs windows of runs until a window's median is within
# SETTLE_TOL of the previous one, bounded by MAX_WARMUP_S (after at least two windows) and
# MAX_WARMUP_RUNS. A window lasts about WINDOW_S, between MIN_WINDOW and MAX_WINDOW runs.
WARMUP_AUTO = "auto"
SETTLE_TOL = 0.05
MAX_WARMUP_S = 3.0
MAX_WARMUP_RUNS = 5000
WINDOW_S = 0.025
MIN_WINDOW, MAX_WINDOW = 3, 100
DRIFT_LIMIT = 0.10     # the timed runs' quarter medians may differ by this much before we flag them
# Thread sweep: the count with the lowest p50 wins; a count within THREAD_TIE of it with fewer
# threads wins instead (same speed, fewer cores busy).
THREAD_TIE = 0.03
SWEEP_BLOCK_S = 0.08


# ---------------------------------------------------------------- memory and machine (see runtime.machine)

def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark so the peak covers only what follows."""
    return reset_hwm()


def peak_rss_mb() -> float:
    return hwm_mb()


# ---------------------------------------------------------------- inputs

def example_inputs(specs: list[TensorSpec], seed: int = 0, dims: dict | None = None) -> list[np.ndarray]:
    """Inputs matching a spec: normal floats, ints inside the recorded value range, True masks.

    Symbolic (dynamic) dims take their size from ``dims`` (symbol -> size; e.g. a program's
    ``spec.example_dims()``), else 1.
    """
    rng = np.random.default_rng(seed)
    dims = dims or {}
    out = []
    for s in specs:
        shape = tuple(d if isinstance(d, int) else int(dims.get(d, 1)) for d in s.shape)
        dt = s.np_dtype
        if dt.kind == "f":
            out.append(rng.standard_normal(shape).astype(dt))
        elif dt.kind == "b":
            out.append(np.ones(shape, dtype=dt))
        else:
            lo, hi = s.value_range if s.value_range else (0, 0)
            out.append(rng.integers(int(lo), int(hi) + 1, size=shape).astype(dt))
    return out


# ---------------------------------------------------------------- report
# ---------------------------------------------------------------- report

@dataclass
class ProfileReport:
    """Latency profile of one artifact on one device. Statistics derive from `samples_ms`.

    Beyond the fields, ``extra`` carries (where measured): ``memory`` (the artifact's own
    footprint, see `profile`), ``compute`` (FLOPs per run, GFLOP/s, % of this machine's GEMM
    peak), ``steady_state`` (warm-up, drift, bimodality, likely causes), ``host`` (CPU used by
    other processes, steal, frequency during the timed runs), ``threads_sweep`` and
    ``isolation``; the properties below read them.
    """

    artifact: str
    target: str
    backend: str
    backend_version: str
    device: str
    threads: int
    program: str
    warmup: int
    iters: int
    load_ms: float
    first_run_ms: float
    samples_ms: list[float]
    peak_rss_mb: float
    baseline_rss_mb: float
    ops: list[dict] = field(default_factory=list)
    ops_note: str = ""
    label: str = ""
    verified: bool = False
    extra: dict = field(default_factory=dict)  # backend-specific numbers (e.g. QNN accelerator time)
    created_at: str = ""
    schema: str = SCHEMA

    @property
    def stats(self) -> dict:
        return summarize(self.samples_ms)

    p50_ms = property(lambda self: self.stats["p50"])
    p90_ms = property(lambda self: self.stats["p90"])
    p99_ms = property(lambda self: self.stats["p99"])
    mean_ms = property(lambda self: self.stats["mean"])
    std_ms = property(lambda self: self.stats["std"])
    min_ms = property(lambda self: self.stats["min"])
    max_ms = property(lambda self: self.stats["max"])
    cv = property(lambda self: self.stats["cv"])

    @property
    def throughput_per_s(self) -> float:
        m = self.mean_ms
        return 1e3 / m if m and not math.isnan(m) else math.nan

    @property
    def noisy(self) -> bool:
        """True when the coefficient of variation exceeds 10%: treat the numbers with care."""
        return bool(self.cv > NOISY_CV)

    @property
    def memory(self) -> dict:
        """The artifact's own memory: ``init_mb`` (resident high-water mark after load minus RSS
        before load), ``run_peak_mb`` (during the timed runs), ``overall_peak_mb``, ``mode``."""
        return self.extra.get("memory") or {}

    @property
    def compute(self) -> dict:
        return self.extra.get("compute") or {}

    flops = property(lambda self: self.compute.get("flops"))
    gflops_per_s = property(lambda self: self.compute.get("gflops_per_s"))
    pct_of_peak = property(lambda self: self.compute.get("pct_of_peak"))

    @property
    def steady_state(self) -> dict:
        return self.extra.get("steady_state") or {}

    @property
    def settled(self) -> bool | None:
        """False when the timings never settled (see ``steady_state["flags"]`` and ``["causes"]``)."""
        return self.steady_state.get("settled")

    @property
    def delegate_share(self) -> float | None:
        """Share of the per-op time spent inside an accelerator delegate (ExecuTorch ETDump rows),
        or None when the backend reports no delegate split."""
        if not self.ops or not any(r.get("backend") == "portable" for r in self.ops) and \
                not any(r.get("op_type") == "DELEGATE_CALL" for r in self.ops):
            return None
        portable = sum(r["total_ms"] for r in self.ops if r.get("backend") == "portable")
        calls = [r["total_ms"] for r in self.ops if r.get("op_type") == "DELEGATE_CALL"]
        # a DELEGATE_CALL row holds its kernels' rows (when the backend times them): count it, not them
        delegated = sum(calls) if calls else sum(r["total_ms"] for r in self.ops
                                                  if r.get("backend") not in ("portable", "", None))
        return delegated / ((delegated + portable) or 1.0)

    def delegate_note(self) -> str:
        """A warning line when less than ``DELEGATE_SHARE_WARN`` of the time ran in the delegate,
        naming the ops outside it by time: the usual reason a delegated artifact is slow."""
        share = self.delegate_share
        if share is None or share >= DELEGATE_SHARE_WARN:
            return ""
        outside = [r for r in self.ops if r.get("backend") == "portable"]
        names = ", ".join(f"{r['op_type']} {r['mean_ms'] * r['calls']:.3f} ms" for r in outside[:5])
        return (f"SLOW PATH: only {share * 100:.0f}% of the time ran in the delegate (threshold "
                f"{DELEGATE_SHARE_WARN * 100:.0f}%); outside it, per run: {names}")

    def to_dict(self) -> dict:
        d = asdict(self)
        st = self.stats
        d["stats"] = {
            "count": st["count"], "p50_ms": st["p50"], "p90_ms": st["p90"], "p99_ms": st["p99"],
            "mean_ms": st["mean"], "std_ms": st["std"], "min_ms": st["min"], "max_ms": st["max"],
            "cv": st["cv"], "throughput_per_s": self.throughput_per_s, "noisy": self.noisy,
        }
        return d

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d) -> "ProfileReport":
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ConfigError(f"not a profile report (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                              f"expected {SCHEMA!r})")
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names and k != "stats"})

    @classmethod
    def from_json(cls, text: str) -> "ProfileReport":
        return cls.from_dict(json.loads(text))

    def table(self, top_ops: int = 10) -> str:
        """A readable summary (what `edgesdk profile` prints)."""
        st = self.stats
        warm = self.steady_state.get("warmup") or {}
        lines = [
            f"{self.artifact}",
            f"  target {self.target} · backend {self.backend} {self.backend_version} · {self.threads} threads"
            + (f" · {self.label}" if self.label else ""),
            f"  device {self.device}",
            f"  load {self.load_ms:.2f} ms · first run (cold) {self.first_run_ms:.3f} ms",
            f"  {st['count']} runs after {self.warmup} warm-up"
            + (" (adaptive)" if warm.get("mode") == "auto" else "")
            + f": p50 {st['p50']:.4f} · p90 {st['p90']:.4f} · "
            f"p99 {st['p99']:.4f} · mean {st['mean']:.4f} ± {st['std']:.4f} ms · "
            f"{self.throughput_per_s:.1f}/s · CV {st['cv'] * 100:.1f}%"
            + ("  [NOISY: CV > 10%, rerun on a quieter machine]" if self.noisy else ""),
        ]
        gen = self.extra.get("generation")
        if gen:
            lines[-1] = lines[-1].replace(" runs after", " generations after").replace(": p50", ": TTFT p50")
            tp = gen.get("tpot_ms")
            lines.append(f"  prompt {gen['prompt_tokens']} tokens (capacity {gen['capacity']}), "
                         f"{gen['new_tokens']} new tokens · decoding state {gen['state_bytes'] / 1024:.1f} KiB"
                         + (f" · per token p50 {tp['p50']:.4f} · p90 {tp['p90']:.4f} ms · "
                            f"{gen['tokens_per_s']:.1f} tokens/s" if tp else ""))
        lines += _memory_lines(self.memory, self.peak_rss_mb, self.baseline_rss_mb)
        lines += _compute_lines(self.compute)
        lines += _steady_lines(self.steady_state)
        sweep = self.extra.get("threads_sweep")
        if sweep and sweep.get("rows"):
            lines.append("  threads auto: " + " · ".join(
                f"{r['threads']}: p50 {r['p50_ms']:.4f} ms" for r in sweep["rows"]) + f" → {sweep['chosen']} "
                f"({sweep['rule']})")
        slow = self.delegate_note()
        if slow:
            lines.append(f"  {slow}")
        if self.ops:
            lines.append(f"  per-op (top {min(top_ops, len(self.ops))} of {len(self.ops)} by total time):")
            lines.append(f"    {'op':<40} {'type':<22} {'calls':>6} {'mean ms':>9} {'share':>6}")
            for r in self.ops[:top_ops]:
                lines.append(f"    {r['name'][:40]:<40} {r['op_type'][:22]:<22} {r['calls']:>6} "
                             f"{r['mean_ms']:>9.4f} {r['share'] * 100:>5.1f}%")
        elif self.ops_note:
            lines.append(f"  per-op: {self.ops_note}")
        if self.ops and self.ops_note:
            lines.append(f"  note: {self.ops_note}")
        return "\n".join(lines)


def _mb(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.1f}"


def _bytes(n: float) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:.0f} B"


def flops_text(n: float) -> str:
    """1.2 GFLOP, 37.9 kFLOP..."""
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} FLOP"


def _memory_lines(m: dict, peak, baseline) -> list[str]:
    if not m:  # a report from elsewhere (a phone, an older version): the process figures only
        return [f"  peak RSS {_mb(peak)} MB (before load {_mb(baseline)} MB)"]
    where = ("isolated child process: the artifact's own" if m.get("mode") == "isolated" else
             "in-process: deltas of this process, which also holds whatever else it loaded and may "
             "reuse memory it freed before (use isolate=True / --isolate for the artifact's own)")
    told = [f"{k.removesuffix('_bytes').replace('_', ' ')} {_bytes(v)}" for k, v in (m.get("backend") or {}).items()
            if k.endswith("_bytes") and isinstance(v, (int, float))]
    return [f"  memory ({where}): load +{_mb(m.get('init_mb'))} MB · peak during runs "
            f"+{_mb(m.get('run_peak_mb'))} MB · overall +{_mb(m.get('overall_peak_mb'))} MB",
            f"    RSS before load {_mb(m.get('rss_before_load_mb'))} MB, process peak {_mb(peak)} MB · model file "
            f"{_mb(m.get('model_file_mb'))} MB" + (" · " + " · ".join(told) if told else "")]


def _compute_lines(c: dict) -> list[str]:
    if not c:
        return []
    if not c.get("flops"):
        return [f"  compute: {c.get('note') or 'no FLOPs count in the manifest'}"]
    line = f"  compute: {flops_text(c['flops'])} per {c.get('per', 'run')}"
    if c.get("gflops_per_s") is not None:
        line += f" · {c['gflops_per_s']:.3g} GFLOP/s"
    if c.get("pct_of_peak") is not None:
        line += (f" · {c['pct_of_peak']:.2f}% of this machine's fp32 GEMM peak ({c['peak_gflops']:.0f} GFLOP/s at "
                 f"{c['peak_threads']} threads, {c['peak_backend']})")
    elif c.get("peak_note"):
        line += f" · % of peak: {c['peak_note']}"
    out = [line]
    if c.get("decode_gflops_per_s") is not None:
        out.append(f"    decode step: {flops_text(c['decode_flops'])} per token · "
                   f"{c['decode_gflops_per_s']:.3g} GFLOP/s")
    return out


def _steady_lines(s: dict) -> list[str]:
    if not s:
        return []
    w = s.get("warmup") or {}
    if s.get("settled"):
        how = (f"warm-up settled after {w.get('runs')} runs (window medians within {SETTLE_TOL:.0%})"
               if w.get("mode") == "auto" else f"{w.get('runs')} fixed warm-up runs")
        return [f"  steady state: {how}; timed quarters within {s.get('drift', 0) * 100:.1f}%"]
    return [f"  [UNSETTLED: {'; '.join(s.get('flags', []))}]",
            f"    likely cause: {'; '.join(s.get('causes') or ['unknown'])}"]


def json_safe(o):
    """NaN/Inf become null: JSON has no spelling for them."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [json_safe(v) for v in o]
    return o


def aggregate_ops(events, runs: int) -> list[dict]:
    """(name, op_type, microseconds, backend) events -> one row per op, sorted by total time."""
    agg: dict[str, dict] = {}
    for name, op, us, backend in events:
        r = agg.setdefault(name, {"name": name, "op_type": op, "backend": backend, "calls": 0, "total_ms": 0.0})
        r["calls"] += 1
        r["total_ms"] += us / 1e3
    total = sum(r["total_ms"] for r in agg.values()) or 1.0
    rows = sorted(agg.values(), key=lambda r: -r["total_ms"])
    for r in rows:
        r["calls"] = r["calls"] // max(runs, 1) or r["calls"]  # calls per run
        r["mean_ms"] = r["total_ms"] / max(runs, 1) / max(r["calls"], 1)
        r["share"] = r["total_ms"] / total
    return rows


def _finite(x: float) -> float:
    return x if isinstance(x, float) and math.isfinite(x) else float("nan")


# ---------------------------------------------------------------- steady state

def warm_up(once, warmup, max_s: float = MAX_WARMUP_S) -> dict:
    """Run ``once`` as warm-up: ``warmup`` times, or (``"auto"``) in windows until a window's median
    moves by at most SETTLE_TOL from the previous window's, bounded by ``max_s`` seconds (after
    two windows) and MAX_WARMUP_RUNS. Returns what happened (runs, window, medians, settled)."""
    if warmup != WARMUP_AUTO:
        for _ in range(warmup):
            once()
        return {"mode": "fixed", "runs": warmup}
    clock = time.perf_counter_ns
    times: list[float] = []

    def timed():
        t = clock()
        once()
        times.append((clock() - t) / 1e6)

    for _ in range(MIN_WINDOW):
        timed()
    est = median(times) / 1e3
    window = int(min(MAX_WINDOW, max(MIN_WINDOW, math.ceil(WINDOW_S / est) if est > 0 else MAX_WINDOW)))
    t0, meds, bound = time.perf_counter(), [], None
    times.clear()
    while True:
        for _ in range(window):
            timed()
        meds.append(median(times[-window:]))
        if settled(meds, SETTLE_TOL):
            break
        if len(meds) >= 2 and time.perf_counter() - t0 > max_s:
            bound = f"{max_s:g} s"
            break
        if len(times) >= MAX_WARMUP_RUNS:
            bound = f"{MAX_WARMUP_RUNS} runs"
            break
    return {"mode": "auto", "runs": MIN_WINDOW + len(times), "window": window, "medians_ms": meds,
            "settled": bound is None, "bound": bound, "tolerance": SETTLE_TOL}


def steady_state(samples: list[float], warm: dict, host: dict | None) -> dict:
    """Did the timings settle? Flags and, where the machine tells, their likely causes."""
    d = drift(samples)
    flags, why = [], []
    if warm.get("mode") == "auto" and not warm.get("settled"):
        m = warm.get("medians_ms") or [0, 0]
        flags.append(f"warm-up never settled within {warm['bound']} ({warm['runs']} runs; the last window medians "
                     f"were {m[-2]:.4g} and {m[-1]:.4g} ms)")
    if d["drift"] > DRIFT_LIMIT:
        flags.append(f"the timed runs drifted: quarter medians {', '.join(f'{x:.4g}' for x in d['segment_medians'])} "
                     f"ms ({d['drift'] * 100:.0f}% apart)")
    bi = bimodality(samples)
    if bi:
        flags.append(f"bimodal timings: {(1 - bi['slow_share']) * 100:.0f}% of runs near {bi['fast_ms']:.4g} ms, "
                     f"{bi['slow_share'] * 100:.0f}% near {bi['slow_ms']:.4g} ms")
        why.append("bimodal timings (two distinct speeds: e.g. threads that sometimes sleep and wake, or "
                   "runs that alternate between cores or caches); the p50 describes neither mode well")
    if flags:
        why = causes(host, usable_cores()) + why
        if not why:
            f = (host or {}).get("freq_mhz")
            why = ["none observed: other processes used "
                   + (f"{host['others_cores']:.2f} of a core" if host and host.get("others_cores") is not None else
                      "an unknown share of the CPU")
                   + (", CPU frequency not observable here (no cpufreq in /sys)" if not f else
                      f", CPU frequency steady at {f['max']:.0f} MHz")]
    return {"settled": not flags, "flags": flags, "causes": why, "warmup": warm,
            "segment_medians_ms": d["segment_medians"], "drift": d["drift"], "bimodal": bi}


# ---------------------------------------------------------------- threads

def program_runner(sess: Session, program, inputs, seed, prompt_tokens, new_tokens, dims=None):
    """(callable running one timed unit, arrays, spec) for a session: one run, or one generation;
    dynamic dims at the example's sizes unless ``dims`` names others."""
    if sess.generation is not None and program is None and inputs is None:
        prompt, *_ = _gen_prompt(sess, seed, prompt_tokens, new_tokens)
        return (lambda: sess.generate(prompt, new_tokens, stop_at_eos=False)), None, None
    binding = sess.program(program) if program else sess._default
    timed = _timed_dims(binding.spec, dims)
    arrays = example_inputs(list(binding.spec.inputs), seed, dims=timed) if inputs is None else binding.validate(inputs)
    if inputs is None and timed:
        arrays = binding.validate(arrays)  # sizes outside the exported range fail here, with the range
    return (lambda: binding.run(arrays)), arrays, binding.spec


def sweep_threads(path, *, counts=None, inputs=None, program=None, seed: int = 0, rounds: int = 2,
                  require_signature: bool = False, public_key=None, prompt_tokens=None, new_tokens: int = 32,
                  dims: dict | None = None) -> dict:
    """Time the artifact at each thread count from 1 to the usable cores (``counts`` to choose),
    in ``rounds`` passes of short blocks (order reversed every other pass, so a slow spell of
    the machine does not fall on one count), and pick the count with the lowest p50; a count
    with fewer threads within THREAD_TIE of it wins instead."""
    counts = list(counts or range(1, usable_cores() + 1))
    per: dict[int, list[float]] = {n: [] for n in counts}
    effective: dict[int, int] = {}
    clock = time.perf_counter_ns
    for r in range(rounds if len(counts) > 1 else 1):
        for n in (counts if r % 2 == 0 else counts[::-1]):
            sess = load(path, threads=n, require_signature=require_signature, public_key=public_key)
            effective[n] = sess.threads
            once, _, _ = program_runner(sess, program, inputs, seed, prompt_tokens, new_tokens, dims)
            est = []
            for _ in range(3):
                t = clock()
                once()
                est.append((clock() - t) / 1e9)
            block = int(min(200, max(5, math.ceil(SWEEP_BLOCK_S / max(median(est), 1e-7)))))
            for _ in range(block):
                t = clock()
                once()
                per[n].append((clock() - t) / 1e6)
            # young generations only: a full collection in a process holding trained models took
            # ~0.9 s, four times per artifact (half the demo's profile stage); ExecuTorch's
            # set_threads runs a full one itself when a dropped program still holds its pool
            del sess, once
            gc.collect(1)
    rows = []
    for n in counts:
        st = summarize(per[n])
        rows.append({"threads": n, "effective_threads": effective.get(n, n), "p50_ms": st["p50"],
                     "p90_ms": st["p90"], "cv": st["cv"], "runs": st["count"]})
    best = min(r["p50_ms"] for r in rows)
    chosen = min(r["threads"] for r in rows if r["p50_ms"] <= best * (1 + THREAD_TIE))
    return {"rows": rows, "chosen": chosen, "counts": counts, "rounds": rounds,
            "rule": f"lowest p50; fewer threads within {THREAD_TIE:.0%}",
            "unit": "generation" if rows and program is None and inputs is None and _is_generation(path) else "run"}


def interleaved(artifacts: list[tuple], *, rounds: int = 4, block_s: float = 0.15, seed: int = 0,
                new_tokens: int = 32) -> list[list[float]]:
    """Time several artifacts side by side in this process: ``rounds`` passes, each giving every
    artifact one short block of runs (after 3 unrecorded ones), order reversed every other pass,
    each artifact loaded at its own thread count and released after its block (ExecuTorch resizes
    its process-wide pool only then). ``artifacts``: (path, threads) pairs. Returns, per artifact,
    the median of each of its blocks (ms per run; per whole generation for generation artifacts).

    Example::

        from edgesdk.runtime.profile import interleaved
        a, b = interleaved([("out/m-onnx-cpu", 1), ("out/m-litert-cpu", 2)], rounds=6)
        ratio = median(a) / median(b)
    """
    per: list[list[float]] = [[] for _ in artifacts]
    clock = time.perf_counter_ns
    order = list(range(len(artifacts)))
    for r in range(rounds):
        for i in (order if r % 2 == 0 else order[::-1]):
            path, threads = artifacts[i]
            sess = load(path, threads=threads)
            once, _, _ = program_runner(sess, None, None, seed, None, new_tokens)

            def timed():
                t = clock()
                out = once()
                return out.total_ms if sess.generation is not None else (clock() - t) / 1e6
            est = [timed() for _ in range(3)]
            k = int(min(200, max(5, math.ceil(block_s / max(median(est) / 1e3, 1e-7)))))
            per[i].append(median([timed() for _ in range(k)]))
            del sess, once
            gc.collect(1)  # young generations only, as in sweep_threads
    return per


def _is_generation(path) -> bool:
    from edgesdk.runtime.generate import KEY
    from edgesdk.runtime.session import resolve
    _, manifest, _ = resolve(path)
    return manifest is not None and KEY in manifest.extra


# ---------------------------------------------------------------- one profile (`runtime.profile` is in runtime.profiler)

def measure(path, *, warmup, iters, inputs, threads, program, per_op, op_runs, seed, progress, require_signature,
            public_key, prompt_tokens, new_tokens, max_warmup_s, mode: str, dims=None,
            workload=None) -> ProfileReport:
    """One profile in this process (``mode`` labels the memory figures: in-process or isolated)."""
    # the profiler's own one-time costs land before the baseline: numpy.random (~7 MB resident
    # on first import) makes the inputs, and they are the harness's, not the artifact's
    np.random.default_rng(seed).standard_normal(1)
    HostSampler().start().stop(min_wall_s=0)
    hwm_ok = reset_hwm()
    before = rss_mb()
    sess: Session = load(path, threads=threads, require_signature=require_signature, public_key=public_key)
    init_hwm = hwm_mb()
    generation = sess.generation is not None and program is None and inputs is None
    runs = None
    if generation and workload is not None:
        runs = Workload(sess, workload)
        once, n_prompt, cap, caps = runs.next, runs.prompt_tokens, runs.capacity, runs.capacities
        spec, arrays = None, None
    elif generation:
        prompt, n_prompt, cap, caps = _gen_prompt(sess, seed, prompt_tokens, new_tokens)

        def once():
            return sess.generate(prompt, new_tokens, stop_at_eos=False)
        spec, arrays = None, None
    else:
        once, arrays, spec = program_runner(sess, program, inputs, seed, prompt_tokens, new_tokens, dims)
    t = time.perf_counter_ns()
    first = once()
    first_ms = first.ttft_ms if generation else (time.perf_counter_ns() - t) / 1e6
    warm = warm_up(once, warmup, max_warmup_s)
    pre_hwm = hwm_mb()
    reset_hwm()
    samples, gens = [], []
    step = max(1, iters // 50)
    quarter = max(1, iters // 4)
    clock = time.perf_counter_ns
    host = HostSampler().start()
    for i in range(iters):
        if generation:
            g = once()
            gens.append(g)
            samples.append(g.ttft_ms)
        else:
            t = clock()
            once()
            samples.append((clock() - t) / 1e6)
        if (i + 1) % quarter == 0:
            host.sample()
        if progress is not None and (i + 1) % step == 0:
            progress(i + 1, iters)
    host_reading = host.stop()
    if runs is not None:
        runs.complete()  # items the cold and timed runs did not reach run once more, untimed
    run_hwm = hwm_mb()
    memory = {"mode": mode, "rss_before_load_mb": before, "init_mb": init_hwm - before,
              "run_peak_mb": run_hwm - before, "overall_peak_mb": max(pre_hwm, run_hwm) - before,
              "model_file_mb": sum(f.size for f in sess.manifest.files) / 2**20, "hwm_resettable": hwm_ok}
    info = getattr(sess.backend, "memory_info", None)
    if info is not None:
        try:
            memory["backend"] = info(sess)
        except Exception as e:  # noqa: BLE001 - an optional number; never fail the profile for it
            memory["backend"] = {"error": f"{type(e).__name__}: {e}"}

    extra: dict = {}
    if generation:
        extra["generation"] = _generation_summary(gens, first, n_prompt, cap, caps)
    if runs is not None:
        extra["generation"]["workload"] = len(runs.items)
        extra["workload"] = {"runs": len(runs.items), "outputs": runs.outputs}
    ops, note = [], ""
    if per_op:
        ops, note, backend_extra = op_pass(sess, spec, arrays, seed, op_runs)
        extra.update(backend_extra)
    if spec is not None and spec.dims:
        extra["dims"] = {s.name: list(a.shape) for s, a in zip(spec.inputs, arrays)}
    extra["memory"] = memory
    extra["steady_state"] = steady_state(samples, warm, host_reading)
    extra["host"] = host_reading
    prog_name = "generate" if generation else spec.name
    extra["compute"] = _compute(sess, prog_name, samples, extra.get("generation"), threads=sess.threads)
    return ProfileReport(
        artifact=str(sess.path), target=sess.target, backend=sess.backend_name,
        backend_version=sess.backend.version(),
        device=sess.manifest.extra.get("device_label") or f"{cpu_name()} ({platform.machine()}, {platform.system()})",
        threads=sess.threads, program=prog_name, warmup=warm["runs"], iters=iters,
        load_ms=sess.load_ms, first_run_ms=first_ms, samples_ms=samples,
        peak_rss_mb=_finite(max(pre_hwm, run_hwm)), baseline_rss_mb=_finite(before), ops=ops, ops_note=note,
        label=sess.manifest.extra.get("runs_label", ""), verified=sess.verified, extra=extra,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _compute(sess: Session, program: str, samples: list[float], gen: dict | None, threads: int) -> dict:
    """FLOPs per run from the manifest, GFLOP/s at the p50, % of the GEMM peak at ``threads``."""
    counted = sess.manifest.extra.get("flops") if isinstance(sess.manifest.extra.get("flops"), dict) else None
    if counted is None:
        return {"flops": None, "note": "no FLOPs count: " + ("a bare model file has no manifest to carry it"
                                                             if not sess.verified else
                                                             "the artifact was converted before FLOPs were recorded")}
    per = counted.get("per_program") or {}
    p50 = median(samples)
    out: dict = {"method": counted.get("method")}
    if gen is not None:
        g = sess.generation
        caps = gen.get("capacities") or []
        prefill = g.prefill[caps.index(gen["capacity"])] if gen.get("capacity") in caps else g.prefill[-1]
        step = g.step_for(prefill)                              # the programs generate ran
        out.update(flops=per.get(prefill), per="prefill (time to first token)")
        tp = (gen.get("tpot_ms") or {}).get("p50")
        if per.get(step) and tp:
            out.update(decode_flops=per[step], decode_gflops_per_s=per[step] / (tp * 1e6))
    else:
        out.update(flops=per.get(program), per="run")
    if not out.get("flops"):
        out["note"] = (counted.get("errors") or {}).get(program, "no matmul/conv/attention FLOPs in this program")
        return out
    out["gflops_per_s"] = out["flops"] / (p50 * 1e6) if p50 > 0 else None
    from edgesdk.runtime.peak import gemm_peak
    try:
        peak = gemm_peak(threads)
    except Exception as e:  # noqa: BLE001 - the peak is context, not the profile
        peak, out["peak_note"] = None, f"GEMM microbenchmark failed: {type(e).__name__}: {e}"
    if peak:
        out.update(peak_gflops=peak["gflops"], peak_threads=threads, peak_backend=peak["backend"],
                   peak_cached=peak["cached"])
        if out["gflops_per_s"] is not None:
            out["pct_of_peak"] = 100.0 * out["gflops_per_s"] / peak["gflops"]
    elif "peak_note" not in out:
        out["peak_note"] = "no GEMM microbenchmark here (onnxruntime is not installed)"
    return out


def op_pass(sess: Session, spec, arrays, seed: int, op_runs: int) -> tuple[list[dict], str, dict]:
    """Per-op rows from a separate profiled pass (``spec`` None: a generation artifact, whose
    rows are for its step program)."""
    if spec is None:
        step_spec = sess.program(sess.generation.step).spec
        ops, note, extra = _op_rows(sess, step_spec, example_inputs(list(step_spec.inputs), seed), op_runs)
        return ops, f"per-op rows are for the step program {sess.generation.step!r}" + (f"; {note}" if note else ""), extra
    return _op_rows(sess, spec, arrays, op_runs)


def _timed_dims(spec, dims: dict | None) -> dict:
    """Sizes of the dynamic dims to time at: the example's, overridden by ``dims``."""
    if dims is None:
        return spec.example_dims()
    if not isinstance(dims, dict):
        raise ConfigError(f"dims must map a dynamic dimension to a size, e.g. {{'batch': 8}}, got {dims!r}")
    known = spec.dims or {}
    unknown = [k for k in dims if k not in known]
    if unknown:
        have = ", ".join(f"{k} ({r['min']}..{r['max']})" for k, r in known.items()) or "none (static shapes)"
        raise ConfigError(f"dims names {unknown}, but this program's dynamic dimensions are {have}")
    bad = [k for k, v in dims.items() if isinstance(v, bool) or not isinstance(v, int)]
    if bad:
        raise ConfigError(f"dims sizes must be ints, got {dims!r}")
    return {**spec.example_dims(), **dims}


def _op_rows(sess: Session, spec, arrays, op_runs: int) -> tuple[list[dict], str, dict]:
    res = sess.backend.op_events(sess.path if sess.path.is_file() else sess.path / spec.file,
                                 spec, arrays, op_runs, sess.threads, manifest=sess.manifest)
    events, note = res[0], res[1]
    backend_extra = res[2] if len(res) > 2 else {}
    return aggregate_ops(events, backend_extra.pop("profiled_runs", op_runs)), note, backend_extra


class Workload:
    """The runs of a generation profile taken from the caller's ``workload`` (`runtime.profile`):
    each item is ``{"prompt": ids, "continuation": ids}`` (teacher-forced, `Session.score`) or
    ``{"prompt": ids, "max_new_tokens": n}`` (greedy `Session.generate`, stopping at eos). The
    cold run is the first item and every later run the next one, round the list; ``outputs`` keeps
    each item's first result (an artifact is a deterministic function of its inputs), so a caller
    gets its quality figures from the very runs that were timed."""

    def __init__(self, sess: Session, items):
        if not isinstance(items, (list, tuple)) or not items:
            raise ConfigError("workload must be a non-empty list of runs")
        self.sess, self.items, self.i = sess, [self._check(k, it) for k, it in enumerate(items)], 0
        self.outputs: list = [None] * len(self.items)
        spec = sess.generation
        classes = [next(s for s in sess.program(p).spec.inputs if s.name == spec.prompt).shape[1]
                   for p in spec.prefill]
        lens = [len(it["prompt"]) for it in self.items]
        if max(lens) > classes[-1]:
            raise ConfigError(f"workload: a prompt of {max(lens)} tokens is over the exported capacity {classes[-1]}")
        self.prompt_tokens = int(np.median(lens))
        self.capacity = max(next(c for c in classes if c >= n) for n in lens)
        self.capacities = classes

    @staticmethod
    def _check(k: int, it) -> dict:
        where = f"workload[{k}]"  # token arrays arrive as lists (`runtime.profiler._plain`)
        if not isinstance(it, dict) or not it.get("prompt") or (("continuation" in it) == ("max_new_tokens" in it)):
            raise ConfigError(f"{where}: give a non-empty 'prompt' and either 'continuation' (scored teacher-forced) "
                              f"or 'max_new_tokens' (generated greedily), got {it!r:.200}")
        n = it.get("max_new_tokens")
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"{where}: max_new_tokens must be a positive int, got {n!r}")
        if "continuation" in it and not it["continuation"]:
            raise ConfigError(f"{where}: continuation is empty")
        return it

    def run(self, k: int):
        """Item ``k`` once -> a `Generation` with its timings (what the profile summarises)."""
        from edgesdk.runtime.generate import Generation
        it = self.items[k]
        if "continuation" in it:
            s = self.sess.score(it["prompt"], it["continuation"])
            g = Generation(list(it["continuation"]), len(it["prompt"]), s["ttft_ms"], list(s["step_ms"]),
                           state_bytes=s["state_bytes"])
            out = {k2: s[k2] for k2 in ("logprobs", "correct", "bits_per_token", "accuracy")}
        else:
            g = self.sess.generate(it["prompt"], it["max_new_tokens"])
            out = {"tokens": list(g.tokens), "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                   "text": g.text}
        if self.outputs[k] is None:
            self.outputs[k] = out
        return g

    def next(self):
        k, self.i = self.i, (self.i + 1) % len(self.items)
        return self.run(k)

    def complete(self) -> None:
        for k, out in enumerate(self.outputs):
            if out is None:
                self.run(k)


def _gen_prompt(sess: Session, seed, prompt_tokens, new_tokens):
    spec = sess.generation
    classes = [(next(s for s in sess.program(p).spec.inputs if s.name == spec.prompt).shape[1], sess.program(p).spec)
               for p in spec.prefill]                                  # prompt length classes, smallest first
    cap = classes[-1][0]
    n = cap if prompt_tokens is None else prompt_tokens
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= cap:
        raise ConfigError(f"prompt_tokens must be an int in 1..{cap} (the exported capacity), got {prompt_tokens!r}")
    used, prefill = next((c, p) for c, p in classes if c >= n)         # what generate runs for n tokens
    if isinstance(new_tokens, bool) or not isinstance(new_tokens, int) or new_tokens < 1:
        raise ConfigError(f"new_tokens must be a positive int, got {new_tokens!r}")
    vocab = 256 if spec.tokenizer == "bytes" else None
    if vocab is None:
        vr = next(s for s in prefill.inputs if s.name == spec.prompt).value_range
        vocab = (vr[1] + 1) if vr else 1
    return np.random.default_rng(seed).integers(0, vocab, size=n), n, used, [c for c, _ in classes]


def _generation_summary(gens, first, n_prompt: int, cap: int, caps: list[int]) -> dict:
    ttft = [g.ttft_ms for g in gens]
    tpot = [x for g in gens for x in g.step_ms]
    rates = [g.tokens_per_s for g in gens]
    made = [len(g.tokens) for g in gens]
    return {"prompt_tokens": n_prompt, "new_tokens": int(np.median(made)), "capacity": cap, "capacities": caps,
            "ttft_ms": summarize(ttft), "tpot_ms": summarize(tpot) if tpot else None,
            "tokens_per_s": float(np.median(rates)) if tpot else None, "state_bytes": first.state_bytes,
            "finish_reason": first.finish_reason}


_json_safe = json_safe  # the earlier name, while other branches still import it
