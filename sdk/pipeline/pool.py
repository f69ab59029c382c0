"""Worker processes for the local executor: started once per Python process (importing torch
and the converters takes seconds) and reused by every later pipeline in it.

Each worker is ``python -m edgesdk.pipeline.worker`` in its own process group (a terminal's Ctrl-C
reaches only the parent, which cancels), talking over two private pipes. `WorkerPool.poll`
returns what the workers said and notices a worker that died (its pipe closes): the job it
was running comes back as ``("died", job_id, why)`` and a fresh worker takes its place.

Example::

    pool = shared_pool(2)
    pool.run(worker, job_id=0, entry_id=0, entry_blob=b"...", job_blob=b"...")
    for event in pool.poll(timeout=0.5): ...
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
from multiprocessing.connection import Connection, wait
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])


class Worker:
    def __init__(self):
        p2c_r, p2c_w = os.pipe()
        c2p_r, c2p_w = os.pipe()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        # Workers share the cores with the parent's training and with each other: OpenMP threads
        # that spin while they wait (libgomp's default) burn those cores, and a parallel region
        # then waits for a descheduled thread (benchmarks/omp_wait.py at load 23: a 1x128 GELU at
        # 2 threads took 7.85 ms with spinning waits, 0.053 ms with passive ones). Sleeping waits
        # change no result, only who gets the CPU.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        # Its own process group (a terminal's Ctrl-C reaches only the parent; `kill` ends the
        # group), but the parent's session: Linux's autogroup scheduler gives every session an
        # equal share of the CPU and applies nice only inside it, so in a session of their own
        # (setsid) the nice-19 workers each took a share equal to the training's (measured: the
        # training process held ~55% of a core beside two converting workers).
        try:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgesdk.pipeline.worker", str(p2c_r), str(c2p_w)],
                                         pass_fds=(p2c_r, c2p_w), process_group=0, env=env,
                                         stdin=subprocess.DEVNULL, stdout=2)
        finally:
            os.close(p2c_r)
            os.close(c2p_w)
        self.send_conn = Connection(p2c_w, readable=False)
        self.recv_conn = Connection(c2p_r, writable=False)
        self.pid = self.proc.pid
        self.ready = False
        self.job: int | None = None          # the job it runs now
        self.entries: set = set()            # entry ids it holds

    def send(self, msg) -> bool:
        try:
            self.send_conn.send(msg)
            return True
        except (OSError, ValueError):
            return False

    def why_dead(self) -> str:
        try:
            rc = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.kill()
            rc = self.proc.wait()
        if rc < 0:
            try:
                return f"worker process {self.pid} was killed by {signal.Signals(-rc).name}"
            except ValueError:
                return f"worker process {self.pid} was killed by signal {-rc}"
        return f"worker process {self.pid} exited with code {rc}"

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self) -> None:
        for c in (self.send_conn, self.recv_conn):
            try:
                c.close()
            except OSError:
                pass


class WorkerPool:
    """``size`` worker processes; thread-safe enough for one dispatcher thread plus `kill_all`."""

    def __init__(self, size: int):
        self.size = size
        self.workers: list[Worker] = []
        self.lock = threading.Lock()

    def ensure(self) -> None:
        with self.lock:
            self.workers = [w for w in self.workers if w.proc.poll() is None]
            while len(self.workers) < self.size:
                w = Worker()
                w.send(("init", list(sys.path)))
                self.workers.append(w)

    def idle(self) -> list[Worker]:
        return [w for w in self.workers if w.ready and w.job is None]

    def run(self, w: Worker, job_id: int, entry_id: int, entry_blob: bytes, job_blob: bytes) -> bool:
        """Hand a job to an idle worker (its entry first, if the worker does not hold it yet)."""
        if entry_id not in w.entries:
            if not w.send(("entry", entry_id, entry_blob)):
                return False
            w.entries.add(entry_id)
        w.job = job_id
        return w.send(("job", job_id, entry_id, job_blob))

    def score(self, w: Worker, score_id: str, blob: bytes) -> bool:
        """Hand an idle worker a quality score (``("score", id, blob)``, see `edgesdk.pipeline.worker`);
        its answer comes back through `poll` like a job's."""
        w.job = score_id
        return w.send(("score", score_id, blob))

    def train(self, w: Worker, train_id: str, blob: bytes) -> bool:
        """Hand an idle worker a family to train (``("train", id, blob)``, see `edgesdk.pipeline.worker`);
        its answer comes back through `poll` like a job's."""
        w.job = train_id
        return w.send(("train", train_id, blob))

    def poll(self, timeout: float) -> list[tuple]:
        """Messages from the workers: ("say"|"done"|"error", job_id, payload); ("died", job_id,
        why) for a worker that ended during a job and ("startfail", None, why) for one that ended
        before it was ready (both replaced at the next `ensure`)."""
        conns = {w.recv_conn: w for w in self.workers}
        events = []
        if not conns:
            return events
        for c in wait(list(conns), timeout=timeout):
            w = conns[c]
            try:
                msg = c.recv()
            except (EOFError, OSError):
                why = w.why_dead()
                w.close()
                with self.lock:
                    self.workers.remove(w)
                if w.job is not None:
                    events.append(("died", w.job, why))
                elif not w.ready:
                    events.append(("startfail", None, why))
                continue
            if msg[0] == "ready":
                w.ready = True
            else:
                if msg[0] in ("done", "error"):
                    w.job = None
                events.append(msg)
        return events

    def forget(self) -> None:
        """Drop every entry the workers hold (the end of a run)."""
        for w in self.workers:
            w.send(("forget",))
            w.entries.clear()

    def kill_all(self) -> None:
        with self.lock:
            for w in self.workers:
                w.kill()
            for w in self.workers:
                try:
                    w.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
                w.close()
            self.workers = []


_SHARED: WorkerPool | None = None


def shared_pool(size: int) -> WorkerPool:
    """The process-wide pool (resized to ``size``), started on first use and ended at exit."""
    global _SHARED
    if _SHARED is None:
        _SHARED = WorkerPool(size)
        atexit.register(_end_shared)
    elif _SHARED.size != size:
        _SHARED.kill_all()
        _SHARED.size = size
    return _SHARED


def _end_shared() -> None:
    if _SHARED is not None:
        for w in _SHARED.workers:
            w.send(("exit",))
        _SHARED.kill_all()
