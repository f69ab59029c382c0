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

Example::

    from edgesdk import runtime
    rep = runtime.profile("out/mlp-litert-cpu", isolate=True, threads="auto")
    rep.memory          # {'mode': 'isolated', 'init_mb': 0.4, 'run_peak_mb': 0.5, ...}
    rep.extra["isolation"]["torch_loaded"]     # False
"""

from __future__ import annotations

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
        result = Path(tmp) / "result.json"
        request = {**request, "result": str(result), "sys_path": list(sys.path), "module": __name__}
        if request.get("inputs") is not None:
            request["inputs"] = _save_inputs(request["inputs"], Path(tmp) / "inputs.npz")
        proc = subprocess.Popen([sys.executable, "-c", _BOOT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, errors="replace")
        tail: deque[str] = deque(maxlen=30)

        def drain_stderr():
            for line in proc.stderr:
                tail.append(line.rstrip())
        reader = threading.Thread(target=drain_stderr, daemon=True)
        reader.start()
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.close()
            for line in proc.stdout:
                if line.startswith(PROGRESS):
                    if progress is not None:
                        done, total = line[len(PROGRESS):].split()
                        progress(int(done), int(total))
                else:
                    tail.append(line.rstrip())
            rc = proc.wait(timeout=timeout)
        except BaseException:  # Ctrl-C, a timeout, a failing progress callback: never leave it running
            proc.kill()
            proc.wait()
            raise
        reader.join(timeout=5)
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
    out = _run_child({**req, "op": "profile", "threads": threads}, progress, timeout)
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
                  prompt_tokens=req.get("prompt_tokens"), new_tokens=req.get("new_tokens", 32), dims=req.get("dims"))
    def progress(done, total):
        print(f"{PROGRESS}{done} {total}", flush=True)

    rep = measure(path, warmup=req["warmup"], iters=req["iters"], threads=req.get("threads"),
                  per_op=req.get("per_op", True), op_runs=req.get("op_runs", 20),
                  progress=progress if req.get("progress") else None, max_warmup_s=req["max_warmup_s"],
                  mode="isolated", **common)
    rep.extra["isolation"] = {"pid": os.getpid(), "torch_loaded": "torch" in sys.modules,
                              "python": sys.version.split()[0], "modules_loaded": len(sys.modules)}
    return {"report": rep.to_dict()}
