"""Core ML backend: `.mlpackage` ML programs (Apple Neural Engine, GPU, CPU). macOS only.

Core ML's ``predict`` exists only on Apple platforms: on Linux/Windows `unavailable()` says
so and `runtime.load` raises `TargetUnavailableError` before anything is opened. On macOS
this module predicts through coremltools' ``MLModel`` (compute units from the manifest,
``CPU_AND_NE`` by default). coremltools imports torch when it is installed, so on macOS
opening a package from Python may load torch (an app uses Core ML from Swift instead).
Nothing here imports coremltools until a package is opened.

An artifact holds one package per program; every file inside the package is a payload file
(hashed in the manifest) and the program's ``file`` is the package's ``Manifest.json``.
Core ML I/O is fp32/fp16/int32: the manifest's ``coreml`` section records the Core ML name and
dtype of each input and output, and the runtime casts positionally (int64 ids are narrowed to
int32, refusing values that do not fit; integer outputs are widened back).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np

from edgesdk.runtime.errors import ExecutionError, InputError, IntegrityError
from edgesdk.runtime.manifest import FileEntry, Manifest, ProgramSpec, TensorSpec

NAME = "coreml"
RUN_REASON = "Core ML runs only on macOS/iOS (coremltools' predict needs macOS)"
_DTYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "DOUBLE": "float64", "INT32": "int32", "INT8": "int8"}
_ARRAY_DTYPES = {65568: "FLOAT32", 65552: "FLOAT16", 65600: "DOUBLE", 131104: "INT32", 131080: "INT8"}


def version() -> str:
    from importlib.metadata import version as v
    return v("coremltools")


def unavailable() -> str | None:
    """Why Core ML cannot run here (None on macOS with coremltools' native library)."""
    if platform.system() != "Darwin":
        return RUN_REASON
    try:
        from coremltools import libcoremlpython  # noqa: F401  (the native predict library)
    except ImportError as e:
        return (f"coremltools' native library does not load ({e}); fix: pip install coremltools==9.0 "
                "(a macOS wheel for this Python)")
    return None


def _package(path: Path) -> Path:
    """The `.mlpackage` directory of a program file (`<pkg>.mlpackage/Manifest.json`) or a package."""
    pkg = path if path.suffix == ".mlpackage" else path.parent
    if pkg.suffix != ".mlpackage" or not pkg.is_dir():
        raise IntegrityError(f"{path}: not inside a .mlpackage directory")
    return pkg


def _check_listed(pkg: Path, root: Path, manifest: Manifest) -> None:
    """Refuse packages holding files the manifest does not hash: Core ML would read them unchecked."""
    listed = {f.path for f in manifest.files}
    for dirpath, _, filenames in os.walk(pkg):
        for f in filenames:
            rel = Path(dirpath, f).relative_to(root).as_posix()
            if rel not in listed:
                raise IntegrityError(f"{pkg}: {rel} is not listed in the manifest (unverified payload)")


def _coreml_io(spec) -> dict:
    def rows(features):
        return [{"name": f.name, "shape": list(f.type.multiArrayType.shape),
                 "dtype": _ARRAY_DTYPES.get(f.type.multiArrayType.dataType, "INVALID")} for f in features]
    return {"inputs": rows(spec.description.input), "outputs": rows(spec.description.output)}


def _cast_in(a: np.ndarray, want: str, name: str) -> np.ndarray:
    dtype = np.dtype(_DTYPES.get(want, "float32"))
    if a.dtype == dtype:
        return a
    if a.dtype.kind in "iu" and dtype.kind in "iu":
        info = np.iinfo(dtype)
        if a.size and (a.min() < info.min or a.max() > info.max):
            raise InputError(f"input {name!r}: values outside {dtype.name} range [{info.min}, {info.max}]; "
                             f"Core ML stores this input as {dtype.name}")
    return a.astype(dtype)


def _cast_out(a, spec: TensorSpec) -> np.ndarray:
    a = np.asarray(a)
    if spec.dtype == "bool":
        return a != 0
    return a.astype(spec.np_dtype, copy=False)


class Program:
    """One package, predicted through coremltools' MLModel. Serialised by the Session's lock."""

    thread_safe = False

    def __init__(self, model, spec: ProgramSpec, io: dict, path: Path):
        self.model = model
        self.spec = spec
        if len(io["inputs"]) != len(spec.inputs) or len(io["outputs"]) != len(spec.outputs):
            raise IntegrityError(
                f"{path}: Core ML model has {len(io['inputs'])} inputs / {len(io['outputs'])} outputs, "
                f"manifest declares {len(spec.inputs)} / {len(spec.outputs)}")
        self._in = [(r["name"], r["dtype"], s.name) for r, s in zip(io["inputs"], spec.inputs)]
        self._out = [(r["name"], s) for r, s in zip(io["outputs"], spec.outputs)]

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        feed = {cname: _cast_in(a, dtype, name) for a, (cname, dtype, name) in zip(arrays, self._in)}
        try:
            out = self.model.predict(feed)
        except Exception as e:
            raise ExecutionError(f"Core ML failed to predict: {e}") from None
        return [_cast_out(out[cname], spec) for cname, spec in self._out]

    def raw_call(self):
        """The backend's own call, for overhead benchmarks: f(feed dict) -> outputs."""
        return self.model.predict, [c for c, _, _ in self._in]


def _mlmodel(pkg: Path, compute_units: str):
    import coremltools as ct
    try:
        units = getattr(ct.ComputeUnit, compute_units)
    except AttributeError:
        raise IntegrityError(f"unknown Core ML compute units {compute_units!r}") from None
    try:
        return ct.models.MLModel(str(pkg), compute_units=units)
    except Exception as e:
        raise IntegrityError(f"{pkg}: Core ML could not load the package: {e}") from None


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict) -> Program:
    """Open one program's package. ``threads`` is ignored: Core ML schedules its own work."""
    pkg = _package(path)
    root = path
    for _ in Path(spec.file).parts:  # path is root / spec.file
        root = root.parent
    _check_listed(pkg, root, manifest)
    section = manifest.extra.get("coreml", {})
    model = _mlmodel(pkg, section.get("compute_units", "CPU_AND_NE"))
    io = section.get("programs", {}).get(spec.name) or _coreml_io(model.get_spec())
    return Program(model, spec, io, pkg)


def manifest_for_file(path: Path) -> Manifest:
    """Describe a bare `.mlpackage` directory from its spec (no hash check possible)."""
    import coremltools as ct
    pkg = _package(path)
    try:
        mspec = ct.utils.load_spec(str(pkg))
    except Exception as e:
        raise IntegrityError(f"{pkg}: not a loadable Core ML package: {e}") from None
    io = _coreml_io(mspec)

    def specs(rows):
        out = []
        for r in rows:
            if r["dtype"] not in _DTYPES:
                raise IntegrityError(f"{pkg}: {r['name']!r} has a Core ML type the runtime cannot carry")
            out.append(TensorSpec(r["name"], tuple(r["shape"]), _DTYPES[r["dtype"]]))
        return tuple(out)
    prog = ProgramSpec("forward", f"{pkg.name}/Manifest.json", "forward", specs(io["inputs"]), specs(io["outputs"]))
    files = []
    for dirpath, _, filenames in os.walk(pkg):
        for f in sorted(filenames):
            p = Path(dirpath, f)
            files.append(FileEntry(p.relative_to(pkg.parent).as_posix(), p.stat().st_size, "0" * 64))
    return Manifest(name=pkg.stem, target="coreml-ane", format="mlpackage", device="npu",
                    programs={"forward": prog}, files=files,
                    extra={"coreml": {"compute_units": "CPU_AND_NE", "programs": {"forward": io}}})


def op_events(path: Path, spec: ProgramSpec, arrays: list[np.ndarray], runs: int, threads: int, manifest=None):
    """Core ML exposes no per-op timing through coremltools."""
    return [], ("Core ML exposes no per-op timing to Python; use Xcode Instruments (Core ML template) or "
                "Xcode's performance report for per-op time and ANE/GPU/CPU placement")
