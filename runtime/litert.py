"""LiteRT backend (`ai_edge_litert`, XNNPACK on CPU): `.tflite` artifacts. Torch-free.

LiteRT stores 64-bit integer I/O as 32-bit: token ids arrive as int64 (what PyTorch
takes) and are narrowed here, refusing values that do not fit; 32-bit outputs are widened
back to the dtype the manifest promises.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter

from edgesdk.runtime.errors import ExecutionError, InputError, IntegrityError
from edgesdk.runtime.logs import mute_native_exit_logs, native_output
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec, natural_order

NAME = "litert"
_I32 = np.iinfo(np.int32)
mute_native_exit_logs()  # LiteRT's accelerator registry logs from C++ destructors at exit


def version() -> str:
    from importlib.metadata import version as v
    return v("ai-edge-litert")


def narrow(a: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """int64 ids -> the int32 LiteRT stores, refusing values that do not fit."""
    if a.dtype == dtype:
        return a
    if a.dtype == np.int64 and dtype == np.int32:
        if a.size and (a.min() < _I32.min or a.max() > _I32.max):
            raise InputError(f"input {name!r}: values outside int32, which this LiteRT model stores ids as")
    return a.astype(dtype)


def _interpreter(path: Path, threads: int) -> Interpreter:
    try:
        with native_output("LiteRT"):  # "Created TensorFlow Lite XNNPACK delegate for CPU."
            it = Interpreter(model_path=str(path), num_threads=threads)
            it.allocate_tensors()
        return it
    except Exception as e:
        raise IntegrityError(f"{path}: LiteRT could not load the model: {e}") from None


class Program:
    """One signature of a `.tflite`. The interpreter is not re-entrant: the Session locks."""

    thread_safe = False

    def __init__(self, it: Interpreter, spec: ProgramSpec, signature: str, io_names: dict | None, path: Path):
        sigs = it.get_signature_list()
        if signature not in sigs:
            raise IntegrityError(f"{path}: no signature {signature!r} (has {sorted(sigs)})")
        in_names = (io_names or {}).get("inputs") or natural_order(sigs[signature]["inputs"])
        out_names = (io_names or {}).get("outputs") or natural_order(sigs[signature]["outputs"])
        if len(in_names) != len(spec.inputs) or len(out_names) != len(spec.outputs):
            raise IntegrityError(
                f"{path}: signature {signature!r} has {len(in_names)} inputs / {len(out_names)} outputs, "
                f"manifest declares {len(spec.inputs)} / {len(spec.outputs)}")
        runner = it.get_signature_runner(signature)
        ind, outd = runner.get_input_details(), runner.get_output_details()
        self.it = it
        self._in = [(ind[n]["index"], np.dtype(ind[n]["dtype"]), s.name) for n, s in zip(in_names, spec.inputs)]
        self._out = [(outd[n]["index"], np.dtype(s.dtype)) for n, s in zip(out_names, spec.outputs)]
        # statically quantized models take and give int8/int16 tensors with (scale, zero point):
        # the runtime keeps the float interface the manifest promises.
        self._qin = {i: _qparams(ind[n]) for i, (n, s) in enumerate(zip(in_names, spec.inputs))
                     if np.dtype(s.dtype).kind == "f" and np.dtype(ind[n]["dtype"]).kind in "iu"}
        self._qout = {i: _qparams(outd[n]) for i, (n, s) in enumerate(zip(out_names, spec.outputs))
                      if np.dtype(s.dtype).kind == "f" and np.dtype(outd[n]["dtype"]).kind in "iu"}
        # subgraph 0 can be driven through set_tensor/invoke directly (cheapest path)
        self._runner = None if len(sigs) == 1 else runner
        self._runner_names = (in_names, out_names)
        # (no reference to the interpreter's wrapper kept: the Interpreter refuses to invoke
        # while anything but itself holds one, see Interpreter._safe_to_run)
        self._subgraph = it._interpreter.GetSubgraphIndexFromSignature(signature)
        self._views = threading.Lock()  # held while a generation owns the input tensors (bind)
        self.extent: list = []  # slots of each cache written by the last generation (runtime.generate)
        # dynamic shapes: the interpreter's current input shapes; a new shape resizes and re-plans
        self._shapes = [tuple(ind[n]["shape"]) for n in in_names]

    def _resize(self, arrays) -> None:
        shapes = [a.shape for a in arrays]
        if shapes == self._shapes:
            return
        for (idx, _, _), shape in zip(self._in, shapes):
            self.it.resize_tensor_input(idx, list(shape), strict=False)
        self.it.allocate_tensors()
        self._shapes = shapes

    @staticmethod
    def _narrow(a: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
        return narrow(a, dtype, name)

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        it = self.it
        if self._qin:
            arrays = [_quantize(a, *self._qin[i], self._in[i][1]) if i in self._qin else a
                      for i, a in enumerate(arrays)]
        try:
            if self._runner is None:
                self._resize(arrays)
                for a, (idx, dtype, name) in zip(arrays, self._in):
                    it.set_tensor(idx, self._narrow(a, dtype, name))
                it.invoke()
                outs = [it.get_tensor(idx) for idx, _ in self._out]
            else:
                ins, outn = self._runner_names
                res = self._runner(**{n: self._narrow(a, d, nm) for n, a, (_, d, nm) in zip(ins, arrays, self._in)})
                outs = [res[n] for n in outn]
        except InputError:
            raise
        except Exception as e:
            raise ExecutionError(f"LiteRT failed to run the model: {e}") from None
        if self._qout:
            outs = [_dequantize(o, *self._qout[i]) if i in self._qout else o for i, o in enumerate(outs)]
        return [o if o.dtype == d else o.astype(d) for o, (_, d) in zip(outs, self._out)]

    def raw_call(self):
        """The backend's own call, for overhead benchmarks: set_tensor/invoke/get_tensor."""
        it, ins, outs = self.it, [i for i, _, _ in self._in], [i for i, _ in self._out]

        def call(arrays):
            for idx, a in zip(ins, arrays):
                it.set_tensor(idx, a)
            it.invoke()
            return [it.get_tensor(i) for i in outs]
        return call


    def bind(self, alloc, lock=None) -> "Bound | None":
        """The interpreter's own input tensors as numpy views, written in place (see
        `runtime.state`); None (the copying fallback) for models with quantized float I/O."""
        if self._qin or self._qout:
            return None
        return Bound(self, lock)


class Bound:
    """A signature whose input and output tensors are numpy views of the interpreter's memory:
    the state lives in the input tensors themselves and ``Invoke`` reads it there (no
    ``set_tensor`` copies). One generation at a time owns a program's views: a second waits for
    `release`. Do not run the same step program through `Session.run` meanwhile: it writes the
    same input tensors."""

    reusable = False
    fixed_outputs = True

    def __init__(self, prog: Program, lock):
        prog._views.acquire()
        self._prog = prog
        self.extent = prog.extent  # the state lives in the interpreter: so does its bookkeeping
        w, sg = prog.it._interpreter, prog._subgraph
        try:
            w.AllocateTensors(sg)  # a no-op once allocated; views stay valid until a resize
            self.inputs = [w.tensor(w, idx, sg) for idx, _, _ in prog._in]
            self.outputs = [w.tensor(w, idx, sg) for idx, _ in prog._out]
            if not prog.extent:  # first use: the arena holds garbage (NaN bit patterns included)
                for a in self.inputs:
                    a.fill(0)
        except Exception:
            prog._views.release()
            raise
        invoke = w.Invoke
        self.raw = lambda: invoke(sg)
        self._lock = lock

    def __call__(self) -> list[np.ndarray]:
        try:
            if self._lock is None:
                self.raw()
            else:
                with self._lock:
                    self.raw()
        except Exception as e:
            raise ExecutionError(f"LiteRT failed to run the model: {e}") from None
        return self.outputs

    def release(self) -> None:
        if self._prog is not None:
            # drop the views and the wrapper: the interpreter refuses to resize or invoke through
            # its Python API while they exist
            self.inputs = self.outputs = self.raw = None
            self._prog._views.release()
            self._prog = None


def _qparams(detail: dict) -> tuple[float, int]:
    scale, zero = detail.get("quantization", (0.0, 0))
    if not scale:
        raise IntegrityError(f"tensor {detail.get('name')!r} is integer but carries no quantization scale")
    return float(scale), int(zero)


def _quantize(a: np.ndarray, scale: float, zero: int, dtype: np.dtype) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(np.rint(a / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(q: np.ndarray, scale: float, zero: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero) * scale).astype(np.float32)


class SizeClasses:
    """A dynamic dim as one signature per size class (``extra.litert_classes``, written when the
    model bakes its sizes in): an input is zero-padded along the dim to the smallest class that
    holds it, that signature runs, and the outputs are cut back to the input's size. The
    conversion verified this against PyTorch at the range's ends and a middle point."""

    thread_safe = False

    def __init__(self, it: Interpreter, spec: ProgramSpec, info: dict, path: Path):
        sym = info["symbol"]
        self.sizes = [int(n) for n in info["sizes"]]
        self.programs = [Program(it, spec, sig, info["io"][sig], path) for sig in info["signatures"]]
        self.pad = info.get("pad", 0)
        # (input index, dim) and (output index, dim) that follow the symbol
        self._in = [(i, d) for i, s in enumerate(spec.inputs) for d, x in enumerate(s.shape) if x == sym]
        self._out = [(i, d) for i, s in enumerate(spec.outputs) for d, x in enumerate(s.shape) if x == sym]
        self.extent: list = []

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        i0, d0 = self._in[0]
        n = arrays[i0].shape[d0]
        k = next((k for k, c in enumerate(self.sizes) if c >= n), None)
        if k is None:
            raise InputError(f"size {n} is above the largest size class {self.sizes[-1]}")
        c = self.sizes[k]
        if c != n:
            arrays = list(arrays)
            for i, d in self._in:
                widths = [(0, 0)] * arrays[i].ndim
                widths[d] = (0, c - n)
                arrays[i] = np.pad(arrays[i], widths, constant_values=self.pad)
        outs = self.programs[k].run(arrays)
        for i, d in self._out:
            outs[i] = np.ascontiguousarray(outs[i][(slice(None),) * d + (slice(0, n),)])
        return outs

    def bind(self, alloc, lock=None):
        return None  # the copying path: generation state is not padded


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict):
    if path not in cache:
        cache[path] = _interpreter(path, threads)
    classes = manifest.extra.get("litert_classes", {}).get(spec.name)
    if classes:
        return SizeClasses(cache[path], spec, classes, path)
    io_names = manifest.extra.get("litert_io", {}).get(spec.name)
    return Program(cache[path], spec, spec.method, io_names, path)


def _dtype(d) -> str:
    return np.dtype(d).name


def manifest_for_file(path: Path) -> Manifest:
    """Describe a bare `.tflite` from its signatures (dtypes as stored, e.g. int32 ids)."""
    it = _interpreter(path, 1)
    programs = {}
    for sig, io in it.get_signature_list().items():
        r = it.get_signature_runner(sig)
        ind, outd = r.get_input_details(), r.get_output_details()
        programs[sig] = ProgramSpec(
            sig, path.name, sig,
            tuple(TensorSpec(n, tuple(int(x) for x in ind[n]["shape"]), _dtype(ind[n]["dtype"]))
                  for n in natural_order(io["inputs"])),
            tuple(TensorSpec(n, tuple(int(x) for x in outd[n]["shape"]), _dtype(outd[n]["dtype"]))
                  for n in natural_order(io["outputs"])))
    files = [FileEntry(path.name, path.stat().st_size, "0" * 64)]
    return Manifest(name=path.stem, target="litert-cpu", format="tflite", programs=programs, files=files)


def op_events(path: Path, spec: ProgramSpec, arrays, runs: int, threads: int, manifest=None):
    """LiteRT's Python API exposes no per-op timings (its C++ benchmark tool does)."""
    return [], "LiteRT's Python interpreter exposes no per-op timings"
