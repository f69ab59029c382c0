"""Runtime backends by name: the runtime half of the converter <-> runtime contract.

A converter writes ``backend`` into the manifest (its `Converter.backend`); `runtime.load` opens
the artifact with the backend registered under that name. Manifests written before the field
existed fall back to the backend registered for their target, then for their format.

A backend is a module (or any object) that provides what `Backend` lists. The built-in ones are
registered below by module name and imported only when an artifact needs them (so opening an ONNX
file never loads ExecuTorch); a new one registers itself from its own file::

    from edgesdk.runtime.backends import register_backend

    register_backend("my-npu", "my_package.my_npu_backend", package="my_npu_sdk",
                     install_hint="pip install my-npu-sdk", formats={".mynpu": "mynpu"})

No torch, no other layer of ours: this module is part of the embeddable runtime.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from edgesdk.runtime.errors import TargetUnavailableError
from edgesdk.runtime.manifest import FORMATS, Manifest, ProgramSpec
from edgesdk.runtime.plugins import load_plugins
from edgesdk.runtime.registry import Registry


@runtime_checkable
class Backend(Protocol):
    """What `runtime.load` and `runtime.profile` call on a backend. Optional extras:
    ``unavailable() -> str | None`` (why it cannot run here) and ``effective_threads(n) -> int``."""

    NAME: str

    def version(self) -> str:
        """The version of the library that runs the artifact (recorded in every profile)."""

    def open_program(self, path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict) -> Any:
        """A program object with ``run(list[np.ndarray]) -> list[np.ndarray]`` (``thread_safe``
        True when concurrent calls are allowed)."""

    def manifest_for_file(self, path: Path) -> Manifest:
        """A manifest read from a bare model file (its specs come from the file)."""

    def op_events(self, path: Path, spec: ProgramSpec, arrays: list, runs: int, threads: int, manifest=None):
        """``(events, note)`` or ``(events, note, extra)``: per-op timings where the backend can
        say (an empty list and why not otherwise; see `runtime.profile`)."""


@dataclass(frozen=True)
class BackendEntry:
    """``module``: an importable module name (imported on first use) or the backend object itself;
    ``package``: the Python package it needs (None: nothing to check); ``targets``: the targets whose
    old manifests (no ``backend`` field) it opens; ``formats``: the formats it opens as bare files."""

    name: str
    module: Any
    package: str | None = None
    install_hint: str = ""
    targets: tuple = ()
    formats: tuple = field(default=())

    def load(self, what: str):
        """The backend object, or TargetUnavailableError saying why not and how to fix it."""
        if self.package and importlib.util.find_spec(self.package) is None:
            raise TargetUnavailableError(f"cannot run {what}: {self.package} is not installed; fix: {self.install_hint}")
        backend = importlib.import_module(self.module) if isinstance(self.module, str) else self.module
        why = backend.unavailable() if hasattr(backend, "unavailable") else None
        if why:
            raise TargetUnavailableError(f"cannot run {what} here: {why}")
        return backend


BACKENDS: Registry[BackendEntry] = Registry("runtime backend")


def register_backend(name: str, module, *, package: str | None = None, install_hint: str = "",
                     targets: tuple = (), formats: dict | None = None, replace: bool = False) -> BackendEntry:
    """Register a runtime backend under ``name`` (the ``backend`` a converter writes). ``formats``
    maps a file suffix to a format name (``{".onnx": "onnx"}``): manifests of that format become
    valid, and bare files with that suffix open with this backend."""
    for suffix, fmt in (formats or {}).items():
        known = FORMATS.get(suffix)
        if known is not None and known != fmt:
            raise ValueError(f"suffix {suffix!r} is already the format {known!r}")
        FORMATS[suffix] = fmt
    entry = BackendEntry(name, module, package, install_hint, tuple(targets), tuple((formats or {}).values()))
    return BACKENDS.register(name, entry, replace=replace)


def unregister_backend(name: str) -> None:
    """Remove a backend (and the formats only it opened): tests that register a toy one clean up."""
    entry = BACKENDS.get(name) if name in BACKENDS else None
    BACKENDS.unregister(name)
    if entry is not None:
        still = {f for _, e in BACKENDS.items() for f in e.formats} | set(BUILTIN_FORMATS.values())
        for suffix, fmt in list(FORMATS.items()):
            if fmt in entry.formats and fmt not in still:
                del FORMATS[suffix]


def backend_for(fmt: str, target: str | None = None, backend: str | None = None):
    """The backend object that opens an artifact: the one named ``backend`` (what the manifest
    says), else the one registered for ``target``, else for ``fmt``. TargetUnavailableError when
    none is registered or it cannot run here."""
    load_plugins("backends")
    if backend:
        if backend not in BACKENDS:
            raise TargetUnavailableError(f"cannot run {target or fmt} artifacts: their backend {backend!r} is not "
                                         f"registered here (registered: {', '.join(BACKENDS.names())}); fix: install "
                                         f"and import the package that registers it")
        return BACKENDS.get(backend).load(f"{target or fmt} artifacts")
    for _, entry in BACKENDS.items():
        if target is not None and target in entry.targets:
            return entry.load(f"{target} artifacts")
    for _, entry in BACKENDS.items():
        if fmt in entry.formats:
            return entry.load(f".{fmt} files")
    runnable = sorted({f for _, e in BACKENDS.items() for f in e.formats})
    raise TargetUnavailableError(f"format {fmt!r} has no runtime backend here (runnable formats: {', '.join(runnable)})")


BUILTIN_FORMATS = dict(FORMATS)  # the formats the SDK opens without plug-ins (the Android core's set)
_EXECUTORCH = "pip install 'edge-sdk-runtime[executorch]'"
_LITERT = "pip install 'edge-sdk-runtime[litert]'"
_COREML = "pip install 'coremltools>=9,<10' (Core ML runs on macOS)"
# name, module, package, install hint, targets (old manifests), formats (bare files)
for _name, _module, _package, _hint, _targets, _formats in (
    ("onnxruntime", "edgesdk.runtime.ort", "onnxruntime", "pip install 'edge-sdk-runtime[onnx]'", ("onnx-cpu",),
     {".onnx": "onnx"}),
    ("executorch", "edgesdk.runtime.executorch", "executorch", _EXECUTORCH, ("executorch-xnnpack",), {".pte": "pte"}),
    ("litert", "edgesdk.runtime.litert", "ai_edge_litert", _LITERT, ("litert-cpu",), {".tflite": "tflite"}),
    ("coreml", "edgesdk.runtime.coreml", "coremltools", _COREML, ("coreml-ane",), {".mlpackage": "mlpackage"}),
    ("onnxruntime-qnn", "edgesdk.runtime.qnn", "onnxruntime_qnn", "pip install 'edge-sdk-runtime[qnn]'", ("qnn-htp",),
     {}),
    ("litert-gpu", "edgesdk.runtime.litert_gpu", "ai_edge_litert", _LITERT, ("litert-gpu",), {}),
    ("executorch-vulkan", "edgesdk.runtime.vulkan", "executorch", _EXECUTORCH, ("executorch-vulkan",), {}),
):
    register_backend(_name, _module, package=_package, install_hint=_hint, targets=_targets, formats=_formats)
