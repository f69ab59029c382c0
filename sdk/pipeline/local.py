"""The local executor (the default): this machine's cores convert in parallel, and profiles
run one at a time with nothing else of ours running.

- A job whose conversion is cached is copied in place at once (payload re-checked); the
  others go to a pool of worker processes (`edgesdk.pipeline.pool`), one per usable core,
  started with the run, while this process trains the next family (`train_ahead`: with two
  workers or more, the last family trains in one of them from the start). An idle worker takes the
  costliest queued conversion first (`TARGET_COST`); a model's conversions that write the same
  file share one export (`converters.export_memo`).
- A worker writes into a scratch folder inside ``output.dir`` (and the cache); this process
  moves each finished artifact into ``artifacts/`` with one rename, so every artifact arrives
  once, whole.
- A worker that dies (killed, out of memory, a native crash) has its job run again on another
  worker, at most ``MAX_ATTEMPTS`` times in all; the row's ``attempts`` says what happened.
- When every conversion is done, the profiling queue runs in this process, one job at a time
  (the CPU, the emulated NPU and the software GPU all share these cores), so a timing never
  competes with a conversion. The quality scores come after every timing, one thread per
  usable core, never two of one runtime library at once (`edgesdk.pipeline.scores`): a score is
  correctness, not timing. A generation artifact on an emulated device (seconds of native code
  per generation) is timed on its family's quality subset and scored from those very runs
  (`pipeline.replay`); other scores on an emulated device (hardly two programs at once per
  process) run in the idle workers, side by side (`evaluator`).
- Ctrl-C (or any error) kills the workers, removes the scratch folder and keeps the artifacts
  already delivered (and the cache).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
import uuid
from concurrent.futures import Future, TimeoutError as FutureTimeout
from pathlib import Path

from edgesdk.runtime.errors import ConversionError
from edgesdk.pipeline import execute
from edgesdk.pipeline.executor import Executor, RunContext
from edgesdk.pipeline.plan import Job
from edgesdk.pipeline.row import Row

MAX_ATTEMPTS = 3        # a job whose worker dies is tried at most this many times in all
MAX_FAILED_STARTS = 3   # workers that die before they are ready: the pool cannot work here

# Relative conversion cost per target, from a serial fresh demo's per-conversion times (the
# generation students, 2026-12-01, RESULTS.md "Executors"): executorch-vulkan 54 s, executorch-xnnpack
# 30 s (int8 41 s), litert 14-17 s, qnn-htp and onnx-cpu ~5 s, coreml-ane 4 s. Idle workers take
# the costliest queued job first, so the run does not end on one long conversion while the other
# worker idles. Only the order changes: every job still runs, with the same inputs.
TARGET_COST = {"executorch-vulkan": 5.0, "executorch-xnnpack": 3.0, "litert-cpu": 1.5, "litert-gpu": 1.5,
               "qnn-htp": 0.6, "onnx-cpu": 0.5, "coreml-ane": 0.4}


def usable_cores() -> int:
    from edgesdk.runtime.session import default_threads
    return default_threads()


class _WorkerLost(Exception):
    """The worker running a score died (its answer will not come)."""


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, ctx: RunContext, workers: int | None = None):
        super().__init__(ctx)
        self.costs: dict[int, float] = {}     # job index -> estimated conversion cost (scheduling order only)
        self.tflite_leaders: set[int] = set() # entries whose first LiteRT export is queued (the others copy it)
        self.n_workers = max(1, workers or usable_cores())
        self.results_by_job: dict[int, tuple[Row, object]] = {}
        self.queue: list[tuple[Job, str | None]] = []      # (job, cache key) waiting for a worker
        self.running: dict[int, tuple[Job, str | None]] = {}  # job index -> (job, key), on a worker
        self.attempts: dict[int, list] = {}
        self.error: BaseException | None = None
        self.blobs: dict[int, bytes] = {}     # entry index -> cloudpickled entry
        self.inline_entries: set[int] = set() # entries that cannot be pickled: converted in this process
        self.lock = threading.Condition()
        self.pool = None
        self.thread: threading.Thread | None = None
        self.scratch = Path(ctx.cfg.output.dir) / f".work-{uuid.uuid4().hex[:10]}"
        self.exports = self.scratch / "exports"   # exports the run's conversions share (converters.export_memo)
        self.t_first: float | None = None
        self.t_last: float | None = None
        self.t_inline = 0.0                   # cache hits copied in this process
        self.failed_starts = 0
        self.stopping = False
        self.score_waits: dict[str, Future] = {}  # score / training id -> its answer from a worker
        self.train_queue: list[tuple[str, bytes]] = []  # families to train in a worker (`train_ahead`)
        self.train_labels: dict[str, str] = {}    # training id -> its family, for the log
        self.train_futs: dict[str, Future] = {}   # training id -> its answer (kept after it came)

    # ---- conversions
    def submit(self, entry, jobs: list[Job]) -> None:
        super().submit(entry, jobs)
        ctx = self.ctx
        for job in jobs:
            if not job.offered or job.skip:
                self.results_by_job[job.index] = (execute.skipped_row(entry, job), None)
                if job.offered:
                    ctx.tag(entry, job)
                continue
            key = execute.artifact_key(entry, job, ctx.cfg) if ctx.cfg.output.use_cache else None
            inline = key is not None and self._cached(job, key)  # a copy and a hash check: no worker needed
            if not inline and not self._shippable(job.entry):  # e.g. a torch.export .pt2 program's module
                inline = True
            if inline:
                tag = ctx.tag(entry, job)
                t0 = time.perf_counter()
                self.results_by_job[job.index] = execute.convert(
                    entry, job, ctx.cfg, ctx.art_dir, lambda msg, tag=tag: ctx.progress.stage(f"{tag}: {msg}"), key,
                    self.exports)
                self.t_inline += time.perf_counter() - t0
                continue
            self.costs[job.index] = self._cost(entry, job)
            with self.lock:
                self.queue.append((job, key))
                self.lock.notify_all()
        self._start()

    def _cost(self, entry, job: Job) -> float:
        """Estimated conversion cost: the target's (`TARGET_COST`), x1.3 for ExecuTorch's quantized
        schemes, x10 for generation models (several programs). A model's LiteRT conversions after
        its first copy that one's export (`converters.export_memo`): they count as cheap, so they
        run after it rather than waiting for it on the other worker."""
        t = job.target.name
        cost = TARGET_COST.get(t, 1.0) * (1.3 if job.scheme != "fp32" and t.startswith("executorch") else 1.0)
        if job.target.format == "tflite":
            if job.entry in self.tflite_leaders:
                cost = 0.3
            else:
                self.tflite_leaders.add(job.entry)
        return cost * (10.0 if entry.multi else 1.0)

    def _next(self) -> tuple[Job, str | None]:
        """The costliest queued job (ties: plan order); a retried job waits at the front."""
        i = max(range(len(self.queue)), key=lambda k: (self.queue[k][0].index in self.attempts,
                                                       self.costs.get(self.queue[k][0].index, 1.0), -k))
        return self.queue.pop(i)

    def _shippable(self, entry_index: int) -> bool:
        """Whether the entry can travel to a worker process; if not, its jobs convert here."""
        if entry_index in self.inline_entries:
            return False
        try:
            self._blob(entry_index)
            return True
        except Exception as err:  # an object cloudpickle cannot serialize
            self.inline_entries.add(entry_index)
            self.ctx.progress.stage(f"{self.entries[entry_index].name}: cannot be sent to a worker process "
                                    f"({type(err).__name__}: {' '.join(str(err).split())[:120]}); converting it here")
            return False

    def _cached(self, job: Job, key: str) -> bool:
        from edgesdk.cache import ArtifactCache
        return (ArtifactCache(self.ctx.cfg.output.cache).path(job.target.name, key, job.name) / "manifest.json").is_file()

    def __enter__(self) -> "LocalExecutor":
        # the workers start now: they import torch and the converters (~10 s each) while the
        # first family trains, not after it
        from edgesdk.pipeline.pool import shared_pool
        self.pool = shared_pool(self.n_workers)
        self.pool.ensure()
        return self

    def train_ahead(self, cfg, quick: bool, indices: list[int]) -> list[int]:
        """The last family trains in a worker from the start, beside this process training the
        ones before it (`entries.trainable_ahead`): without it one core idled while the first family
        trained and again while the second one did, once the first one's conversions were done.
        Needs two workers or more (the other converts meanwhile)."""
        if self.n_workers < 2 or not indices:
            return []
        import torch

        from edgesdk.pipeline.worker import dump_entry
        for i in indices:
            spec, tid = cfg.distill[i], f"train-{i}"
            with self.lock:
                self.score_waits[tid] = self.train_futs[tid] = Future()
                # the parent's torch thread count: a family's code outside its own training threads
                # (data preparation, evaluations) then computes as it would here
                self.train_queue.append((tid, dump_entry((spec, cfg, quick, torch.get_num_threads()))))
                self.train_labels[tid] = spec.family
            self.ctx.progress.stage(f"{spec.family}: trains in a worker process beside the families before it")
        self._start()
        return list(indices)

    def wait_trained(self, index: int) -> dict | None:
        tid = f"train-{index}"
        fut = self.train_futs.get(tid)
        if fut is None:
            return None
        label = self.train_labels.get(tid, tid)
        t0 = time.perf_counter()
        while True:
            try:
                kind, value = fut.result(timeout=0.5)
                break
            except FutureTimeout:
                if self.stopping or self.error is not None:
                    raise ConversionError("the run stopped while a worker was training") from None
            except Exception as err:  # noqa: BLE001 - its own error, or the worker died: train here
                self.ctx.progress.stage(f"{label}: training in the worker failed ({type(err).__name__}: "
                                        f"{' '.join(str(err).split())[:200]}); training it here")
                return None
        if kind != "value":
            return None
        self.ctx.progress.stage(f"{label}: trained in worker {value['pid']} "
                                f"(waited {time.perf_counter() - t0:.1f}s for it)")
        return value

    def _start(self) -> None:
        if self.thread is None and (self.queue or self.train_queue):
            from edgesdk.pipeline.pool import shared_pool
            self.pool = shared_pool(self.n_workers)
            self.thread = threading.Thread(target=self._dispatch, name="edgesdk-local-executor", daemon=True)
            self.thread.start()

    def _blob(self, entry_index: int) -> bytes:
        """The entry as a worker needs it (cloudpickle: classes from the user's files travel by
        value); its quality function stays here, where the profiling queue runs."""
        if entry_index not in self.blobs:
            import dataclasses

            from edgesdk.pipeline.worker import dump_entry
            self.blobs[entry_index] = dump_entry(dataclasses.replace(self.entries[entry_index], quality=None,
                                                                       quality_subset=None))
        return self.blobs[entry_index]

    def _dispatch(self) -> None:
        """The dispatcher thread: hand queued jobs to idle workers, collect their answers."""
        import cloudpickle
        ctx = self.ctx
        tags: dict[int, str] = {}
        try:
            while not self.stopping:
                with self.lock:
                    if self.error is not None:
                        return
                    pending = bool(self.queue) or bool(self.running) or bool(self.train_queue)
                if pending:
                    self.pool.ensure()
                for w in self.pool.idle():
                    with self.lock:
                        train = self.train_queue.pop(0) if self.train_queue else None
                    if train is not None:  # a family to train goes first: its conversions wait on it
                        self.ctx.progress.stage(f"{self.train_labels[train[0]]}: training (worker {w.pid})")
                        if not self.pool.train(w, *train):
                            self._event(("died", train[0], "the worker could not take it"), tags)
                        continue
                    with self.lock:
                        if not self.queue:
                            break
                        job, key = self._next()
                        self.running[job.index] = (job, key)
                    e = self.entries[job.entry]
                    tags[job.index] = ctx.tag(e, job)
                    n = len(self.attempts.get(job.index, []))
                    ctx.progress.stage(f"{tags[job.index]}: converting (worker {w.pid}"
                                       + (f", attempt {n + 1}" if n else "") + ")")
                    self.t_first = self.t_first or time.perf_counter()
                    blob = cloudpickle.dumps((job, ctx.cfg, self.scratch / str(job.index), key, self.exports))
                    self.pool.run(w, job.index, job.entry, self._blob(job.entry), blob)
                for ev in self.pool.poll(timeout=0.2):
                    self._event(ev, tags)
                if not pending and not self.pool.workers:
                    time.sleep(0.05)
        except BaseException as err:  # the dispatcher itself failed: surface it in results()
            with self.lock:
                self.error = err
                self.lock.notify_all()

    def _event(self, ev: tuple, tags: dict) -> None:
        import cloudpickle
        kind, job_index = ev[0], ev[1]
        if kind == "startfail":
            self.failed_starts += 1
            self.ctx.progress.stage(f"local executor: {ev[2]} before it was ready")
            if self.failed_starts >= MAX_FAILED_STARTS:
                with self.lock:
                    self.error = ConversionError(
                        f"the local executor's worker processes fail to start ({ev[2]}); see the log above, "
                        "or run with executor='serial'")
                    self.lock.notify_all()
            return
        if kind == "say" and isinstance(job_index, str):  # a family training on a worker
            self.ctx.progress.stage(f"{self.train_labels.get(job_index, job_index)} (worker): {ev[2]}")
            return
        if isinstance(job_index, str):  # a quality score or a training on a worker
            with self.lock:
                fut = self.score_waits.pop(job_index, None)
            if fut is not None:
                if kind == "done":
                    fut.set_result(cloudpickle.loads(ev[2]))
                elif kind == "error":
                    fut.set_exception(cloudpickle.loads(ev[2]))
                else:  # the worker died: the caller scores it here
                    fut.set_exception(_WorkerLost(ev[2]))
            return
        if kind == "say":
            self.ctx.progress.stage(f"{tags.get(job_index, job_index)}: {ev[2]}")
            return
        with self.lock:
            job, key = self.running.pop(job_index)
        if kind == "died":
            self._died(job, key, ev[2], tags)
            return
        if kind == "error":
            with self.lock:
                self.error = cloudpickle.loads(ev[2])
                self.lock.notify_all()
            return
        row, art_path = cloudpickle.loads(ev[2])
        art = self._deliver(job, row, art_path)
        if job.index in self.attempts:
            row.attempts = self.attempts[job.index]
        with self.lock:
            self.results_by_job[job.index] = (row, art)
            self.t_last = time.perf_counter()
            self.lock.notify_all()

    def _died(self, job: Job, key, why: str, tags: dict) -> None:
        tries = self.attempts.setdefault(job.index, [])
        tries.append({"host": socket.gethostname(), "error": why})
        shutil.rmtree(self.scratch / str(job.index), ignore_errors=True)
        self.ctx.progress.stage(f"{tags.get(job.index)}: {why}"
                                + ("; trying again on another worker" if len(tries) < MAX_ATTEMPTS else ""))
        if len(tries) < MAX_ATTEMPTS:
            with self.lock:
                self.queue.insert(0, (job, key))
            return
        e = self.entries[job.entry]
        row = execute.base_row(e, job).update(
            status="failed", attempts=tries,
            message=f"ConversionError: the worker converting it died {len(tries)} times (last: {why}); "
                    "a native crash or the machine running out of memory are the usual causes")
        with self.lock:
            self.results_by_job[job.index] = (row, None)
            self.t_last = time.perf_counter()
            self.lock.notify_all()

    def _deliver(self, job: Job, row: Row, art_path: str | None):
        """Move a worker's artifact from the scratch folder into ``artifacts/`` (one rename)."""
        import os

        from edgesdk.converters import Artifact
        if art_path is None:
            return None
        final = self.ctx.art_dir / job.name
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.rename(art_path, final)
        shutil.rmtree(self.scratch / str(job.index), ignore_errors=True)
        row.update(path=str(final), artifact=final.name)
        return Artifact.open(final)

    def evaluator(self, w):
        """``evaluate(quality, path, threads) -> float`` that runs the quality function in worker
        ``w`` (`edgesdk.pipeline.execute.evaluate_here` there) and waits for it. A function that
        cannot be sent or loaded there, or a worker that dies, is scored in this process instead;
        the function's own error is raised here, as if it had run here."""
        from edgesdk.pipeline.worker import dump_entry

        def evaluate(quality, path, threads: int) -> float:
            try:  # with the user's files it needs, as a conversion's entry travels
                blob = dump_entry((quality, str(path), threads))
            except Exception:  # noqa: BLE001 - e.g. a closure over a live session
                return execute.evaluate_here(quality, path, threads)
            with self.lock:
                sid = f"score-{uuid.uuid4().hex[:10]}"
                fut = self.score_waits[sid] = Future()
            if w.proc.poll() is not None or not self.pool.score(w, sid, blob):
                with self.lock:
                    self.score_waits.pop(sid, None)
                return execute.evaluate_here(quality, path, threads)
            while True:
                try:
                    kind, value = fut.result(timeout=0.5)
                    return value if kind == "value" else execute.evaluate_here(quality, path, threads)
                except FutureTimeout:
                    if self.stopping or self.error is not None:
                        raise ConversionError("the run stopped while a worker was scoring") from None
                except _WorkerLost:
                    return execute.evaluate_here(quality, path, threads)
        return evaluate

    def _wait_conversions(self) -> None:
        want = {j.index for j in self.jobs}
        with self.lock:
            while True:
                if self.error is not None:
                    raise self.error
                if want <= set(self.results_by_job):
                    return
                self.lock.wait(timeout=0.5)

    def _preload_profiling(self) -> None:
        """While the workers convert, import what the profiling queue needs and this process
        has not loaded (the workers converted, not this process): the per-op pass's ETDump
        Inspector imports ExecuTorch's whole exporter (seconds). With isolated profiles, start the
        fork server of each backend the queue profiles (`runtime.isolate`): it imports the backend
        now, and every isolated profile then forks from it instead of importing again (~1.5-2 s per
        ExecuTorch profile, ~0.3 s per other). Nothing is measured meanwhile."""
        profiled = [j for j in self.jobs if j.profile]
        if self.ctx.cfg.profile.per_op and any(j.target.format == "pte" for j in profiled):
            try:
                import executorch.devtools  # noqa: F401
            except Exception:  # noqa: BLE001 - missing here: the per-op pass says so
                pass
        if self.ctx.cfg.profile.isolate:
            from edgesdk.runtime import isolate
            targets = {(j.target.format, j.target.name) for j in profiled}
            isolate.start_servers(m for f, t in sorted(targets) if (m := isolate.backend_module_name(fmt=f, target=t)))

    # ---- results
    def results(self) -> list[Row]:
        ctx = self.ctx
        t0 = time.perf_counter()
        self._preload_profiling()
        self._wait_conversions()
        if self.thread is None and self.pool is not None:
            # started early, but every conversion came from the cache: no worker may still be
            # importing beside the profiles
            self.pool.kill_all()
        t_conv_end = time.perf_counter()
        # conversion time: cache hits copied here + the span of the pool's work (wall clock)
        ctx.timings["convert_s"] = self.t_inline + ((self.t_last - self.t_first) if (self.t_first and self.t_last)
                                                    else t_conv_end - t0)
        tp = time.perf_counter()
        rows, scores = [], []
        profiled = 0
        for job in self.jobs:
            row, art = self.results_by_job[job.index]
            e = self.entries[job.entry]
            if art is not None:
                if job.profile:
                    profiled += 1
                    tag = f"[profile {profiled}] {e.name} {job.target.name} {job.scheme}"
                    # timings one at a time on a quiet machine; the quality scores after them
                    _, score = execute.measure(row, art, e, job, ctx.cfg, ctx.warmup, ctx.iters,
                                               lambda msg, tag=tag: ctx.progress.stage(f"{tag}: {msg}"),
                                               ctx.progress.bar(f"{e.name} {job.target.name} {job.scheme}"),
                                               defer_quality=True)
                    if score is not None:
                        # one chain per runtime library, which may keep process-wide state (ExecuTorch
                        # one thread pool, LiteRT its accelerator environment); ONNX Runtime sessions are
                        # independent, so onnx-cpu and the HTP emulator score side by side
                        chain = job.target.backend if job.target.format == "onnx" else job.target.format
                        # (a row scored from its profile's runs has its quality already: nothing to offload)
                        emulated = row.runs in execute.EMULATED_RUNS and row.quality is None
                        scores.append((chain, emulated, score, emulated and "generation" in art.manifest.extra))
                else:
                    execute.finish(row, job)
            rows.append(row)
        if self.ctx.cfg.profile.isolate:  # the timings are done: the fork servers' memory goes back
            from edgesdk.runtime import isolate
            isolate.close_servers()
        if scores:
            from edgesdk.pipeline.scores import score_all
            t_scores = time.perf_counter()
            idle = [w for w in self.pool.workers if w.ready and w.job is None] if self.thread is not None else []
            n_emulated = sum(1 for s in scores if s[1]) if idle else 0
            ctx.progress.stage(f"scoring the quality of {len(scores)} artifacts ({self.n_workers} at once, "
                               f"one per runtime" + (f"; the {n_emulated} on emulated devices in {len(idle)} worker "
                                                     "processes" if n_emulated else "") + ")")
            score_all(scores, self.n_workers, offload=[self.evaluator(w) for w in idle])
            ctx.progress.stage(f"scored in {time.perf_counter() - t_scores:.1f}s")
        ctx.timings["profile_s"] = time.perf_counter() - tp
        return rows

    def close(self, cancelled: bool = False) -> None:
        self.stopping = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        if self.pool is not None:
            if cancelled or self.error is not None:
                self.pool.kill_all()   # running conversions stop now; completed artifacts stay
            else:
                self.pool.forget()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def describe(self) -> dict:
        retried = sum(1 for v in self.attempts.values() if v)
        return {"name": self.name, "workers": self.n_workers, "host": socket.gethostname(),
                "retried_jobs": retried}
