"""The Ray executor: the same plan as Ray tasks on a cluster (``pip install 'edge-sdk[cluster]'``).

- ``executor="ray"``: the cluster named by ``RAY_ADDRESS``, else a one-machine cluster started
  here (this machine's usable cores; its devices as resources, `edgesdk.pipeline.devices`);
  ``"ray://HOST:PORT"``: a cluster's Ray client address.
- Conversions go to any worker (one CPU each) as soon as a family's students are ready.
- Artifacts travel by content hash: a conversion task returns its row and, as a second object,
  the artifact's files. When the driver's cache already holds that key (a shared folder, or
  the same machine) the files are never fetched; otherwise they come through Ray's object
  store into the driver's cache, are checked against their manifest's sha256s, and copied
  into ``artifacts/`` once.
- When every conversion is done, each profiling job asks for its device's resource
  (``edgesdk-profiler`` for a machine's CPU, ``qnn-htp``, ``vulkan-gpu``, ``device:adb:SERIAL``)
  and runs where that device is; the row records the host and node.
- A task whose worker or node dies is run again elsewhere, at most ``MAX_ATTEMPTS`` times in
  all (``attempts`` in the row). A device that leaves the cluster fails only its own profiling
  jobs, each with a `TargetUnavailableError` message. Ctrl-C cancels the running tasks and
  keeps the artifacts already delivered.

Start workers with ``edgesdk worker --ray HEAD:PORT`` (see `sdk.cluster_worker`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from edgesdk.runtime.errors import ConfigError, TargetUnavailableError
from edgesdk.pipeline import execute
from edgesdk.pipeline.executor import Executor, RunContext
from edgesdk.pipeline.plan import Job
from edgesdk.pipeline.raynode import connect_driver, task_env
from edgesdk.pipeline.row import Row

MAX_ATTEMPTS = 3
_ROOT = str(Path(__file__).resolve().parents[2])
_INSTALL = "pip install 'edge-sdk[cluster]' (Ray)"


def _ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(f"executor 'ray' needs Ray: {_INSTALL}") from None
    return ray


# ----------------------------------------------------------------------------- on the workers

def _read_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _write_files(files: dict[str, bytes], dest: Path) -> Path:
    """Materialize an artifact's files at ``dest`` atomically, checked against its manifest."""
    from edgesdk.runtime.manifest import parse_manifest, verify_payload
    from edgesdk.cache import publish

    def fill(tmp: Path) -> None:
        for rel, data in files.items():
            p = tmp / rel
            if tmp.resolve() not in p.resolve().parents:
                raise ValueError(f"artifact file {rel!r} escapes its folder")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        verify_payload(tmp, parse_manifest((tmp / "manifest.json").read_bytes()))
    return publish(fill, dest)


def _local_cache(cfg):
    """The cache as seen from this worker: the driver's folder when it is reachable here (a
    shared folder, or the same machine), else None."""
    root = Path(cfg.output.cache)
    return root if cfg.output.use_cache and root.is_dir() and os.access(root, os.W_OK) else None


_ENTRIES: dict = {}   # in a Ray worker process: entries already unpacked, by content hash


def _entry(blob: bytes):
    import hashlib

    import torch

    from edgesdk.runtime.session import default_threads
    from edgesdk.pipeline.worker import load_entry
    # Ray sets OMP_NUM_THREADS=1 for a one-CPU task; the serial and local executors convert with
    # torch's default (all usable cores), and the PyTorch reference outputs of the verification
    # differ in the last bits with the thread count: use the same, so the rows agree
    torch.set_num_threads(default_threads())
    key = hashlib.sha256(blob).hexdigest()
    if key not in _ENTRIES:
        _ENTRIES.clear()
        _ENTRIES[key] = load_entry(blob)
    return _ENTRIES[key]


def _convert_task(blob: bytes, job: Job, cfg, key, exports: str | None = None):
    """Ray task: convert one job on this worker -> ({row, node, host}, {relpath: bytes} or None).
    ``exports``: the run's folder of shared exports (`converters.export_memo`), used where this
    worker sees it (the driver made it: a node that does not have it exports on its own)."""
    import dataclasses

    import ray
    entry = _entry(blob)
    scratch = Path(tempfile.mkdtemp(prefix="edgesdk-convert-"))
    try:
        if _local_cache(cfg) is None:  # no shared cache here: convert without one
            cfg = dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, use_cache=False))
        shared = Path(exports) if exports and Path(exports).is_dir() else None
        row, art = execute.convert(entry, job, cfg, scratch, lambda msg: None, key if cfg.output.use_cache else None,
                                   shared)
        files = _read_files(art.path) if art is not None else None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return {"row": row, "node": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}, files


def _profile_task(blob: bytes, job: Job, cfg, row: Row, key, files_box: list, warmup: int, iters: int) -> Row:
    """Ray task: profile (and score) one artifact on the device this worker has."""
    import ray
    entry = _entry(blob)

    from edgesdk.converters import Artifact
    from edgesdk.cache import ArtifactCache
    scratch = Path(tempfile.mkdtemp(prefix="edgesdk-profile-"))
    try:
        art = None
        if key and _local_cache(cfg) is not None:
            try:
                art = ArtifactCache(cfg.output.cache).get(job.target.name, key, job.name)
            except Exception:  # unusable entry: fall back to the transferred files
                art = None
        if art is None:
            art = Artifact.open(_write_files(ray.get(files_box[0]), scratch / job.name))
        return execute.measure(row, art, entry, job, cfg, warmup, iters, lambda msg: None,
                               node=ray.get_runtime_context().get_node_id())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# ----------------------------------------------------------------------------- on the driver

class RayExecutor(Executor):
    name = "ray"

    def __init__(self, ctx: RunContext, address: str | None = None):
        super().__init__(ctx)
        ray = _ray()
        self.ray = ray
        self.started_here = False
        self.connected_here = False
        if not ray.is_initialized():
            kw = dict(logging_level="warning", log_to_driver=False)
            if address and address.startswith("ray:") and not address.startswith("ray://"):
                address = address[4:]
            if address or os.environ.get("RAY_ADDRESS"):
                connect_driver(ray, address or os.environ["RAY_ADDRESS"], kw)
                self.connected_here = True
            else:  # a cluster of this machine alone: its cores convert, its devices profile
                from edgesdk.pipeline.devices import detect_resources
                from edgesdk.pipeline.local import usable_cores
                env = {"PYTHONPATH": os.pathsep.join([_ROOT] + [p for p in os.environ.get("PYTHONPATH", "")
                                                                  .split(os.pathsep) if p]), **task_env()}
                ray.init(num_cpus=usable_cores(), resources=detect_resources(), include_dashboard=False,
                         runtime_env={"env_vars": env}, **kw)
                self.started_here = True
        self.address = address or os.environ.get("RAY_ADDRESS") or "local"
        if ctx.cfg.output.use_cache:  # so that workers on this machine (or a shared folder) find it
            Path(ctx.cfg.output.cache).mkdir(parents=True, exist_ok=True)
        # the run's shared exports, as the local executor has them: conversions of one model that write
        # the same file (each LiteRT scheme's export, ONNX for onnx-cpu and qnn-htp) make it once. It
        # lives where the workers can reach it: the cache folder (this machine, or a shared folder), or
        # this machine's temp folder when the cluster is this machine alone; removed when the run ends
        self.exports: Path | None = None
        if ctx.cfg.output.use_cache:
            self.exports = Path(tempfile.mkdtemp(prefix=".exports-", dir=Path(ctx.cfg.output.cache).resolve()))
        elif self.started_here:
            self.exports = Path(tempfile.mkdtemp(prefix="edgesdk-exports-"))
        self.convert_fn = ray.remote(_convert_task)
        self.profile_fn = ray.remote(_profile_task)
        self.entry_refs: dict[int, object] = {}
        self.pending: dict = {}           # meta ref -> (job, key, files ref)
        self.done: dict[int, tuple] = {}  # job index -> (row, artifact, files ref)
        self.attempts: dict[int, list] = {}
        self.t_first = self.t_last = None

    # ---- conversions
    def submit(self, entry, jobs: list[Job]) -> None:
        super().submit(entry, jobs)
        ctx = self.ctx
        from edgesdk.pipeline.worker import dump_entry
        try:
            blob = dump_entry(entry)
        except Exception as err:  # e.g. the module of a torch.export .pt2 program
            raise ConfigError(f"model {entry.name!r} cannot be sent to Ray workers ({type(err).__name__}: "
                              f"{' '.join(str(err).split())[:160]}); give it as MODULE:FUNCTION returning "
                              "(model, example_inputs), or use --executor local") from None
        self.entry_refs[len(self.entries) - 1] = self.ray.put(blob)
        for job in jobs:
            if not job.offered or job.skip:
                self.done[job.index] = (execute.skipped_row(entry, job), None, None, None)
                continue
            key = execute.artifact_key(entry, job, ctx.cfg) if ctx.cfg.output.use_cache else None
            self._convert(job, key)

    def _cfg(self):
        """The config as workers see it: the cache as an absolute path."""
        import dataclasses
        cfg = self.ctx.cfg
        return dataclasses.replace(cfg, output=dataclasses.replace(cfg.output, cache=str(Path(cfg.output.cache).resolve())))

    def _convert(self, job: Job, key, avoid: str | None = None) -> None:
        opts = dict(num_cpus=1, max_retries=0, num_returns=2)
        if avoid:
            opts["scheduling_strategy"] = self._elsewhere(avoid)
        meta, files = self.convert_fn.options(**opts).remote(self.entry_refs[job.entry], job, self._cfg(), key,
                                                             str(self.exports) if self.exports else None)
        self.pending[meta] = ("convert", job, key, files)
        self.t_first = self.t_first or time.perf_counter()

    def _elsewhere(self, node: str):
        """Prefer an alive node other than ``node`` (soft: any node if there is no other)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
        others = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive") and n["NodeID"] != node
                  and n.get("Resources", {}).get("CPU", 0) > 0]
        return NodeAffinitySchedulingStrategy(others[0], soft=True) if others else "DEFAULT"

    def _deliver(self, job: Job, key, meta: dict, files_ref):
        """The artifact into ``artifacts/<name>``: from the driver's cache when it holds the key,
        else through the object store (into the cache first, when there is one)."""
        from edgesdk.converters import Artifact
        from edgesdk.cache import ArtifactCache, copy_artifact
        row: Row = meta["row"]
        if row.path is None:
            return row, None
        cfg = self.ctx.cfg
        final = self.ctx.art_dir / job.name
        cached = None
        if key and cfg.output.use_cache:
            cache = ArtifactCache(cfg.output.cache)
            try:
                cached = cache.get(job.target.name, key, job.name)
            except Exception:
                cached = None
            if cached is None:
                cached = Artifact.open(_write_files(self.ray.get(files_ref), cache.path(job.target.name, key, job.name)))
            copy_artifact(cached.path, final)
        else:
            _write_files(self.ray.get(files_ref), final)
        row.update(path=str(final), artifact=final.name)
        return row, Artifact.open(final)

    def _system_errors(self):
        ex = self.ray.exceptions
        return (ex.WorkerCrashedError, ex.NodeDiedError, ex.ObjectLostError, ex.OwnerDiedError,
                ex.LocalRayletDiedError, ex.RaySystemError, ex.ObjectFetchTimedOutError)

    def _lost(self, kind: str, job: Job, key, err, files=None, row=None) -> None:
        """A task whose worker or node died: again elsewhere, or give up after MAX_ATTEMPTS."""
        why = " ".join(str(err).split())[:300]
        m = re.search(r"node ID: ([0-9a-f]+)", str(err), re.I)
        node = m.group(1) if m else None
        tries = self.attempts.setdefault(job.index, [])
        tries.append({"stage": kind, "node": node, "error": f"{type(err).__name__}: {why}"})
        self.ctx.progress.stage(f"{job.name}: {kind} lost ({type(err).__name__})"
                                + ("; trying again elsewhere" if len(tries) < MAX_ATTEMPTS else ""))
        if len(tries) < MAX_ATTEMPTS:
            if kind == "convert":
                self._convert(job, key, avoid=node)
            else:
                self._profile(job, row, key, files, avoid=node)
            return
        e = self.entries[job.entry]
        if kind == "convert":
            self.done[job.index] = (execute.base_row(e, job).update(
                status="failed", attempts=tries,
                message=f"ConversionError: the Ray worker converting it was lost {len(tries)} times "
                        f"(last: {type(err).__name__})"), None, None, None)
        else:
            self.profiled[job.index] = row.update(
                status="failed", attempts=tries,
                message=f"profiling: the Ray worker profiling it was lost {len(tries)} times (last: {type(err).__name__})")

    def _drain(self, kinds: tuple[str, ...]) -> None:
        ray = self.ray
        last_check = time.perf_counter()
        while any(v[0] in kinds for v in self.pending.values()):
            refs = [r for r, v in self.pending.items() if v[0] in kinds]
            ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            for ref in ready:
                kind, job, key, extra = self.pending.pop(ref)
                try:
                    value = ray.get(ref)
                except self._system_errors() as err:
                    if kind == "profile":
                        self._lost(kind, job, key, err, files=extra[0], row=extra[1])
                    else:
                        self._lost(kind, job, key, err)
                    continue
                except ray.exceptions.TaskCancelledError:
                    continue
                except ray.exceptions.RayTaskError as err:  # the job itself raised: as the serial executor would
                    raise err.as_instanceof_cause() from None
                if kind == "convert":
                    try:
                        row, art = self._deliver(job, key, value, extra)
                    except self._system_errors() as err:  # the files were on a node that is gone
                        self._lost(kind, job, key, err)
                        continue
                    if job.index in self.attempts:
                        row.attempts = self.attempts[job.index]
                    self.done[job.index] = (row, art, None, key)  # the files ref is no longer needed
                    self.t_last = time.perf_counter()
                    self.ctx.progress.stage(f"[{len(self.done)}/{len(self.jobs)}] {job.name}: converted on "
                                            f"{value['host']} ({row.status or 'ok'})")
                else:
                    if job.index in self.attempts:
                        value.attempts = self.attempts[job.index]
                    self.profiled[job.index] = value
                    where = value.profiled_on or {}
                    self.ctx.progress.stage(f"{job.name}: profiled on {where.get('host')} ({where.get('device')})")
            if "profile" in kinds and time.perf_counter() - last_check > 2.0:
                last_check = time.perf_counter()
                self._fail_vanished()

    # ---- profiling
    def _missing(self, device: str) -> str | None:
        from edgesdk.pipeline.devices import resources_for
        have = self.ray.cluster_resources()
        lacking = [r for r in resources_for(device) if have.get(r, 0) < 1]
        return lacking[0] if lacking else None

    def _device_gone(self, job: Job, row: Row, resource: str) -> Row:
        err = TargetUnavailableError(
            f"no node of the Ray cluster offers {resource!r} any more (the worker that had it left, or the device "
            f"was unplugged); start one with `edgesdk worker --ray {self.address}` on the machine that has it. "
            f"The artifact was converted and verified: {row.path}")
        return row.update(status="failed", message=f"profiling: {type(err).__name__}: {err}",
                          profiled_on={"host": None, "device": job.device})

    def _profile(self, job: Job, row: Row, key, files, avoid: str | None = None) -> None:
        from edgesdk.pipeline.devices import resources_for
        gone = self._missing(job.device)
        if gone:
            self.profiled[job.index] = self._device_gone(job, row, gone)
            return
        opts = dict(num_cpus=0, max_retries=0, resources=resources_for(job.device))
        if avoid:
            opts["scheduling_strategy"] = self._elsewhere(avoid)
        ref = self.profile_fn.options(**opts).remote(self.entry_refs[job.entry], job, self._cfg(), row, key, [files], self.ctx.warmup, self.ctx.iters)
        self.pending[ref] = ("profile", job, key, (files, row))

    def _fail_vanished(self) -> None:
        for ref, (kind, job, key, (files, row)) in list(self.pending.items()):
            if kind != "profile":
                continue
            gone = self._missing(job.device)
            if gone:
                self.ray.cancel(ref, force=True)
                self.pending.pop(ref)
                self.profiled[job.index] = self._device_gone(job, row, gone)

    def results(self) -> list[Row]:
        ctx = self.ctx
        t0 = time.perf_counter()
        self._drain(("convert",))
        ctx.timings["convert_s"] = (self.t_last - self.t_first) if (self.t_first and self.t_last) else \
            time.perf_counter() - t0
        tp = time.perf_counter()
        self.profiled: dict[int, Row] = {}
        for job in self.jobs:
            row, art, _, key = self.done[job.index]
            if art is None:
                continue
            if job.profile:  # the delivered copy, owned by this driver: it outlives any worker
                self._profile(job, row, key, self.ray.put(_read_files(art.path)))
            else:
                execute.finish(row, job)
        self._drain(("profile",))
        ctx.timings["profile_s"] = time.perf_counter() - tp
        rows = []
        for job in self.jobs:
            row = self.done[job.index][0]
            rows.append(self.profiled.get(job.index, row))
        return rows

    def close(self, cancelled: bool = False) -> None:
        if cancelled:
            for ref in list(self.pending):
                try:
                    self.ray.cancel(ref, force=True)
                except Exception:
                    pass
            self.pending.clear()
        if self.started_here or self.connected_here:  # ends the cluster we started, or our connection
            self.ray.shutdown()
        if self.exports is not None:
            shutil.rmtree(self.exports, ignore_errors=True)

    def describe(self) -> dict:
        nodes = []
        try:
            for n in self.ray.nodes():
                if n.get("Alive"):
                    nodes.append({"node": n["NodeID"], "host": n.get("NodeManagerHostname"),
                                  "resources": {k: v for k, v in n.get("Resources", {}).items()
                                                if not k.startswith(("node:", "memory", "object_store_memory"))}})
        except Exception:
            pass
        return {"name": self.name, "address": self.address, "nodes": nodes,
                "retried_jobs": sum(1 for v in self.attempts.values() if v)}
