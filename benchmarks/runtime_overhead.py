"""Overhead of `Session.run` over each backend's own call, per CPU target.

For every CPU target that runs here, convert three models (a tiny Linear(16, 16), an MLP
sized to take about 1 ms, and a 1x1 convolution whose output is 800 KB), load the artifact
with `runtime.load`, and time, interleaved in one process on the same inputs:

  A  raw:  the backend's own call on the same loaded program (`Program.raw_call()`),
           with its inputs prepared once outside the timed region;
  B  run:  `Session.run([x])` (input validation, lock, dtype/layout handling, outputs
           as numpy arrays).

Pairs alternate which side goes first (A B, B A, ...). Every raw sample is kept
(`time.perf_counter_ns`); reported per target x model: p50 of each side, the median
per-pair difference and ratio (run / raw) with bootstrap 95% CIs, CV of each series
(flagged above 10%), and PASS/MISS against the targets:

  tiny model:  median difference <= 15 us
  ~1 ms model and the wide-output one: median ratio <= 1.05

On ExecuTorch the raw call is the bindings' ``call``, which clones every output with ``at::clone``;
`Session.run` reads views of the method's output memory and copies them with numpy (the wide model
is where the two differ).

Method: /work/shared/BENCHMARKING.md. Both sides use the same loaded program, hence
the same intra-op thread count (`Session.threads`). The garbage collector is paused
during each timed loop (for both sides alike).

Usage::

    python benchmarks/runtime_overhead.py              # full run (well under a minute on 2 cores)
    python benchmarks/runtime_overhead.py --quick      # smoke run
    python benchmarks/runtime_overhead.py --markdown --json /tmp/overhead.json
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from edgesdk import converters  # noqa: E402
from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402

NOISY_CV = 0.10
TINY_MAX_DIFF_US = 15.0
BIG_MAX_RATIO = 1.05
VERSION_PACKAGES = ("torch", "executorch", "onnxruntime", "ai-edge-litert", "numpy")


# ----------------------------------------------------------------------------- models

def tiny_model():
    torch.manual_seed(0)
    return torch.nn.Linear(16, 16), torch.randn(1, 16)


def mlp_model(hidden: int, layers: int, batch: int, width_in: int = 256):
    """Linear/ReLU stack: width_in -> hidden x layers -> width_in."""
    torch.manual_seed(0)
    mods, d = [], width_in
    for _ in range(layers):
        mods += [torch.nn.Linear(d, hidden), torch.nn.ReLU()]
        d = hidden
    mods.append(torch.nn.Linear(d, width_in))
    return torch.nn.Sequential(*mods), torch.randn(batch, width_in)


def wide_model():
    """A 1x1 convolution whose (1, 64, 56, 56) output is 800 KB: what copying outputs costs."""
    torch.manual_seed(0)
    return torch.nn.Conv2d(64, 64, 1), torch.randn(1, 64, 56, 56)


# ----------------------------------------------------------------------------- raw calls

def raw_caller(sess, fmt: str, x: np.ndarray):
    """A zero-argument callable doing the backend's own call, inputs prepared once."""
    prog = sess.program("forward").program
    if fmt == "onnx":
        fn, names = prog.raw_call()
        feed = {names[0]: x}
        return lambda: fn(feed)
    if fmt == "pte":
        fn = prog.raw_call()
        tensors = [torch.from_numpy(x)]
        return lambda: fn(tensors)
    if fmt == "tflite":
        fn = prog.raw_call()
        arrays = [x]
        return lambda: fn(arrays)
    raise ValueError(f"no raw call for format {fmt!r}")


def check_same_output(sess, raw, x: np.ndarray) -> float:
    """Max |difference| between Session.run and the raw call (they must do the same work)."""
    (a,) = sess.run([x])
    b = raw()
    b = b[0] if isinstance(b, (list, tuple)) else b
    b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    return float(np.abs(a - b).max())


# ----------------------------------------------------------------------------- timing

def interleave(raw, run, pairs: int, warmup: int):
    """Warm both sides, then time A B / B A pairs; returns (raw_ns, run_ns) arrays."""
    for _ in range(warmup):
        raw()
        run()
    clock = time.perf_counter_ns
    raw_ns = np.empty(pairs, dtype=np.int64)
    run_ns = np.empty(pairs, dtype=np.int64)
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(pairs):
            if i & 1:
                t0 = clock(); run(); t1 = clock()  # noqa: E702
                raw(); t2 = clock()  # noqa: E702
                run_ns[i], raw_ns[i] = t1 - t0, t2 - t1
            else:
                t0 = clock(); raw(); t1 = clock()  # noqa: E702
                run(); t2 = clock()  # noqa: E702
                raw_ns[i], run_ns[i] = t1 - t0, t2 - t1
    finally:
        if gc_was:
            gc.enable()
    return raw_ns, run_ns


def bootstrap_median_ci(values: np.ndarray, resamples: int, rng: np.random.Generator,
                        chunk: int = 200) -> tuple[float, float]:
    """Percentile bootstrap 95% CI of the median of `values` (resampling pairs)."""
    n = len(values)
    meds = []
    for start in range(0, resamples, chunk):
        k = min(chunk, resamples - start)
        idx = rng.integers(0, n, size=(k, n))
        meds.append(np.median(values[idx], axis=1))
    meds = np.concatenate(meds)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    return float(lo), float(hi)


def analyse(raw_ns: np.ndarray, run_ns: np.ndarray, kind: str, resamples: int, seed: int) -> dict:
    raw_us, run_us = raw_ns / 1e3, run_ns / 1e3
    diff, ratio = run_us - raw_us, run_us / raw_us
    rng = np.random.default_rng(seed)
    s_raw, s_run = summarize(raw_us.tolist()), summarize(run_us.tolist())
    ratio_ci = bootstrap_median_ci(ratio, resamples, rng)
    diff_ci = bootstrap_median_ci(diff, resamples, rng)
    med_diff, med_ratio = float(np.median(diff)), float(np.median(ratio))
    if kind == "tiny":
        criterion, passed = f"diff <= {TINY_MAX_DIFF_US:g} us", med_diff <= TINY_MAX_DIFF_US
    else:
        criterion, passed = f"ratio <= {BIG_MAX_RATIO:g}", med_ratio <= BIG_MAX_RATIO
    return {
        "pairs": len(raw_ns), "raw": s_raw, "run": s_run,
        "median_diff_us": med_diff, "diff_ci95_us": diff_ci,
        "median_ratio": med_ratio, "ratio_ci95": ratio_ci,
        "no_measurable_difference": ratio_ci[0] <= 1.0 <= ratio_ci[1],
        "noisy": [name for name, s in (("raw", s_raw), ("run", s_run)) if s["cv"] > NOISY_CV],
        "criterion": criterion, "passed": bool(passed),
    }


def breakdown(sess, raw, x: np.ndarray, iters: int) -> dict:
    """Where Session.run's time goes: validate vs program.run vs the raw call (p50, us).

    Uses the binding's internals (`validate`, `program.run`), for diagnosis only; interleaved
    like the main measurement.
    """
    b = sess.program("forward")
    inputs = [x]
    arrays = b.validate(inputs)
    parts = {"validate": lambda: b.validate(inputs), "program.run": lambda: b.program.run(arrays),
             "raw": raw, "Session.run": lambda: sess.run(inputs)}
    method = getattr(b.program, "method", None)
    if method is not None:  # ExecuTorch: its outputs cloned by the bindings (at::clone) or copied by numpy
        tensors = [torch.from_numpy(a) for a in arrays]
        parts["call, outputs cloned"] = lambda: method.call(tensors)
        parts["call, outputs copied by numpy"] = lambda: [np.array(o.numpy()) for o in
                                                          method.call(tensors, clone_outputs=False)]
    clock = time.perf_counter_ns
    samples = {k: np.empty(iters, dtype=np.int64) for k in parts}
    for f in parts.values():
        for _ in range(max(20, iters // 10)):
            f()
    order = list(parts.items())
    gc.collect()
    gc.disable()
    try:
        for i in range(iters):
            seq = order if i & 1 == 0 else order[::-1]
            for k, f in seq:
                t0 = clock(); f(); samples[k][i] = clock() - t0  # noqa: E702
    finally:
        gc.enable()
    return {k: float(np.median(v)) / 1e3 for k, v in samples.items()}


# ----------------------------------------------------------------------------- environment

def cpu_model() -> str:
    from edgesdk.runtime.profile import cpu_name
    return cpu_name()


def environment(packages=None) -> dict:
    """Date, versions of ``packages`` (default: this benchmark's), CPU and thread counts."""
    versions = {}
    for pkg in packages or VERSION_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(), "versions": versions, "cpu": cpu_model(),
        "usable_cores": runtime.default_threads(), "torch_threads": torch.get_num_threads(),
    }


def env_line(env: dict, threads: dict) -> str:
    v = env["versions"]
    th = ", ".join(f"{t}={n}" for t, n in threads.items()) or "n/a"
    return (f"{env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
            f"torch {v['torch']}, executorch {v['executorch']}, onnxruntime {v['onnxruntime']}, "
            f"ai-edge-litert {v['ai-edge-litert']}, numpy {v['numpy']}; intra-op threads (both sides): {th}; "
            f"torch threads {env['torch_threads']} (not on the timed path)")


# ----------------------------------------------------------------------------- report

HEADERS = ["target", "model", "pairs", "raw p50 (us)", "Session.run p50 (us)", "median diff (us) [95% CI]",
           "median ratio [95% CI]", "CV raw / run", "goal", "result"]


def table_rows(results: list[dict]) -> list[list[str]]:
    rows = []
    for r in results:
        a = r["analysis"]
        cv = f"{a['raw']['cv'] * 100:.1f}% / {a['run']['cv'] * 100:.1f}%"
        if a["noisy"]:
            cv += " (noisy: " + ", ".join(a["noisy"]) + ")"
        result = "PASS" if a["passed"] else "MISS"
        if a["no_measurable_difference"]:
            result += " (no measurable difference)"
        lo, hi = a["diff_ci95_us"]
        rlo, rhi = a["ratio_ci95"]
        rows.append([r["target"], r["model"], str(a["pairs"]), f"{a['raw']['p50']:.1f}", f"{a['run']['p50']:.1f}",
                     f"{a['median_diff_us']:+.1f} [{lo:+.1f}, {hi:+.1f}]",
                     f"{a['median_ratio']:.3f} [{rlo:.3f}, {rhi:.3f}]", cv, a["criterion"], result])
    return rows


def text_table(headers: list[str], rows: list[list[str]], markdown: bool) -> str:
    """A Markdown table, or aligned plain text: how every benchmark here prints its results."""
    if markdown:
        out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(out + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*headers), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def render(rows: list[list[str]], markdown: bool) -> str:
    return text_table(HEADERS, rows, markdown)


# ----------------------------------------------------------------------------- main

def cpu_targets(only: list[str] | None) -> list:
    info = {t.name: t for t in edgesdk.targets()}
    out = []
    for name in converters.target_names():
        t = info[name]
        if t.device != "cpu":
            continue
        if only and name not in only:
            continue
        if not t.runs_here:
            print(f"# skip {name}: {t.why_not}", file=sys.stderr)
            continue
        out.append(t)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="few pairs and resamples (smoke run, numbers not for publishing)")
    ap.add_argument("--json", metavar="PATH", help="also write environment, statistics and every raw sample here")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--targets", nargs="+", metavar="T", help="only these targets (default: every CPU target that runs here)")
    ap.add_argument("--models", nargs="+", choices=("tiny", "1ms", "wide"), default=["tiny", "1ms", "wide"],
                    help="which models (default all three)")
    ap.add_argument("--pairs-tiny", type=int, default=None, help="pairs for the tiny model (default 5000; quick 200)")
    ap.add_argument("--pairs-1ms", type=int, default=None, help="pairs for the ~1 ms model (default 1500; quick 50)")
    ap.add_argument("--pairs-wide", type=int, default=None, help="pairs for the wide-output model (default 1500; quick 50)")
    ap.add_argument("--hidden", type=int, default=1024, help="hidden width of the ~1 ms MLP (default 1024)")
    ap.add_argument("--layers", type=int, default=3, help="hidden layers of the ~1 ms MLP (default 3)")
    ap.add_argument("--batch", type=int, default=40, help="batch of the ~1 ms MLP (default 40)")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000; quick 200)")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time Session.run's parts (validate, program.run) against the raw call")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    args = ap.parse_args(argv)

    pairs = {"tiny": args.pairs_tiny or (200 if args.quick else 5000),
             "1ms": args.pairs_1ms or (50 if args.quick else 1500),
             "wide": args.pairs_wide or (50 if args.quick else 1500)}
    warmup = {"tiny": 50 if args.quick else 300, "1ms": 10 if args.quick else 50, "wide": 10 if args.quick else 50}
    resamples = args.resamples or (200 if args.quick else 1000)
    for k, v in pairs.items():
        if v < 10:
            ap.error(f"--pairs-{k} must be at least 10")

    env = environment()
    targets = cpu_targets(args.targets)
    if not targets:
        print("no CPU target runs here; nothing to measure", file=sys.stderr)
        return 1
    models = {"tiny": ("tiny Linear(16,16) x(1,16)", tiny_model)}
    mlp_label = f"MLP 256-{args.hidden}x{args.layers}-256 x({args.batch},256)"
    models["1ms"] = (mlp_label, lambda: mlp_model(args.hidden, args.layers, args.batch))
    models["wide"] = ("Conv2d 1x1 64->64 x(1,64,56,56), 800 KB out", wide_model)

    results, threads, cold = [], {}, []
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="edgesdk-overhead-") as tmp:
        for t in targets:
            for key in args.models:
                label, make = models[key]
                model, x_t = make()
                art = edgesdk.convert(model, (x_t,), t.name, out_dir=tmp, name=f"{key}-{t.name}", verify_samples=1)
                x = np.ascontiguousarray(x_t.numpy(), dtype=np.float32)
                sess = runtime.load(art.path)
                threads[t.name] = sess.threads
                # cold start: first Session.run on a freshly loaded session (reported apart)
                t0 = time.perf_counter_ns()
                sess.run([x])
                cold_us = (time.perf_counter_ns() - t0) / 1e3
                raw = raw_caller(sess, t.format, x)
                maxdiff = check_same_output(sess, raw, x)
                run_inputs = [x]
                run = sess.run
                raw_ns, run_ns = interleave(raw, lambda: run(run_inputs), pairs[key], warmup[key])
                a = analyse(raw_ns, run_ns, key, resamples, args.seed)
                row = {"target": t.name, "backend": t.backend, "model": label, "kind": key,
                       "threads": sess.threads, "load_ms": sess.load_ms, "cold_first_run_us": cold_us,
                       "outputs_max_abs_diff": maxdiff, "analysis": a,
                       "raw_ns": raw_ns.tolist(), "run_ns": run_ns.tolist()}
                if args.breakdown:
                    row["breakdown_p50_us"] = breakdown(sess, raw, x, pairs[key])
                results.append(row)
                cold.append(f"{t.name}/{key}: load {sess.load_ms:.1f} ms, first Session.run {cold_us:.0f} us, "
                            f"raw vs run outputs max |diff| {maxdiff:.1e}")
                print(f"# {t.name:<20} {key:<5} done ({time.perf_counter() - t_start:.0f}s)", file=sys.stderr)
                del sess, raw, run

    rows = table_rows(results)
    print(f"Environment: {env_line(env, threads)}")
    print(f"Pairs: tiny {pairs['tiny']} (warm-up {warmup['tiny']}), ~1 ms {pairs['1ms']} (warm-up {warmup['1ms']}), "
          f"wide {pairs['wide']} (warm-up {warmup['wide']}); "
          f"bootstrap {resamples} resamples, seed {args.seed}; ratio = Session.run / raw, diff = Session.run - raw"
          + ("; QUICK RUN (smoke only)" if args.quick else ""))
    print()
    print(render(rows, args.markdown))
    print()
    for c in cold:
        print(f"cold: {c}")
    if args.breakdown:
        print()
        for r in results:
            b = r["breakdown_p50_us"]
            print(f"breakdown p50 (us) {r['target']}/{r['kind']}: " + ", ".join(f"{k} {v:.1f}" for k, v in b.items()))
    if args.json:
        out = {"schema": "edgesdk.bench.runtime_overhead/1", "environment": env, "threads": threads,
               "pairs": pairs, "warmup": warmup, "resamples": resamples, "seed": args.seed,
               "quick": args.quick, "results": results}
        Path(args.json).write_text(json.dumps(out, indent=1))
        print(f"\nraw results: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
