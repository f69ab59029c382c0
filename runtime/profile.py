"""`runtime.profile(path) -> ProfileReport`: load time, cold start, warm percentiles, memory, per-op.

Raw samples are kept; every statistic is derived from them (see `runtime.stats`).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import platform
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from runtime.errors import ConfigError
from runtime.manifest import TensorSpec
from runtime.session import Session, load
from runtime.stats import summarize

SCHEMA = "edgesdk.profile/1"
NOISY_CV = 0.10
DELEGATE_SHARE_WARN = 0.80  # below this share of time inside the delegate, a profile says so


# ---------------------------------------------------------------- memory (Linux /proc, fallback getrusage)

def _status_kb(key: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else math.nan


def reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark so the peak covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


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

@dataclass
class ProfileReport:
    """Latency profile of one artifact on one device. Statistics derive from `samples_ms`."""

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
    def delegate_share(self) -> float | None:
        """Share of the per-op time spent inside an accelerator delegate (ExecuTorch ETDump rows),
        or None when the backend reports no delegate split."""
        if not self.ops or not any(r.get("backend") == "portable" for r in self.ops) and \
                not any(r.get("op_type") == "DELEGATE_CALL" for r in self.ops):
            return None
        total = sum(r["total_ms"] for r in self.ops) or 1.0
        return sum(r["total_ms"] for r in self.ops if r.get("backend") not in ("portable", "", None)) / total

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
        return json.dumps(_json_safe(self.to_dict()), indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> "ProfileReport":
        d = json.loads(text)
        if not isinstance(d, dict) or d.get("schema") != SCHEMA:
            raise ConfigError(f"not a profile report (schema {d.get('schema') if isinstance(d, dict) else None!r}, "
                              f"expected {SCHEMA!r})")
        d.pop("stats", None)
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in names})

    def table(self, top_ops: int = 10) -> str:
        """A readable summary (what `edgesdk profile` prints)."""
        st = self.stats
        lines = [
            f"{self.artifact}",
            f"  target {self.target} · backend {self.backend} {self.backend_version} · {self.threads} threads"
            + (f" · {self.label}" if self.label else ""),
            f"  device {self.device}",
            f"  load {self.load_ms:.2f} ms · first run (cold) {self.first_run_ms:.3f} ms · "
            f"peak RSS {self.peak_rss_mb:.1f} MB (before load {self.baseline_rss_mb:.1f} MB)",
            f"  {st['count']} runs after {self.warmup} warm-up: p50 {st['p50']:.4f} · p90 {st['p90']:.4f} · "
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


def _json_safe(o):
    """NaN/Inf become null: JSON has no spelling for them."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _json_safe(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_json_safe(v) for v in o]
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


def profile(path, *, warmup: int = 10, iters: int = 100, inputs=None, threads: int | None = None,
            program: str | None = None, per_op: bool = True, op_runs: int = 20, seed: int = 0,
            progress=None, require_signature: bool = False, public_key=None,
            prompt_tokens: int | None = None, new_tokens: int = 32, dims: dict | None = None) -> ProfileReport:
    """Profile an artifact (or bare model file) on this machine.

    Example::

        import runtime
        rep = runtime.profile("out/mlp-onnx-cpu", warmup=10, iters=200)
        print(rep.p50_ms, rep.p99_ms, rep.noisy)
        print(rep.table())

    Measures the load (integrity check included), the first run (cold start), ``warmup``
    discarded runs, then ``iters`` timed runs of ``Session.run``. ``peak_rss_mb`` is the
    process high-water mark from just before the load to the end of the timed runs.
    ``ops`` holds per-op rows from a separate profiled pass where the backend can tell
    (ONNX Runtime profiler, ExecuTorch ETDump); otherwise it is empty and ``ops_note`` says why.
    ``progress(done, total)`` is called during the timed loop.

    Generation artifacts (a ``"generation"`` manifest entry: encoder-decoder, decoder with KV
    cache, recurrent) are profiled as generation unless ``program`` or ``inputs`` is given: each
    timed iteration is one greedy `Session.generate` of ``new_tokens`` (eos ignored) after a
    random prompt of ``prompt_tokens`` (default: the exported capacity). ``samples_ms`` then holds
    the time to first token of every iteration, and ``extra["generation"]`` the time per output
    token (``tpot_ms``), decode tokens/s and the decoding state's size; per-op rows, where the
    backend has them, are for the step program (the decode loop).

    Artifacts with dynamic shapes are timed at the example inputs' sizes unless ``dims`` names
    others (``{"batch": 8}``; `Session.inputs` shows the symbols, the manifest their ranges);
    the report's ``extra["dims"]`` records the sizes timed.
    """
    if not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"iters must be a positive int, got {iters!r}")
    if not isinstance(warmup, int) or warmup < 0:
        raise ConfigError(f"warmup must be a non-negative int, got {warmup!r}")
    reset_peak_rss()
    baseline = rss_mb()
    sess: Session = load(path, threads=threads, require_signature=require_signature, public_key=public_key)
    if sess.generation is not None and program is None and inputs is None:
        return _profile_generation(sess, warmup, iters, per_op, op_runs, seed, progress, baseline,
                                   prompt_tokens, new_tokens)
    binding = sess.program(program) if program else sess._default
    spec = binding.spec
    timed = _timed_dims(spec, dims)
    arrays = example_inputs(list(spec.inputs), seed, dims=timed) if inputs is None else binding.validate(inputs)
    if inputs is None and timed:
        arrays = binding.validate(arrays)  # sizes outside the exported range fail here, with the range

    t = time.perf_counter_ns()
    binding.run(arrays)
    first_ms = (time.perf_counter_ns() - t) / 1e6
    for _ in range(warmup):
        binding.run(arrays)
    samples = []
    step = max(1, iters // 50)
    clock = time.perf_counter_ns
    for i in range(iters):
        t = clock()
        binding.run(arrays)
        samples.append((clock() - t) / 1e6)
        if progress is not None and (i + 1) % step == 0:
            progress(i + 1, iters)
    peak = peak_rss_mb()

    ops, note, backend_extra = _op_rows(sess, spec, arrays, op_runs) if per_op else ([], "", {})
    if spec.dims:
        backend_extra["dims"] = {s.name: list(a.shape) for s, a in zip(spec.inputs, arrays)}
    return _report(sess, spec.name, warmup, iters, first_ms, samples, peak, baseline, ops, note, backend_extra)


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


def _report(sess: Session, program: str, warmup, iters, first_ms, samples, peak, baseline, ops, note,
            backend_extra) -> "ProfileReport":
    extra = sess.manifest.extra
    return ProfileReport(
        artifact=str(sess.path), target=sess.target, backend=sess.backend_name,
        backend_version=sess.backend.version(),
        device=extra.get("device_label") or f"{cpu_name()} ({platform.machine()}, {platform.system()})",
        threads=sess.threads, program=program, warmup=warmup, iters=iters,
        load_ms=sess.load_ms, first_run_ms=first_ms, samples_ms=samples,
        peak_rss_mb=_finite(peak), baseline_rss_mb=_finite(baseline), ops=ops, ops_note=note,
        label=extra.get("runs_label", ""), verified=sess.verified, extra=backend_extra,
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    )


def _profile_generation(sess: Session, warmup, iters, per_op, op_runs, seed, progress, baseline,
                        prompt_tokens, new_tokens) -> "ProfileReport":
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
    prompt = np.random.default_rng(seed).integers(0, vocab, size=n)

    def once():
        return sess.generate(prompt, new_tokens, stop_at_eos=False)

    first = once()
    for _ in range(warmup):
        once()
    ttft, tpot, rates, made = [], [], [], []
    step = max(1, iters // 50)
    for i in range(iters):
        g = once()
        ttft.append(g.ttft_ms)
        tpot.extend(g.step_ms)
        rates.append(g.tokens_per_s)
        made.append(len(g.tokens))
        if progress is not None and (i + 1) % step == 0:
            progress(i + 1, iters)
    peak = peak_rss_mb()
    gen = {"prompt_tokens": n, "new_tokens": int(np.median(made)), "capacity": used,
           "capacities": [c for c, _ in classes],
           "ttft_ms": summarize(ttft), "tpot_ms": summarize(tpot) if tpot else None,
           "tokens_per_s": float(np.median(rates)) if tpot else None, "state_bytes": first.state_bytes,
           "finish_reason": first.finish_reason}
    ops, note, backend_extra = [], "", {}
    if per_op:
        step_spec = sess.program(spec.step).spec
        ops, note, backend_extra = _op_rows(sess, step_spec, example_inputs(list(step_spec.inputs), seed), op_runs)
        note = f"per-op rows are for the step program {spec.step!r}" + (f"; {note}" if note else "")
    return _report(sess, "generate", warmup, iters, first.ttft_ms, ttft, peak, baseline, ops, note,
                   {**backend_extra, "generation": gen})
