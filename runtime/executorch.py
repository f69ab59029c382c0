"""ExecuTorch backend: `.pte` programs (XNNPACK and portable kernels).

The one honest exception to "the runtime never imports torch": ExecuTorch's Python
bindings link libtorch, so this module imports torch when (and only when) a `.pte` is
opened. On a phone the same `.pte` runs in ExecuTorch's C++ runtime with no torch
(see android_demo/). We bind the C extension directly rather than
`executorch.runtime`, whose import pulls in the whole exporter (~3 s, torchao).
"""

from __future__ import annotations

import gc
import tempfile
import threading
import weakref
from pathlib import Path

import numpy as np
import torch  # loads libtorch, which the ExecuTorch extension links against

try:
    from executorch.extension.pybindings import _C
except ImportError:  # pragma: no cover - layout of other executorch releases
    from executorch.extension.pybindings import portable_lib as _C

from edgesdk.runtime import state
from edgesdk.runtime.errors import ExecutionError, IntegrityError, TargetUnavailableError
from edgesdk.runtime.logs import native_output
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec

NAME = "executorch"

# c10::ScalarType codes -> numpy dtype names
_SCALAR_TYPES = {0: "uint8", 1: "int8", 2: "int16", 3: "int32", 4: "int64", 5: "float16",
                 6: "float32", 7: "float64", 11: "bool"}


def version() -> str:
    from importlib.metadata import version as v
    return v("executorch")


# The threadpool's first use probes the CPU (cpuinfo), printing what it could not read on x86.
with native_output("ExecuTorch"):
    _C._threadpool_get_thread_count()


# Programs loaded by this process. XNNPACK delegates keep a pointer to the process-wide
# threadpool: resizing it while one is alive makes that program's next run hang (seen: a
# session at 2 threads, another opened at 1, then the first one run again).
_LIVE: "weakref.WeakSet" = weakref.WeakSet()


def set_threads(threads: int) -> int:
    """Resize XNNPACK's process-wide threadpool to ``threads`` when no loaded program uses it;
    otherwise keep its size. Returns the thread count programs will actually run with."""
    current = _C._threadpool_get_thread_count()
    if current != threads:
        if _LIVE:  # sessions already dropped but still in reference cycles: young ones first
            gc.collect(1)  # (a full collection takes seconds in a process holding trained models)
        if _LIVE:
            gc.collect()
        if not _LIVE:
            _C._unsafe_reset_threadpool(threads)
            current = threads
    return current


def effective_threads(requested: int) -> int:
    """What sessions opened now run with (see `set_threads`): recorded in every profile."""
    return _C._threadpool_get_thread_count()


class _Loaded:
    """A loaded program, tracked in `_LIVE` while any session holds it."""

    __slots__ = ("program", "__weakref__")

    def __init__(self, program):
        self.program = program

    def __getattr__(self, name):
        return getattr(self.program, name)


def registered_backend_names() -> list[str]:
    """The delegates this ExecuTorch build registered (XnnpackBackend, QnnBackend, ...)."""
    return sorted(_C._get_registered_backend_names())


def load_program(path: Path, etdump: bool = False):
    try:
        with native_output("ExecuTorch"):
            # InternalConsistency runs the flatbuffer verifier (the binding's default, Minimal, does not:
            # a bit-flipped bare .pte then crashed the process instead of raising)
            loaded = _Loaded(_C._load_program(str(path), enable_etdump=etdump, debug_buffer_size=0,
                                              program_verification=_C.Verification.InternalConsistency))
    except Exception as e:
        raise IntegrityError(f"{path}: ExecuTorch could not load the program: {e}") from None
    _LIVE.add(loaded)
    return loaded


class Program:
    """One method of a `.pte`. ExecuTorch methods are not re-entrant: the Session locks."""

    thread_safe = False

    def __init__(self, program, method_name: str, spec: ProgramSpec, path: Path, caller_owned: bool = False):
        names = {program.get_method_name(i) for i in range(program.num_methods())}
        if method_name not in names:
            raise IntegrityError(f"{path}: no method {method_name!r} (has {sorted(names)})")
        try:
            self.method = program.load_method(method_name)
        except Exception as e:
            missing = _unregistered_backends(path)
            if missing:
                raise TargetUnavailableError(
                    f"{path}: method {method_name!r} is delegated to {', '.join(missing)}, which this "
                    f"ExecuTorch runtime does not register (it has {', '.join(sorted(_C._get_registered_backend_names()))}); "
                    "run it where that backend is built in (e.g. the Android demo)") from None
            raise IntegrityError(f"{path}: cannot load method {method_name!r}: {e}") from None
        self._program = program  # keep the program alive as long as its method
        self.spec = spec
        # inputs left out of memory planning are read where the caller keeps them: `run` then
        # passes copies with slack after them (XNNPACK reads up to 16 bytes past an input)
        self._scratch = [state.alloc_spec(t) for t in spec.inputs] if caller_owned else None
        self._owner = None  # the Bound whose tensors are the method's inputs now (bind)
        self._generation = threading.Lock()  # one generation at a time owns the bound method
        meta = self.method.method_meta()
        if meta.num_inputs() != len(spec.inputs) or meta.num_outputs() != len(spec.outputs):
            raise IntegrityError(
                f"{path}: method {method_name!r} has {meta.num_inputs()} inputs / {meta.num_outputs()} "
                f"outputs, manifest declares {len(spec.inputs)} / {len(spec.outputs)}")

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if self._scratch is not None:
            for dst, a in zip(self._scratch, arrays):
                np.copyto(dst, a)
            arrays = self._scratch
        self._owner = None  # call() sets the method's inputs to these arrays
        try:
            outs = self.method.call([torch.from_numpy(a) for a in arrays], clone_outputs=False)
        except Exception as e:
            raise ExecutionError(f"executorch failed to run the method: {e}") from None
        # outputs copied by numpy from views of the method's memory, not cloned by the bindings (at::clone,
        # which copies a large tensor on torch's intra-op threads): one 800 KB output 255.8 -> 242.2 us per
        # call, a 16-float one 6.1 -> 6.5 us (benchmarks/runtime_overhead.py --breakdown, RESULTS.md "#17,
        # twenty-eighth session")
        return [np.array(o.numpy()) if isinstance(o, torch.Tensor) else np.asarray(o) for o in outs]

    def raw_call(self):
        """The backend's own call, for overhead benchmarks: f(list of torch tensors) -> outputs."""
        return self.method.call

    def bind(self, alloc, lock=None) -> "Bound":
        """Tensors viewing the runtime's buffers, made once (see `runtime.state`)."""
        return Bound(self, alloc, lock)


class Bound:
    """A method bound once to tensors that view numpy buffers (`torch.from_numpy` shares the
    memory), run with ``execute`` and read through views of its own output memory
    (``get_outputs(clone_outputs=False)``). With caller-owned inputs the delegate reads the
    buffers in place and ``set_inputs`` runs only when another caller set the method's inputs
    meanwhile; otherwise ExecuTorch copies them into its planned memory at every call. One
    generation at a time owns a method's binding (`acquire`/`release`): the outputs live in the
    method's memory."""

    reusable = True
    fixed_outputs = True

    def __init__(self, prog: Program, alloc, lock):
        self.inputs = [alloc(s) for s in prog.spec.inputs]
        self.extent: list = []
        self.outputs = None
        self._prog, self._lock = prog, lock
        tensors = [torch.from_numpy(a) for a in self.inputs]
        method, owned = prog.method, prog._scratch is not None

        def raw():
            if prog._owner is not self or not owned:
                method.set_inputs(tensors)
                prog._owner = self
            method.execute()
        self.raw = raw

    def acquire(self) -> None:
        self._prog._generation.acquire()

    def __call__(self) -> list[np.ndarray]:
        try:
            if self._lock is None:
                self.raw()
            else:
                with self._lock:
                    self.raw()
            if self.outputs is None:
                self.outputs = [o.numpy() for o in self._prog.method.get_outputs(clone_outputs=False)]
        except Exception as e:
            raise ExecutionError(f"executorch failed to run the method: {e}") from None
        return self.outputs

    def release(self) -> None:
        self._prog._generation.release()


def _unregistered_backends(path: Path) -> list[str]:
    """Delegate ids named in the .pte that this runtime lacks (cheap byte scan of known ids)."""
    data = path.read_bytes()
    known = ("VulkanBackend", "XnnpackBackend", "QnnBackend", "CoreMLBackend", "MPSBackend", "OpenvinoBackend")
    have = set(_C._get_registered_backend_names())
    return [b for b in known if b.encode() in data and b not in have]


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict) -> Program:
    set_threads(threads)
    if path not in cache:  # all methods of a .pte share one loaded program
        cache[path] = load_program(path)
    caller_owned = manifest.extra.get("executorch_inputs") == "caller-owned"
    return Program(cache[path], spec.method, spec, path, caller_owned)


def tensor_specs(infos, prefix) -> tuple[TensorSpec, ...]:
    out = []
    for i, ti in enumerate(infos):
        dtype = _SCALAR_TYPES.get(ti.dtype())
        if dtype is None:
            raise IntegrityError(f"{prefix}_{i}: unsupported ExecuTorch scalar type {ti.dtype()}")
        out.append(TensorSpec(f"{prefix}_{i}", tuple(ti.sizes()), dtype))
    return tuple(out)


def manifest_for_file(path: Path) -> Manifest:
    """Describe a bare `.pte` from its method metadata (inputs are named input_0, input_1...)."""
    prog = load_program(path)
    programs = {}
    for i in range(prog.num_methods()):
        name = prog.get_method_name(i)
        meta = prog.method_meta(name)
        programs[name] = ProgramSpec(
            name, path.name, name,
            tensor_specs([meta.input_tensor_meta(j) for j in range(meta.num_inputs())], "input"),
            tensor_specs([meta.output_tensor_meta(j) for j in range(meta.num_outputs())], "output"))
    files = [FileEntry(path.name, path.stat().st_size, "0" * 64)]
    return Manifest(name=path.stem, target="executorch-xnnpack", format="pte", programs=programs, files=files)


def op_events(path: Path, spec: ProgramSpec, arrays: list[np.ndarray], runs: int, threads: int, manifest=None):
    """Run with ETDump enabled and read it with ExecuTorch's Inspector.

    Yields (event name, op type, microseconds, backend). A delegated subgraph appears as one
    `DELEGATE_CALL` row, and, where the build times them, as its kernels' rows too (backend: the
    delegate's), whose time the `DELEGATE_CALL` row already holds.
    """
    set_threads(threads)
    prog = load_program(path, etdump=True)
    method = prog.load_method(spec.method)
    tensors = [torch.from_numpy(a) for a in arrays]
    for _ in range(runs):
        method.call(tensors)
    with tempfile.TemporaryDirectory(prefix="edgesdk-etdump-") as tmp:
        etdump = str(Path(tmp) / "run.etdp")
        prog.write_etdump_result_to_file(etdump, str(Path(tmp) / "debug.bin"))
        import logging
        import warnings
        logging.getLogger().setLevel(max(logging.getLogger().level, logging.WARNING))
        with warnings.catch_warnings(), native_output("ExecuTorch Inspector"):
            warnings.simplefilter("ignore")
            from executorch.devtools import Inspector  # heavy; imports the exporter (torchao's load lines)
            inspector = Inspector(etdump_path=etdump)
    events = [ev for block in inspector.event_blocks if block.name == "Execute" for ev in block.events
              if ev.name not in ("Method::execute", "OPERATOR_CALL") and ev.perf_data]
    # a kernel inside a delegate (XNNPACK's per-operator events carry timings in executorch >= 1.5) is
    # the delegate's, not a portable op: its time is also inside its DELEGATE_CALL row
    def inside(ev) -> bool:
        return ev.name == "DELEGATE_CALL" or bool(getattr(ev, "is_delegated_op", False))

    kernels = [ev for ev in events if inside(ev) and ev.name != "DELEGATE_CALL"]
    # XNNPACK times its kernels in whole microseconds: where it times any, one that reads 0 in every
    # run is a real sub-microsecond kernel and keeps its row (dropped, it came and went with the
    # machine's load: one run at 1 us listed it); where it times none, their rows say nothing
    timed = any(any(ev.perf_data.raw) for ev in kernels)
    rows, hidden, instant = [], 0, 0
    for ev in events:
        raw = [x * 1e3 for x in ev.perf_data.raw]  # Inspector reports ms
        if not any(raw):
            if not (timed and inside(ev)):
                hidden += 1
                continue
            instant += 1
        backend = ev.delegate_backend_name or ("XnnpackBackend" if inside(ev) else "portable")
        op = ev.name.removeprefix("native_call_")
        for us in raw:
            rows.append((ev.name, op, us, backend))
    notes = []
    if hidden:
        notes.append(f"{hidden} delegate-internal events carry no timing; the DELEGATE_CALL rows hold all "
                     "delegated time (the timed kernels' rows are inside them)")
    if instant:
        notes.append(f"{instant} delegate kernels took under 1 us in every run (timed in whole microseconds): "
                     "listed at 0")
    note = "; ".join(notes)
    return rows, note


def _fb_table(buf: bytes, pos: int, field: int) -> int | None:
    """Position of a flatbuffer table's field, or None when absent (little-endian layout)."""
    vt = pos - int.from_bytes(buf[pos:pos + 4], "little", signed=True)
    vt_size = int.from_bytes(buf[vt:vt + 2], "little")
    slot = 4 + 2 * field
    if slot + 2 > vt_size:
        return None
    off = int.from_bytes(buf[vt + slot:vt + slot + 2], "little")
    return pos + off if off else None


def _fb_vector(buf: bytes, field_pos: int) -> tuple[int, int]:
    """(position of the first element, length) of the vector a field points to."""
    vec = field_pos + int.from_bytes(buf[field_pos:field_pos + 4], "little")
    return vec + 4, int.from_bytes(buf[vec:vec + 4], "little")


def planned_memory(path: Path) -> dict[str, int]:
    """Bytes of the memory-planned arena of each method, as the `.pte` declares it
    (``Program.execution_plan[i].non_const_buffer_sizes`` in ExecuTorch's program.fbs; the
    runtime allocates these buffers when it loads the method)."""
    buf = path.read_bytes()
    root = int.from_bytes(buf[0:4], "little")
    plans = _fb_table(buf, root, 1)  # Program.execution_plan
    out: dict[str, int] = {}
    if plans is None:
        return out
    first, n = _fb_vector(buf, plans)
    for i in range(n):
        e = first + 4 * i
        plan = e + int.from_bytes(buf[e:e + 4], "little")
        name_f, sizes_f = _fb_table(buf, plan, 0), _fb_table(buf, plan, 8)
        name = "?"
        if name_f is not None:
            s, ln = _fb_vector(buf, name_f)
            name = buf[s:s + ln].decode("utf-8", "replace")
        total = 0
        if sizes_f is not None:
            s, ln = _fb_vector(buf, sizes_f)
            total = sum(int.from_bytes(buf[s + 8 * j:s + 8 * j + 8], "little", signed=True) for j in range(ln))
        out[name] = total
    return out


def memory_info(sess) -> dict:
    """What ExecuTorch itself declares: the planned arena of the profiled artifact's methods."""
    files = {sess.path / spec.file if not sess.path.is_file() else sess.path for spec in sess.manifest.programs.values()}
    arena = {}
    for f in files:
        arena.update(planned_memory(f))
    return {"planned_arena_bytes": sum(arena.values()), "planned_arena_per_method": arena}
