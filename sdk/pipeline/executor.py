"""Executors: who runs a pipeline's jobs. All of them run the same plan through the same
`edgesdk.pipeline.execute` functions and hand back the rows in plan order, so their
``results.json`` agree apart from timings and host names.

- ``serial``: every job in this process, one after another (convert, then profile).
- ``local`` (the default): conversions in a pool of worker processes sized to the usable
  cores, overlapping the training of the next family (the last one trains in a worker from the
  start, `LocalExecutor.train_ahead`); then the profiling queue, one job at a
  time on this machine, with no conversion running (`edgesdk.pipeline.local`).
- ``ray`` / ``ray://HOST:PORT``: the same plan as Ray tasks on a cluster; profiling jobs ask for
  their device's resource (`edgesdk.pipeline.cluster`).

A run that names no executor takes ``EDGESDK_EXECUTOR`` if set (a CI job whose cores are already
shared out, e.g. the test suite under pytest-xdist, sets ``serial``), else ``local``.

An executor is used as a context manager: ``submit(entry, jobs)`` as each family's students
are ready, then ``results()``; leaving the block early (an error, Ctrl-C) cancels what is
still running and keeps the artifacts already delivered.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.pipeline import execute
from edgesdk.pipeline.config import PipelineConfig
from edgesdk.pipeline.plan import Job
from edgesdk.pipeline.row import Row
from edgesdk.progress import Progress

EXECUTORS = ("local", "serial", "ray", "ray://HOST:PORT")
DEFAULT = "local"
ENV = "EDGESDK_EXECUTOR"


def default_executor() -> str:
    """The executor of a run that names none: ``EDGESDK_EXECUTOR``, else ``local``."""
    return os.environ.get(ENV, "").strip() or DEFAULT


@dataclass
class RunContext:
    """What every job of one run shares."""

    cfg: PipelineConfig
    art_dir: Path                 # where delivered artifacts go: <output.dir>/artifacts
    warmup: int
    iters: int
    progress: Progress
    timings: dict = field(default_factory=dict)
    planned: int = 0              # jobs that convert (for the [k/N] progress tags)
    started: int = 0

    def tag(self, e, job: Job) -> str:
        self.started += 1
        return f"[{self.started}/{self.planned}] {e.name} {job.target.name} {job.scheme}"


class Executor:
    """Base: keeps the entries and jobs; subclasses decide where conversions and profiles run."""

    name = "executor"

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.entries: list = []
        self.jobs: list[Job] = []

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close(cancelled=exc[0] is not None)

    def close(self, cancelled: bool = False) -> None:
        pass

    def submit(self, entry, jobs: list[Job]) -> None:
        self.entries.append(entry)
        self.jobs += jobs
        self.ctx.planned += sum(1 for j in jobs if j.offered)

    def results(self) -> list[Row]:
        raise NotImplementedError

    def train_ahead(self, cfg: PipelineConfig, quick: bool, indices: list[int]) -> list[int]:
        """Start training those ``distill`` entries (`entries.trainable_ahead`) elsewhere, while this
        process trains the ones before them; returns the indices started. Base: none."""
        return []

    def wait_trained(self, index: int) -> dict | None:
        """Wait for an entry `train_ahead` started: ``{"trained": [names], "pid": pid}``, or None
        when it failed there (this process trains it)."""
        return None

    def describe(self) -> dict:
        """What ``results.json`` records about the executor."""
        return {"name": self.name}


class SerialExecutor(Executor):
    """Everything in this process, one job after another: convert, then profile."""

    name = "serial"

    def results(self) -> list[Row]:
        import shutil
        import tempfile
        exports = Path(tempfile.mkdtemp(prefix="edgesdk-exports-"))  # shared exports (converters.export_memo)
        try:
            return self._results(exports)
        finally:
            shutil.rmtree(exports, ignore_errors=True)

    def _results(self, exports: Path) -> list[Row]:
        ctx = self.ctx
        rows: list[Row] = []
        t_conv = t_prof = 0.0
        for job in self.jobs:
            e = self.entries[job.entry]
            if not job.offered:
                rows.append(execute.skipped_row(e, job))
                continue
            tag = ctx.tag(e, job)
            if not job.skip:
                ctx.progress.stage(f"{tag}: converting")
            tc = time.perf_counter()
            row, art = execute.convert(e, job, ctx.cfg, ctx.art_dir, lambda msg, tag=tag: ctx.progress.stage(f"{tag}: {msg}"),
                                       exports=exports)
            t_conv += time.perf_counter() - tc
            if art is not None:
                if job.profile:
                    tp = time.perf_counter()
                    execute.measure(row, art, e, job, ctx.cfg, ctx.warmup, ctx.iters,
                                    lambda msg, tag=tag: ctx.progress.stage(f"{tag}: {msg}"),
                                    ctx.progress.bar(f"{e.name} {job.target.name} {job.scheme}"))
                    t_prof += time.perf_counter() - tp
                else:
                    execute.finish(row, job)
            rows.append(row)
        ctx.timings.update(convert_s=t_conv, profile_s=t_prof)
        return rows
