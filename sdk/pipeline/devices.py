"""Profiling devices: which device a target's profiles run on, the Ray resources a profiling
job asks for, and what a machine advertises (`edgesdk worker`).

Devices and their resources:

| device | targets | a profiling job asks for | advertised by a worker with |
|---|---|---|---|
| ``cpu`` | CPU targets | ``edgesdk-profiler: 1`` | always |
| ``qnn-htp`` | ``qnn-htp`` (the HTP emulator here, a Snapdragon board elsewhere) | ``qnn-htp: 1`` + ``edgesdk-profiler: 1`` | the target runs (QNN libraries load) |
| ``vulkan-gpu`` | ``litert-gpu`` | ``vulkan-gpu: 1`` + ``edgesdk-profiler: 1`` | a Vulkan driver (GPU or lavapipe) |
| ``adb:SERIAL`` | a phone on adb | ``device:adb:SERIAL: 1`` | ``adb devices`` lists it |

``edgesdk-profiler`` (one per machine) keeps profiles on one machine one at a time: the CPU,
the emulated NPU and the software GPU all run on that machine's cores, and a timing must not
share them. A phone is its own hardware, so its jobs ask only for the phone.

Example::

    from edgesdk.pipeline.devices import detect_resources, profile_device, resources_for
    detect_resources()            # {"edgesdk-profiler": 1, "qnn-htp": 1, "vulkan-gpu": 1}
    resources_for("qnn-htp")      # {"qnn-htp": 1, "edgesdk-profiler": 1}
"""

from __future__ import annotations

import shutil

PROFILER = "edgesdk-profiler"

# target device -> profiling device, for targets whose accelerator is not the host CPU
_ACCELERATOR = {"npu": None, "gpu": "vulkan-gpu"}


def profile_device(target, overrides: dict | None = None) -> str:
    """The device a target's profiles run on: ``profile.devices`` (``adb:SERIAL``) when it names
    one; else ``cpu``, the NPU target's own name (``qnn-htp``), ``vulkan-gpu`` for GPU targets."""
    chosen = (overrides or {}).get(target.name, "local")
    if chosen != "local":
        return chosen
    if target.device == "npu":
        return target.name
    return _ACCELERATOR.get(target.device) or "cpu"


def resources_for(device: str) -> dict[str, float]:
    """The Ray resources a profiling job on ``device`` asks for (see the module docstring)."""
    if device.startswith("adb:"):
        return {f"device:{device}": 1}
    if device == "cpu":
        return {PROFILER: 1}
    return {device: 1, PROFILER: 1}


def detect_resources(adb: str | None = None) -> dict[str, float]:
    """What this machine can profile, as Ray resources: always the CPU (``edgesdk-profiler``);
    ``qnn-htp`` / ``vulkan-gpu`` when those targets run here; ``device:adb:SERIAL`` for each
    phone that ``adb devices`` lists as ready."""
    import edgesdk
    found: dict[str, float] = {PROFILER: 1}
    for t in edgesdk.targets():
        dev = profile_device(t)
        if dev != "cpu" and t.runs_here:
            found[dev] = 1
    for serial in adb_serials(adb):
        found[f"device:adb:{serial}"] = 1
    return found


def adb_serials(adb: str | None = None) -> list[str]:
    """Serials of the phones ``adb devices`` lists in the ``device`` state ([] without adb)."""
    import os

    from edgesdk.runtime.devices import parse_adb_devices, subprocess_runner
    from edgesdk.runtime.errors import SdkError
    exe = adb or os.environ.get("ADB") or shutil.which("adb")
    if not exe:
        return []
    try:
        r = subprocess_runner([exe, "devices"], timeout=20.0)
    except (OSError, SdkError):
        return []
    if r.rc != 0:
        return []
    return sorted(s for s, state in parse_adb_devices(r.stdout).items() if state == "device")
