"""Profile in a child process that holds only what an app embedding the runtime would hold.

`runtime.profile(path, isolate=True)` (the default of `edgesdk profile` and of the pipeline)
starts a fresh Python with the parent's module search path, which imports `runtime` and the
artifact's backend and nothing else (no torch for ONNX Runtime, LiteRT and QNN artifacts; an
ExecuTorch `.pte` loads torch because ExecuTorch's Python bindings link libtorch). The child
measures RSS before load, the init delta, the peak during the timed runs and the timings, and
hands back the `ProfileReport` as JSON; ``extra["isolation"]`` records its pid and whether torch
was loaded. The thread sweep (``threads="auto"``) runs before it and the per-op pass after it,
in the calling process: neither weighs memory, and the sweep's sessions must not count against
the artifact's.

On Linux the child is forked from a server (one per backend, started on first use or by
`start_servers`, kept until `close_servers` or the end of the calling process) that has imported the runtime and the artifact's backend
and nothing else, the same modules a fresh child imports before it measures. A fresh child spends
most of a small model's profile importing: an ExecuTorch `.pte` profile took 2.3-2.4 s, of which
the timed runs were 0.37 s and the imports 1.4-1.7 s (torch); ONNX Runtime, LiteRT and QNN about
0.3 s. A forked child starts with those modules in place, so its RSS before load is what a
fresh child's is after its imports (``extra["isolation"]["process"]`` says which way it
started; benchmarks/profile_fork_server.py compares both). A server that cannot start, or a
platform without ``fork``, falls back to a fresh child; ``FORK_SERVER = False`` turns it off.

Example::

    from edgesdk import runtime
    rep = runtime.profile("out/mlp-litert-cpu", isolate=True, threads="auto")
    rep.memory          # {'mode': 'isolated', 'init_mb': 0.4, 'run_peak_mb': 0.5, ...}
    rep.extra["isolation"]["torch_loaded"]     # False
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path

import numpy as np

from edgesdk.runtime import errors
from edgesdk.runtime.errors import ExecutionError, SdkError

# The child re-creates the parent's import path, then hands the request to `_child`.
_BOOT = ("import sys, json, importlib; r = json.loads(sys.stdin.readline()); sys.path[:] = r['sys_path']; "
         "importlib.import_module(r['module'])._child(r)")
PROGRESS = "edgesdk-progress "
# The fork server re-creates the import path, imports the backend, then serves requests (`_serve`).
_SERVE_BOOT = ("import sys, json, importlib; r = json.loads(sys.stdin.readline()); sys.path[:] = r['sys_path']; "
               "importlib.import_module(r['module'])._serve(r)")
READY, FORKED, EXITED = "edgesdk-server-ready", "edgesdk-forked ", "edgesdk-exited "
# fork children from a per-backend server (module docstring); False: a fresh Python per profile
FORK_SERVER = sys.platform.startswith("linux") and hasattr(os, "fork")


def _save_inputs(inputs, path: Path) -> str:
    """The caller's inputs as an .npz the child reads with allow_pickle=False."""
    if isinstance(inputs, dict):
        np.savez(path, **{f"name:{k}": np.asarray(v) for k, v in inputs.items()})
    else:
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        np.savez(path, **{f"pos:{i:04d}": np.asarray(a) for i, a in enumerate(arrays)})
    return str(path)


def _load_inputs(path: str):
    with np.load(path, allow_pickle=False) as z:
        items = {k: z[k] for k in z.files}
    if any(k.startswith("name:") for k in items):
        return {k[5:]: v for k, v in items.items()}
    return [items[k] for k in sorted(items)]


def _run_child(request: dict, progress, timeout: float | None) -> dict:
    with tempfile.TemporaryDirectory(prefix="edgesdk-profile-") as tmp:
        request = _with_files(request, Path(tmp))
        server = _server_for(request.pop("backend_module", None))
        if server is not None:
            out = server.run(request, progress, timeout)
            if out is not None:
                return out
        proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        tail: deque[str] = deque(maxlen=30)

        def drain_stderr():
            for line in proc.stderr:
                tail.append(line.rstrip())
        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        try:
            proc.stdin.write(json.dumps({**request, "sys_path": list(sys.path), "module": __name__}) + "\n")
            proc.stdin.close()
            for line in proc.stdout:
                if not _progress_line(line, progress):
                    tail.append(line.rstrip())
            rc = proc.wait(timeout=timeout)
        except BaseException:  # Ctrl-C, a timeout, a failing progress callback: never leave it running
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=5)
        return _report(Path(request["result"]), rc, tail)


def _with_files(request: dict, tmp: Path) -> dict:
    """The request with where the child writes its report and reads the caller's inputs."""
    request = {**request, "result": str(tmp / "result.json")}
    if request.get("inputs") is not None:
        request["inputs"] = _save_inputs(request["inputs"], tmp / "inputs.npz")
    return request


def _progress_line(line: str, progress) -> bool:
    if not line.startswith(PROGRESS):
        return False
    if progress is not None:
        done, total = line[len(PROGRESS):].split()
        progress(int(done), int(total))
    return True


def _report(result: Path, rc: int, tail) -> dict:
    """The child's report, its typed error raised, or ExecutionError for a child that died."""
    if result.is_file():
        out = json.loads(result.read_text())
        if "error" in out:
            cls = getattr(errors, out["error"]["type"], None)
            if not (isinstance(cls, type) and issubclass(cls, SdkError)):
                cls = ExecutionError
            raise cls(out["error"]["message"])
        return out
    how = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
    last = " | ".join(x for x in tail if x.strip())[-1500:]
    raise ExecutionError(f"the profiling child process ended with {how} and no report; its last output: "
                         f"{last or '(none)'}. Profile in-process (isolate=False / --in-process) to debug")


class _Server:
    """One backend's fork server: a fresh Python that imported the runtime and the backend, then
    forks one child per request (`_serve`). Requests go one at a time (``lock``)."""

    def __init__(self, module: str):
        self.module = module
        self.owner = os.getpid()   # a process forked from this one does not own it (it is not its child)
        self.lock = threading.Lock()
        self.tail: deque[str] = deque(maxlen=30)
        self.ready = False
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE_BOOT], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
        threading.Thread(target=self._drain, daemon=True).start()
        self.proc.stdin.write(json.dumps({"sys_path": list(sys.path), "module": __name__, "backend": module}) + "\n")
        self.proc.stdin.flush()

    def _drain(self) -> None:
        for line in self.proc.stderr:
            self.tail.append(line.rstrip())

    def alive(self) -> bool:
        return self.owner == os.getpid() and self.proc.poll() is None

    def close(self) -> None:
        if self.owner != os.getpid():
            return
        try:
            self.proc.stdin.close()   # the server's loop ends at end of input
            self.proc.wait(timeout=5)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()

    def run(self, request: dict, progress, timeout: float | None) -> dict | None:
        """The report of one forked child; None when the server could not take the request (it
        did not start, or it died before forking): the caller starts a fresh child instead."""
        with self.lock:
            child: list[int] = []
            late: list[bool] = []
            timer = threading.Timer(timeout, lambda: (late.append(True), self._kill(child))) if timeout else None
            try:
                if not self._await_ready():
                    return None
                self.tail.clear()
                try:
                    self.proc.stdin.write(json.dumps({**request, "env": dict(os.environ)}) + "\n")
                    self.proc.stdin.flush()
                except OSError:  # it ended since: a fresh child takes the request
                    self._kill(child)
                    return None
                if timer:
                    timer.start()
                rc = None
                for line in self.proc.stdout:
                    if line.startswith(FORKED):
                        child.append(int(line[len(FORKED):]))
                    elif line.startswith(EXITED):
                        rc = int(line[len(EXITED):])
                        break
                    elif not _progress_line(line, progress):
                        self.tail.append(line.rstrip())
            except BaseException:  # Ctrl-C, a failing progress callback, a broken pipe: stop both
                self._kill(child)
                raise
            finally:
                if timer:
                    timer.cancel()
            if rc is None:  # the server died: before forking, a fresh child takes the request; after, the child too
                self._kill(child)
                if late:
                    raise ExecutionError(f"the profiling child process did not finish within {timeout} s")
                if not child:
                    return None
                rc = self.proc.wait()
            return _report(Path(request["result"]), rc, self.tail)

    def _await_ready(self) -> bool:
        """Wait until the server has imported the backend; False (and the server stopped) if it
        ended first."""
        if not self.ready:
            for line in self.proc.stdout:
                if line.rstrip() == READY:
                    self.ready = True
                    break
                self.tail.append(line.rstrip())
            if not self.ready:
                self._kill([])
        return self.ready

    def _kill(self, child: list[int]) -> None:
        for pid in child:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
        self.proc.kill()
        self.proc.wait()


_servers: dict[tuple, _Server] = {}
_servers_lock = threading.Lock()


# Environment variables that native libraries read once, when they load (the dynamic loader, the
# OpenMP/BLAS thread pools, Python itself): a change in this process needs a new server. The rest of
# the environment travels with each request (a library sets some of its own in this process, such as
# torch's TORCHINDUCTOR_CACHE_DIR, and the runtimes read theirs when a session opens, in the child).
_LOAD_TIME_ENV = ("LD_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "GOMP_", "PYTHON")


def _server_key(module: str) -> tuple:
    # a forked child has the server's interpreter, import path, directory and load-time environment
    env = sorted((k, v) for k, v in os.environ.items() if k.startswith(_LOAD_TIME_ENV))
    return (module, sys.executable, tuple(sys.path), os.getcwd(),
            hashlib.blake2b(json.dumps(env).encode(), digest_size=12).hexdigest())


def _server_for(module: str | None) -> _Server | None:
    """The running fork server for a backend module (started if needed), or None (switched off)."""
    if not (FORK_SERVER and module):
        return None
    key = _server_key(module)
    with _servers_lock:
        server = _servers.get(key)
        if server is not None and server.alive():
            return server
        # one server per backend: one started under another path, directory or environment goes
        stale = [k for k in _servers if k[0] == module]
        for k in stale:
            _servers.pop(k).close()
        try:
            server = _servers[key] = _Server(module)
        except OSError:
            return None
        return server


def backend_module_name(path=None, *, fmt: str | None = None, target: str | None = None) -> str | None:
    """The module of the backend that opens the artifact at ``path`` (or a ``fmt``/``target``'s
    artifacts): what a fork server imports. None when it cannot be told here (a child then reports why)."""
    from edgesdk.runtime.manifest import FORMATS
    from edgesdk.runtime.session import backend_module, resolve
    try:
        if path is None:
            mod = backend_module(fmt, target)
        else:
            _, manifest, bare = resolve(path)
            mod = (backend_module(manifest.format, manifest.target, manifest.backend) if manifest is not None
                   else backend_module(FORMATS[bare.suffix]))
    except Exception:  # noqa: BLE001 - the child raises the typed error
        return None
    name = getattr(mod, "__name__", None)
    return name if isinstance(name, str) and name in sys.modules else None


def start_servers(modules, wait: bool = False) -> None:
    """Start the fork servers of these backend modules now: they import while the caller does
    other work, and the first profile of each backend then forks at once. ``wait``: return when
    every one is ready."""
    servers = [s for m in dict.fromkeys(modules) if (s := _server_for(m)) is not None]
    for s in servers if wait else ():
        with s.lock:
            s._await_ready()


def close_servers() -> None:
    """Stop every fork server this process started."""
    with _servers_lock:
        servers = list(_servers.values())
        _servers.clear()
    for s in servers:
        s.close()


atexit.register(close_servers)


def profile_isolated(path, *, threads=None, progress=None, timeout: float | None = None, per_op: bool = True,
                     **kw):
    """`runtime.profile` in a child process (see the module docstring); same arguments.

    The child measures memory and timings. The thread sweep (``threads="auto"``) and the per-op
    pass run in this process: they time, they do not weigh, and this process usually has the
    backend's heavier tooling loaded already (ExecuTorch's ETDump Inspector imports the exporter)."""
    from edgesdk.runtime.profile import ProfileReport, op_pass, sweep_threads
    from edgesdk.runtime.session import load
    common = {k: kw.get(k) for k in ("inputs", "program", "require_signature", "public_key", "prompt_tokens", "dims")}
    sweep = None
    if threads == "auto":
        sweep = sweep_threads(path, seed=kw.get("seed", 0), new_tokens=kw.get("new_tokens", 32), **common)
        threads = sweep["chosen"]
    req = {"path": str(Path(path).resolve()), **kw, "per_op": False, "progress": progress is not None}
    key = req.get("public_key")
    if isinstance(key, (bytes, bytearray)):
        req["public_key"], req["public_key_pem"] = None, bytes(key).decode("ascii")
    elif key is not None:
        req["public_key"] = os.fspath(key)
    out = _run_child({**req, "op": "profile", "threads": threads, "backend_module": backend_module_name(path)},
                     progress, timeout)
    rep = ProfileReport.from_dict(out["report"])
    if sweep:
        rep.extra["threads_sweep"] = sweep
    if per_op:
        sess = load(path, threads=threads, require_signature=bool(common["require_signature"]),
                    public_key=common["public_key"])
        generation = sess.generation is not None and common["program"] is None and common["inputs"] is None
        if generation:
            spec, arrays = None, None
        else:
            from edgesdk.runtime.profile import program_runner
            _, arrays, spec = program_runner(sess, common["program"], common["inputs"], kw.get("seed", 0),
                                      common["prompt_tokens"], kw.get("new_tokens", 32), common["dims"])
        rep.ops, rep.ops_note, backend_extra = op_pass(sess, spec, arrays, kw.get("seed", 0), kw.get("op_runs", 20))
        rep.extra.update(backend_extra)
        rep.extra["isolation"]["per_op_pass"] = "in the calling process (a separate pass: timings, not memory)"
    return rep


def _child(req: dict) -> None:
    """Child side: import the backend (so RSS before load includes it, as in an app), run, report."""
    result = Path(req.pop("result"))
    try:
        out = _child_work(req)
    except SdkError as e:
        out = {"error": {"type": type(e).__name__, "message": str(e)}}
    except Exception as e:  # noqa: BLE001 - travels back as one typed error
        out = {"error": {"type": "ExecutionError", "message": f"{type(e).__name__}: {e}"}}
    tmp = result.with_name(result.name + ".tmp")
    from edgesdk.runtime.profile import json_safe
    tmp.write_text(json.dumps(json_safe(out), allow_nan=False))
    os.replace(tmp, result)
    sys.stdout.flush()


def _child_work(req: dict) -> dict:
    from edgesdk.runtime.manifest import FORMATS
    from edgesdk.runtime.profile import measure
    from edgesdk.runtime.session import backend_module, resolve

    path = req["path"]
    _, manifest, bare = resolve(path)
    if manifest is not None:
        backend_module(manifest.format, manifest.target, manifest.backend)
    else:
        backend_module(FORMATS[bare.suffix])
    inputs = _load_inputs(req["inputs"]) if req.get("inputs") else None
    common = dict(inputs=inputs, program=req.get("program"), seed=req.get("seed", 0),
                  require_signature=req.get("require_signature", False),
                  public_key=req["public_key_pem"].encode("ascii") if req.get("public_key_pem") else req.get("public_key"),
                  prompt_tokens=req.get("prompt_tokens"), new_tokens=req.get("new_tokens", 32), dims=req.get("dims"),
                  workload=req.get("workload"))
    def progress(done, total):
        print(f"{PROGRESS}{done} {total}", flush=True)

    rep = measure(path, warmup=req["warmup"], iters=req["iters"], threads=req.get("threads"),
                  per_op=req.get("per_op", True), op_runs=req.get("op_runs", 20),
                  progress=progress if req.get("progress") else None, max_warmup_s=req["max_warmup_s"],
                  mode="isolated", **common)
    rep.extra["isolation"] = {"pid": os.getpid(), "torch_loaded": "torch" in sys.modules,
                              "python": sys.version.split()[0], "modules_loaded": len(sys.modules),
                              "process": "forked from a server that imported the backend" if req.get("forked")
                              else "a fresh Python"}
    return {"report": rep.to_dict()}


def _serve(boot: dict) -> None:
    """Fork server side: import what `_child_work` imports before it measures (the runtime and
    the backend), then fork one child per request line until end of input. The server says when
    it is ready, each child's pid, and each exit code, on stdout; the children write their own
    progress there and their report to the request's file."""
    from edgesdk.runtime.manifest import FORMATS  # noqa: F401 - as `_child_work` imports them
    from edgesdk.runtime.profile import measure  # noqa: F401
    from edgesdk.runtime.session import backend_module  # noqa: F401
    importlib.import_module(boot["backend"])
    resident = _resident_file_pages()
    print(READY, flush=True)
    for line in sys.stdin:
        req = {**json.loads(line), "forked": True}
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.environ.clear()
                os.environ.update(req.pop("env"))
                _map_again(resident)
                _child(req)
                code = 0
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        print(f"{FORKED}{pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"{EXITED}{os.waitstatus_to_exitcode(status)}", flush=True)


# A forked child shares the server's pages, but Linux does not copy the page tables of file-backed
# mappings at fork (a fault maps them again): the shared libraries' pages the imports touched are
# resident in the server and not yet in the child's RSS. Without mapping them again, the child's RSS
# before load read 20-70 MB lower than a fresh child's, and its load and runs took the re-faults as
# the artifact's memory (ExecuTorch MLP init 3.2 MB against 0.8; benchmarks/profile_fork_server.py).
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MADV_POPULATE_READ = 22  # Linux >= 5.14: fault a range's pages in, read-only


def _resident_file_pages() -> list[tuple[int, int]]:
    """(address, length) runs of this process's file-backed pages that are resident in its page
    table (/proc/self/pagemap's present bit, readable without privileges)."""
    runs: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps") as maps, open("/proc/self/pagemap", "rb") as pm:
            for line in maps:
                f = line.split()
                if len(f) < 6 or f[4] == "0" or "r" not in f[1] or f[5].startswith("["):
                    continue
                lo, hi = (int(x, 16) for x in f[0].split("-"))
                pm.seek(lo // _PAGE * 8)
                present = (np.frombuffer(pm.read((hi - lo) // _PAGE * 8), dtype=np.uint64) >> np.uint64(63)) != 0
                edges = np.flatnonzero(np.diff(np.concatenate(([0], present.view(np.int8), [0]))))
                runs += [(lo + int(a) * _PAGE, int(b - a) * _PAGE) for a, b in zip(edges[::2], edges[1::2])]
    except (OSError, ValueError):
        return []
    return runs


def _map_again(runs: list[tuple[int, int]]) -> None:
    """Fault the server's resident file-backed pages into this forked child, so that its RSS before
    load counts what a fresh child's counts after the same imports."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    for addr, size in runs:
        if libc.madvise(addr, size, _MADV_POPULATE_READ) != 0 and ctypes.get_errno() == errno.EINVAL:
            for a in range(addr, addr + size, _PAGE):  # a kernel before 5.14: read a byte per page
                ctypes.c_char.from_address(a).value

