"""`runtime.profile`: check the arguments, then profile an artifact in this process or in an
isolated child (`runtime.isolate`). The measuring itself is `runtime.profile`'s module
(`measure`, `sweep_threads`), which both paths run.

Example::

    from edgesdk import runtime
    rep = runtime.profile("out/mlp-onnx-cpu", iters=200, threads="auto", isolate=True)
    print(rep.p50_ms, rep.memory["init_mb"])
"""

from __future__ import annotations

from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.isolate import profile_isolated
from edgesdk.runtime.machine import usable_cores
from edgesdk.runtime.profile import MAX_WARMUP_S, WARMUP_AUTO, ProfileReport, measure, sweep_threads


def _check_args(warmup, iters, threads) -> None:
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"iters must be a positive int, got {iters!r}")
    if warmup != WARMUP_AUTO and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ConfigError(f"warmup must be a non-negative int or 'auto' (until the timings settle), got {warmup!r}")
    if threads is not None and threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                                                     or threads < 1):
        raise ConfigError(f"threads must be a positive int, 'auto' (measure 1..{usable_cores()} and use the "
                          f"fastest) or None (all usable cores), got {threads!r}")


def _plain(workload):
    """The workload as JSON-ready lists (it travels to an isolated child as JSON)."""
    if workload is None:
        return None
    if not isinstance(workload, (list, tuple)):
        raise ConfigError(f"workload must be a list of runs, got {type(workload).__name__}")
    return [{k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in it.items()} if isinstance(it, dict) else it
            for it in workload]


def profile(path, *, warmup=WARMUP_AUTO, iters: int = 100, inputs=None, threads=None,
            program: str | None = None, per_op: bool = True, op_runs: int = 20, seed: int = 0,
            progress=None, require_signature: bool = False, public_key=None,
            prompt_tokens: int | None = None, new_tokens: int = 32, isolate: bool = False,
            max_warmup_s: float = MAX_WARMUP_S, dims: dict | None = None, workload=None) -> ProfileReport:
    """Profile an artifact (or bare model file) on this machine.

    Example::

        from edgesdk import runtime
        rep = runtime.profile("out/mlp-onnx-cpu", iters=200, threads="auto", isolate=True)
        print(rep.p50_ms, rep.p99_ms, rep.memory["init_mb"], rep.gflops_per_s, rep.settled)
        print(rep.table())

    Measures the load (integrity check included), the first run (cold start), warm-up runs,
    then ``iters`` timed runs of ``Session.run``.

    - ``warmup``: ``"auto"`` (default) runs windows of runs until the median of the last window
      stops moving (within 5% of the one before; bounded by ``max_warmup_s`` seconds), or a fixed
      count. ``steady_state`` records the windows; a profile whose timings never settle (warm-up
      hit its bound, the timed runs drifted, or they are bimodal) has ``settled == False`` and
      names the likely cause where the machine tells: other processes' CPU load, hypervisor
      steal, CPU frequency changes (``/sys`` cpufreq), bimodal timings.
    - ``threads``: an int, None (all usable cores) or ``"auto"``: time each count from 1 to the
      usable cores, use the fastest (fewer threads on a 3% tie); ``extra["threads_sweep"]``
      records the sweep.
    - ``isolate=True`` profiles in a child process that imports only `runtime` and the backend
      (no torch for ONNX, LiteRT and QNN artifacts), so ``memory`` is the artifact's own as an
      app would see it: ``rss_before_load_mb``, ``init_mb`` (resident high-water mark after load
      minus RSS before; what LiteRT's benchmark_model calls the init footprint), ``run_peak_mb``
      (the high-water mark during the timed runs, minus RSS before load) and ``overall_peak_mb``,
      plus the backend's own numbers where it tells (ExecuTorch's planned arena). In-process
      profiles (the default of this function; the CLI and the pipeline isolate by default)
      report the same deltas labelled ``mode: "in-process"``.
    - ``compute``: FLOPs per run (counted from the exported graph at conversion time, recorded in
      the manifest), GFLOP/s achieved at the p50, and % of this machine's fp32 GEMM peak at the
      same thread count (`runtime.peak`, cached per machine).

    ``ops`` holds per-op rows from a separate profiled pass where the backend can tell (ONNX
    Runtime profiler, ExecuTorch ETDump); otherwise it is empty and ``ops_note`` says why.
    ``progress(done, total)`` is called during the timed loop.

    Generation artifacts (a ``"generation"`` manifest entry: encoder-decoder, decoder with KV
    cache, recurrent) are profiled as generation unless ``program`` or ``inputs`` is given: each
    timed iteration is one greedy `Session.generate` of ``new_tokens`` (eos ignored) after a
    random prompt of ``prompt_tokens`` (default: the exported capacity). ``samples_ms`` then holds
    the time to first token of every iteration, and ``extra["generation"]`` the time per output
    token (``tpot_ms``), decode tokens/s and the decoding state's size; per-op rows, where the
    backend has them, are for the step program (the decode loop).

    ``workload`` (generation artifacts): the runs to time instead of the random prompt, a list of
    ``{"prompt": ids, "continuation": ids}`` (scored teacher-forced, as `Session.score`) or
    ``{"prompt": ids, "max_new_tokens": n}`` (greedy `Session.generate`, stopping at eos). The
    cold run is the first item, every later run the next one round the list, and items not
    reached run once more after the timings; ``extra["workload"]["outputs"]`` holds each item's
    result (``correct``/``logprobs``, or ``tokens``/``finish_reason``), so a quality metric can be
    read from the runs that were timed (where one generation takes seconds: an emulated NPU).

    Artifacts with dynamic shapes are timed at the example inputs' sizes unless ``dims`` names
    others (``{"batch": 8}``; `Session.inputs` shows the symbols, the manifest their ranges);
    the report's ``extra["dims"]`` records the sizes timed.
    """
    _check_args(warmup, iters, threads)
    if workload is not None and (program is not None or inputs is not None):
        raise ConfigError("workload times a generation: give it without program or inputs")
    kw = dict(warmup=warmup, iters=iters, inputs=inputs, program=program, per_op=per_op, op_runs=op_runs,
              seed=seed, progress=progress, require_signature=require_signature, public_key=public_key,
              prompt_tokens=prompt_tokens, new_tokens=new_tokens, max_warmup_s=max_warmup_s, dims=dims,
              workload=_plain(workload))
    if isolate:
        return profile_isolated(path, threads=threads, **kw)
    sweep = None
    if threads == "auto":
        sweep = sweep_threads(path, inputs=inputs, program=program, seed=seed, require_signature=require_signature,
                              public_key=public_key, prompt_tokens=prompt_tokens, new_tokens=new_tokens, dims=dims)
        threads = sweep["chosen"]
    rep = measure(path, threads=threads, mode="in-process", **kw)
    if sweep:
        rep.extra["threads_sweep"] = sweep
    return rep
