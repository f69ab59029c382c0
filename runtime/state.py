"""Generation state in preallocated buffers, bound to a program without copies where the backend allows.

`runtime.generate` keeps every carried state (KV caches, recurrent states, constant cross K/V) in
one buffer for the whole generation and feeds the step program those buffers directly:

- :func:`alloc` — a zeroed, 64-byte aligned array with slack after its end (XNNPACK may read up to
  16 bytes past an input; it never writes there).
- a *bound* step program: ``bound.inputs`` are the arrays the program reads, one per input in
  spec order, written in place between calls; ``bound()`` runs the program on their current
  contents and returns its outputs (valid until the next call); ``bound.raw`` is the backend's own
  call on those inputs (what the runtime's per-token overhead is measured against);
  ``bound.release()`` hands it back (``bound.acquire()``, where a backend has it, makes the
  binding exclusive until then); ``bound.fixed_outputs`` says the outputs land in the same arrays
  at every call; ``bound.extent`` is the generation loop's note of the cache slots it wrote.
  Backends bind without copying where they can (their
  ``Program.bind``: ONNX Runtime IOBinding over OrtValues that share the numpy memory,
  ExecuTorch tensors viewing it, LiteRT's own input tensors as numpy views); :class:`CopyBound`
  is the fallback that passes the arrays to ``Program.run`` at every call.
- :func:`write_slot` — ``buf[..., pos:pos + n, ...] = new`` along one axis (an in-place KV write).
- :class:`Stacked` — an allocator that lays equal caches (every layer's keys, say) side by side in
  one buffer, and their step outputs likewise, so the loop writes all their slots with one numpy
  assignment per group instead of one per cache. That matters because each operation after a step
  runs cold: the step's pass over megabytes of cache has evicted the interpreter's and numpy's
  working set, and the first few assignments pay for it. It takes effect where a backend binds
  both the inputs and the outputs to the runtime's buffers (ONNX Runtime); elsewhere the loop
  writes per cache.

No validation happens here: the shapes were checked once, against the manifest, when the
generation entry was parsed; carried state is the model's own output and is never re-validated.
"""

from __future__ import annotations

import numpy as np

SLACK = 64  # bytes after every buffer (XNNPACK reads up to 16 past an input)
ALIGN = 64


def alloc(shape, dtype) -> np.ndarray:
    """A zeroed C-contiguous array of ``shape``/``dtype``, 64-byte aligned, with slack after it."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(n + ALIGN + SLACK, np.uint8)
    off = (-raw.ctypes.data) % ALIGN
    return raw[off:off + n].view(dtype).reshape(tuple(shape))


def alloc_spec(spec) -> np.ndarray:
    return alloc(spec.shape, spec.np_dtype)


def write_slot(buf: np.ndarray, new: np.ndarray, start: int, axis: int) -> int:
    """Write ``new`` into ``buf`` at ``start`` along ``axis`` (other dims equal); returns the end."""
    end = start + new.shape[axis]
    idx = (slice(None),) * axis + (slice(start, end),)
    buf[idx] = new
    return end


def clear_slots(buf: np.ndarray, start: int, end: int, axis: int) -> None:
    if end > start:
        buf[(slice(None),) * axis + (slice(start, end),)] = 0


class Stacked:
    """``alloc(spec)`` for a program binding: the tensors named in each group (equal shape and
    dtype) become consecutive members of one buffer, each starting on a 64-byte boundary; the
    rest get their own buffer. ``stack(names)`` is the whole group as one strided array (the
    member index first) when every member came from here, else None.

    >>> import numpy as np
    >>> from edgesdk.runtime.manifest import TensorSpec
    >>> st = Stacked([["k_0", "k_1"]])
    >>> a, b = st(TensorSpec("k_0", (2, 3), "float32")), st(TensorSpec("k_1", (2, 3), "float32"))
    >>> st.stack(["k_0", "k_1"])[1] is not None and np.shares_memory(st.stack(["k_0", "k_1"]), b)
    True
    """

    def __init__(self, groups: list[list[str]]):
        self._groups = [list(g) for g in groups]
        self._where = {n: (gi, i) for gi, g in enumerate(self._groups) for i, n in enumerate(g)}
        self._stacks: dict[int, np.ndarray] = {}
        self._views: dict[str, np.ndarray] = {}

    def __call__(self, spec) -> np.ndarray:
        where = self._where.get(spec.name)
        if where is None or spec.name in self._views:  # not grouped, or asked twice (input and output)
            return alloc_spec(spec)
        gi, i = where
        shape, dtype = tuple(spec.shape), np.dtype(spec.np_dtype)
        st = self._stacks.get(gi)
        if st is None:
            n = int(np.prod(shape, dtype=np.int64))
            pitch = -(-n * dtype.itemsize // ALIGN) * ALIGN // dtype.itemsize  # elements per member
            flat = alloc((len(self._groups[gi]) * pitch,), dtype)
            member = np.empty(shape, dtype).strides
            st = self._stacks[gi] = np.lib.stride_tricks.as_strided(
                flat, (len(self._groups[gi]),) + shape, (pitch * dtype.itemsize,) + member, writeable=True)
        if st.shape[1:] != shape or st.dtype != dtype:  # a member unlike the first: on its own
            return alloc_spec(spec)
        self._views[spec.name] = v = st[i]
        return v

    def stack(self, names: list[str]) -> np.ndarray | None:
        where = [self._where.get(n) for n in names]
        if not names or None in where or len({gi for gi, _ in where}) != 1 or any(n not in self._views for n in names):
            return None
        gi = where[0][0]
        if [i for _, i in where] != list(range(len(self._groups[gi]))):
            return None
        return self._stacks[gi]

    def view(self, name: str) -> np.ndarray | None:
        return self._views.get(name)


class CopyBound:
    """The fallback binding: the arrays are handed to the program's ``run`` at every call (the
    backend copies them in if it must). ``binding`` is a session's program binding or any object
    with ``spec`` and ``run(list of arrays)``."""

    reusable = True

    fixed_outputs = False  # every call returns new arrays

    def __init__(self, binding):
        self.inputs = [alloc_spec(s) for s in binding.spec.inputs]
        self.extent: list = []  # per state: slots written by the last generation (runtime.generate)
        prog = getattr(binding, "program", None)
        lock = getattr(binding, "_lock", None)
        run = prog.run if prog is not None else binding.run
        if lock is not None:
            def call(run=run, lock=lock, inputs=self.inputs):
                with lock:
                    return run(inputs)
        else:
            def call(run=run, inputs=self.inputs):
                return run(inputs)
        self.raw = self._call = call

    def __call__(self) -> list[np.ndarray]:
        return self._call()

    def release(self) -> None:
        pass


def bind(binding, alloc=None):
    """A bound program for ``binding`` (a session's `_Binding` or a PyTorch reference binding):
    the backend's zero-copy ``bind`` where it has one, else `CopyBound`. Bindings reused from the
    binding's pool keep their buffers (no page faults, no allocation on the next generation).
    ``alloc`` (default `alloc_spec`; e.g. a `Stacked`) places the buffers of a new binding; the
    binding keeps it as ``bound.placement``."""
    pool, bound = getattr(binding, "pool", None), None
    if pool:
        try:
            bound = pool.pop()
        except IndexError:
            pass
    prog = getattr(binding, "program", None)
    if bound is None and prog is not None and hasattr(prog, "bind"):
        bound = prog.bind(alloc or alloc_spec, getattr(binding, "_lock", None))
        if bound is not None:
            bound.placement = alloc
    bound = bound if bound is not None else CopyBound(binding)
    if hasattr(bound, "acquire"):
        bound.acquire()
    return bound


def release(binding, bound) -> None:
    bound.release()
    pool = getattr(binding, "pool", None)
    if bound.reusable and pool is not None:
        pool.append(bound)
