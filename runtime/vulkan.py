"""ExecuTorch Vulkan backend: `.pte` programs whose methods are delegated to VulkanBackend.

The ExecuTorch pip wheel registers no VulkanBackend (only the backends
`_get_registered_backend_names()` lists), so `unavailable()` says why and how such a `.pte`
runs instead: the ExecuTorch Android library built with Vulkan (android_demo/). Should a
future wheel register VulkanBackend, this module becomes available by itself and runs the
program through `runtime.executorch` (which, like every `.pte` path from Python, loads torch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesdk.runtime.manifest import Manifest, ProgramSpec

NAME = "executorch-vulkan"
BACKEND_ID = "VulkanBackend"


def version() -> str:
    from importlib.metadata import version as v
    return v("executorch")


def registered_backends() -> list[str]:
    from edgesdk.runtime.executorch import registered_backend_names
    return registered_backend_names()


def unavailable() -> str | None:
    """Why Vulkan `.pte` files cannot run here (None once the runtime registers VulkanBackend)."""
    names = registered_backends()
    if BACKEND_ID in names:
        return None
    return (f"the executorch pip runtime registers only {'/'.join(names) or 'no backends'} (no {BACKEND_ID}); "
            "run this .pte with the ExecuTorch Android library built with Vulkan, see android_demo/README.md")


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict):
    from edgesdk.runtime import executorch
    return executorch.open_program(path, spec, threads=threads, manifest=manifest, cache=cache)


def manifest_for_file(path: Path) -> Manifest:
    from edgesdk.runtime import executorch
    m = executorch.manifest_for_file(path)
    m.target, m.device = "executorch-vulkan", "gpu"
    return m


def op_events(path: Path, spec: ProgramSpec, arrays: list[np.ndarray], runs: int, threads: int, manifest=None):
    from edgesdk.runtime import executorch
    rows, note = executorch.op_events(path, spec, arrays, runs, threads, manifest=manifest)
    return [(name, op, us, "VulkanBackend" if backend == "XnnpackBackend" else backend)
            for name, op, us, backend in rows], note
