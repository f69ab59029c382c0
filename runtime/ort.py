"""ONNX Runtime backend (CPU execution provider): `.onnx` artifacts. Torch-free."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgesdk.runtime.errors import ExecutionError, IntegrityError
from edgesdk.runtime.logs import verbose
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec

NAME = "onnxruntime"
PROVIDERS = ["CPUExecutionProvider"]
# ONNX Runtime's severities: 0 verbose, 1 info, 2 warning, 3 error. Its warnings (unused
# initializers, EP fallbacks) reach the terminal only with EDGESDK_LOG=debug.
LOG_SEVERITY = 2 if verbose() else 3
ort.set_default_logger_severity(LOG_SEVERITY)

_ONNX_DTYPES = {
    "tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
    "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
    "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool",
}


def version() -> str:
    return ort.__version__


def session_options(threads: int, profile_prefix: str | None = None) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = LOG_SEVERITY
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


def inference_session(path: Path, so: ort.SessionOptions, **kwargs) -> ort.InferenceSession:
    """``ort.InferenceSession`` with its Python-level prints sent to stderr: when a session fails to
    build, ONNX Runtime prints an "EP Error" banner to stdout before retrying on its fallback
    providers, which would land in an embedding app's (or a JSON-speaking child's) stdout."""
    with contextlib.redirect_stdout(sys.stderr):
        return ort.InferenceSession(str(path), so, **kwargs)


def _session(path: Path, threads: int, profile_prefix: str | None = None) -> ort.InferenceSession:
    try:
        return inference_session(path, session_options(threads, profile_prefix), providers=PROVIDERS)
    except Exception as e:  # ORT raises its own pybind exception types
        raise IntegrityError(f"{path}: ONNX Runtime could not load the model: {e}") from None


class Program:
    """One ONNX model file. `InferenceSession.run` is thread-safe, so no lock is needed."""

    thread_safe = True

    def __init__(self, sess: ort.InferenceSession, spec: ProgramSpec):
        self.sess = sess
        self.spec = spec
        self._in_names = [i.name for i in sess.get_inputs()]
        self._out_names = [o.name for o in sess.get_outputs()]
        if len(self._in_names) != len(spec.inputs) or len(self._out_names) != len(spec.outputs):
            raise IntegrityError(
                f"model has {len(self._in_names)} inputs / {len(self._out_names)} outputs, manifest "
                f"declares {len(spec.inputs)} / {len(spec.outputs)}")

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self.sess.run(self._out_names, dict(zip(self._in_names, arrays)))
        except Exception as e:
            raise ExecutionError(f"onnxruntime failed to run the model: {e}") from None

    def raw_call(self):
        """The backend's own call, for overhead benchmarks: f(feed_dict) -> outputs."""
        return lambda feed: self.sess.run(None, feed), self._in_names

    def bind(self, alloc, lock=None) -> "Bound":
        """Inputs and outputs bound once through an IOBinding (see `runtime.state`)."""
        return Bound(self, alloc)


class Bound:
    """A program with every input and output bound once: OrtValues over numpy buffers (CPU
    OrtValues share the numpy memory), run with ``run_with_iobinding`` — no copy, no allocation
    and no name lookup per call. Outputs land in ``outputs``, overwritten by the next call.

    ``alias(pairs)``: outputs that replace inputs wholesale (a recurrent state) ping-pong between
    two buffers instead of being copied back: a second binding reads the first's outputs and
    writes into its inputs, and every call flips which one runs."""

    reusable = True
    fixed_outputs = True

    def __init__(self, prog: Program, alloc):
        self.inputs = [alloc(s) for s in prog.spec.inputs]
        self.outputs = [alloc(s) for s in prog.spec.outputs]
        self.extent: list = []
        self._prog, self._values = prog, []  # the OrtValues must outlive the bindings
        self._bindings = [self._bind(self.inputs, self.outputs)]
        self._pairs: list = []
        self._cur = 0
        run = prog.sess.run_with_iobinding
        self.raw = lambda: run(self._bindings[self._cur])

    def _bind(self, inputs, outputs):
        prog = self._prog
        binding = prog.sess.io_binding()
        for bind, names, arrays in ((binding.bind_ortvalue_input, prog._in_names, inputs),
                                    (binding.bind_ortvalue_output, prog._out_names, outputs)):
            for name, a in zip(names, arrays):
                v = ort.OrtValue.ortvalue_from_numpy(a)
                bind(name, v)
                self._values.append(v)
        return binding

    def alias(self, pairs: list[tuple[int, int]]) -> bool:
        """Make output ``o`` the next call's input ``i`` for every (i, o) pair, without copies."""
        if not pairs:
            return True
        ins, outs = list(self.inputs), list(self.outputs)
        for i, o in pairs:
            ins[i], outs[o] = self.outputs[o], self.inputs[i]
        self._bindings.append(self._bind(ins, outs))
        self._pairs = list(pairs)
        return True

    def __call__(self) -> list[np.ndarray]:
        try:
            self.raw()
        except Exception as e:
            raise ExecutionError(f"onnxruntime failed to run the model: {e}") from None
        if self._pairs:  # the state just written is the next call's input
            self._cur ^= 1
            for i, o in self._pairs:
                self.inputs[i], self.outputs[o] = self.outputs[o], self.inputs[i]
        return self.outputs

    def release(self) -> None:
        pass


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict) -> Program:
    return Program(_session(path, threads), spec)


def _spec_from(node) -> TensorSpec:
    dtype = _ONNX_DTYPES.get(node.type)
    if dtype is None:
        raise IntegrityError(f"ONNX tensor {node.name!r} has unsupported type {node.type}")
    shape = [d if isinstance(d, int) else (d or f"d{i}") for i, d in enumerate(node.shape)]
    return TensorSpec(node.name, tuple(shape), dtype)


def manifest_for_file(path: Path) -> Manifest:
    """Describe a bare `.onnx` file from the model itself (no hash check possible)."""
    sess = _session(path, 1)
    spec = ProgramSpec("forward", path.name, "forward",
                       tuple(_spec_from(i) for i in sess.get_inputs()),
                       tuple(_spec_from(o) for o in sess.get_outputs()))
    files = [FileEntry(path.name, path.stat().st_size, "0" * 64)]
    return Manifest(name=path.stem, target="onnx-cpu", format="onnx", programs={"forward": spec}, files=files)


def op_events(path: Path, spec: ProgramSpec, arrays: list[np.ndarray], runs: int, threads: int, manifest=None):
    """Run with ONNX Runtime's session profiler; yield (node name, op type, microseconds) per event."""
    with tempfile.TemporaryDirectory(prefix="edgesdk-ortprof-") as tmp:
        sess = _session(path, threads, profile_prefix=os.path.join(tmp, "ort"))
        feed = dict(zip([i.name for i in sess.get_inputs()], arrays))
        for _ in range(runs):
            sess.run(None, feed)
        trace = sess.end_profiling()
        with open(trace) as f:
            events = json.load(f)
    rows = []
    for ev in events:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        rows.append((ev["name"][: -len("_kernel_time")], args.get("op_name", "?"), float(ev.get("dur", 0)),
                     args.get("provider", "")))
    return rows, ""


_options = session_options  # the earlier name, while other branches still use it
