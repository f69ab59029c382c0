"""The test suite's plug-in target, runtime half: runs the ``.toy`` files that
tests/plugins/targets/toy_numpy.py writes (a chain of Linear / ReLU steps in an ``.npz`` archive)
with numpy. No torch: an app with the runtime alone opens them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import register_backend
from edgesdk.runtime.errors import ExecutionError, IntegrityError
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec

NAME = "toy-numpy"


class _Program:
    thread_safe = True

    def __init__(self, path: Path):
        try:  # a damaged file is a typed error, as the contract asks of every backend
            with np.load(path, allow_pickle=False) as z:
                self.steps = [(op, z.get(f"w{i}"), z.get(f"b{i}")) for i, op in enumerate(z["ops"].tolist())]
                self.input_shape = tuple(int(d) for d in z["input_shape"])
        except Exception as e:  # zipfile / numpy raise their own types for a damaged archive
            raise IntegrityError(f"{path}: not a readable .toy archive ({type(e).__name__}: {e})") from None

    def run(self, arrays):
        x = np.asarray(arrays[0], np.float32)  # (B, in)
        try:
            for op, w, b in self.steps:
                x = x @ w.T + b if op == "linear" else np.maximum(x, 0)  # (B, out)
        except ValueError as e:
            raise ExecutionError(f"toy backend: {e}") from None
        return [np.ascontiguousarray(x, np.float32)]


def version() -> str:
    return np.__version__


def open_program(path, spec, *, threads, manifest, cache):
    return _Program(path)


def manifest_for_file(path: Path) -> Manifest:
    prog = _Program(path)
    (y,) = prog.run([np.zeros(prog.input_shape, np.float32)])
    spec = ProgramSpec("forward", path.name, "forward", (TensorSpec("input", prog.input_shape, "float32"),),
                       (TensorSpec("output", y.shape, "float32"),))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return Manifest(name=path.stem, target=NAME, backend=NAME, format="toy", programs={"forward": spec},
                    files=[FileEntry(path.name, path.stat().st_size, digest)])


def op_events(path, spec, arrays, runs, threads, manifest=None):
    return [], "the toy backend has no per-op timings"


register_backend(NAME, __name__, package="numpy", install_hint="pip install numpy", targets=(NAME,),
                 formats={".toy": "toy"})
