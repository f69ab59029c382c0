"""The software GPU behind `litert-gpu`: find Mesa's lavapipe (Vulkan on the CPU) and load it.

LiteRT's GPU accelerator is WebGPU (Dawn) over Vulkan; Dawn opens ``libvulkan.so.1`` by name
and the Vulkan loader opens the driver named by ``VK_ICD_FILENAMES``. Dawn needs Mesa >= 25
(Mesa 22's lavapipe, Debian bookworm's, gives "No adapters found"). ``make gpu-sim``
(scripts/gpu-sim.sh) unpacks Debian bookworm-backports' ``mesa-vulkan-drivers``, the Vulkan
loader and the libraries the system lacks into ``.cache/gpu-sim`` without root.

Where the driver is looked for, first match wins:

1. ``EDGESDK_GPU_SIM=DIR`` — a folder set up by ``make gpu-sim GPU_SIM_DIR=DIR``;
2. ``VK_ICD_FILENAMES`` — a Vulkan driver you manage (the system's loader is used);
3. ``.cache/gpu-sim`` in the repository this package sits in.

``LD_LIBRARY_PATH`` cannot change after a process starts, so `activate` points the loader at the
driver through ``VK_ICD_FILENAMES`` and preloads (``RTLD_GLOBAL``) the unpacked loader and the
unpacked libraries the driver links, dependencies first: later lookups by soname then find them.
Call it before LiteRT creates its GPU environment. Standard library only (no numpy, no torch).

Example::

    from edgesdk.runtime import gpu_sim
    d = gpu_sim.find()          # a Driver, or a str saying why there is none and how to fix it
    gpu_sim.activate(d)         # process-wide; idempotent
"""

from __future__ import annotations

import ctypes
import json
import os
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path

ENV_DIR = "EDGESDK_GPU_SIM"
REPO_DIR = Path(__file__).resolve().parents[1] / ".cache" / "gpu-sim"
RECORD = "gpu-sim.json"
SETUP = "scripts/gpu-sim.sh"


@dataclass(frozen=True)
class Driver:
    """A Vulkan driver for the GPU accelerator and how to load it."""

    source: str                  # "EDGESDK_GPU_SIM" | "VK_ICD_FILENAMES" | "repo cache"
    icd: str                     # ICD manifest(s) for VK_ICD_FILENAMES (':'-separated)
    name: str                    # "lavapipe" or the driver library's file name
    mesa: str | None = None      # Debian package version, e.g. "25.0.7-2~bpo12+1"
    folder: str | None = None    # the gpu-sim folder (None for a user-managed driver)
    preload: tuple = ()          # absolute paths, dependencies first
    packages: dict = field(default_factory=dict)

    @property
    def software(self) -> bool:
        return self.name == "lavapipe"

    @property
    def mesa_upstream(self) -> str | None:
        """'25.0.7' from '25.0.7-2~bpo12+1'."""
        return self.mesa.split(":")[-1].split("-")[0] if self.mesa else None

    @property
    def runs_label(self) -> str:
        return "software GPU (lavapipe)" if self.software else f"Vulkan GPU ({self.name})"

    @property
    def description(self) -> str:
        if self.software:
            return f"software GPU (lavapipe, Mesa {self.mesa_upstream or 'version unknown'})"
        return f"Vulkan GPU via {self.name}"

    def fix(self) -> str:
        return fix_hint(self.folder)


def fix_hint(folder: str | None = None) -> str:
    """The command that sets the driver up (for a folder given by EDGESDK_GPU_SIM, that folder)."""
    default = folder is None or Path(folder).resolve() == REPO_DIR.resolve()
    cmd = "make gpu-sim" if default else f"make gpu-sim GPU_SIM_DIR={folder}"
    return (f"run `{cmd}` in the Edge SDK repository (downloads Mesa >= 25 lavapipe, Debian "
            f"bookworm-backports mesa-vulkan-drivers, into {'.cache/gpu-sim' if default else folder}; "
            "no root needed)")


# ---------------------------------------------------------------- discovery

def find() -> Driver | str:
    """The driver to use, or a one-line reason (with the fix) why there is none."""
    d = os.environ.get(ENV_DIR)
    if d:
        return _from_folder(Path(d), ENV_DIR)
    icd = os.environ.get("VK_ICD_FILENAMES") or os.environ.get("VK_DRIVER_FILES")
    if icd:
        return _from_icd(icd)
    return _from_folder(REPO_DIR, "repo cache")


def _from_folder(folder: Path, source: str) -> Driver | str:
    rec_path = folder / RECORD
    if not rec_path.is_file():
        where = (f"{ENV_DIR}={folder} has no {RECORD}" if source == ENV_DIR else
                 f"VK_ICD_FILENAMES is not set and {folder} has no {RECORD}")
        return f"no software GPU driver (Mesa >= 25 lavapipe): {where}; fix: {fix_hint(str(folder))}"
    try:
        rec = json.loads(rec_path.read_text())
        icd, lib, loader = Path(rec["icd"]), Path(rec["driver_library"]), Path(rec["loader"])
        libdirs = [Path(p) for p in rec.get("libdirs") or [rec["libdir"]]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"{rec_path} is unreadable ({e}); fix: rm -rf {folder} and {fix_hint(str(folder))}"
    missing = [str(p) for p in (icd, lib, loader) if not p.is_file()]
    if missing:
        return (f"the software GPU in {folder} is incomplete or was moved (missing {', '.join(missing)}); "
                f"fix: rm -rf {folder} and {fix_hint(str(folder))}")
    mesa = rec.get("mesa")
    if mesa and _major(mesa) < 25:
        return (f"{folder} holds Mesa {mesa}; LiteRT's WebGPU accelerator needs Mesa >= 25 "
                f"(older lavapipe: \"No adapters found\"); fix: rm -rf {folder} and {fix_hint(str(folder))}")
    return Driver(source, str(icd), "lavapipe", mesa, str(folder),
                  tuple(load_order([loader, lib], libdirs, include_roots=False) + [str(loader)]),
                  dict(rec.get("packages", {})))


def _from_icd(icd: str) -> Driver | str:
    folder = Path(icd).parent
    if ":" not in icd and (folder / RECORD).is_file():  # a gpu-sim folder (env.sh, or a parent process)
        return _from_folder(folder, "VK_ICD_FILENAMES")
    libs = []
    for f in filter(None, icd.split(":")):
        try:
            libs.append(_icd_library(Path(f), json.loads(Path(f).read_text())["ICD"]["library_path"]))
        except (OSError, ValueError, KeyError, TypeError) as e:
            return (f"VK_ICD_FILENAMES names {f}, which is not a readable Vulkan ICD manifest ({e}); "
                    f"fix: unset it, or {fix_hint()}")
    lvp = [p for p in libs if p.name.startswith("libvulkan_lvp")]
    if not lvp:
        return Driver("VK_ICD_FILENAMES", icd, ", ".join(p.name for p in libs) or "unknown driver")
    mesa = _mesa_version(lvp[0])
    if mesa and _major(mesa) < 25:
        return (f"VK_ICD_FILENAMES={icd} selects Mesa {mesa}'s lavapipe; LiteRT's WebGPU accelerator (Dawn) "
                f"needs Mesa >= 25 (older lavapipe: \"No adapters found\"); fix: unset VK_ICD_FILENAMES and "
                f"{fix_hint()}")
    return Driver("VK_ICD_FILENAMES", icd, "lavapipe", mesa)


def _icd_library(manifest: Path, lib: str) -> Path:
    """Where the loader will find an ICD's library (absolute, beside the manifest, or a system dir)."""
    p = Path(lib)
    if p.is_absolute():
        return p
    if "/" in lib:
        return manifest.parent / p
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if (Path(d) / p).is_file():
            return Path(d) / p
    return p


def _mesa_version(lib: Path) -> str | None:
    """'25.0.7-2~bpo12+1' from the "Mesa X.Y.Z..." string every Mesa driver carries."""
    import mmap
    import re
    try:
        with open(lib, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            hit = re.search(rb"Mesa (\d+\.\d+\.\d+[^\s()\x00]*)", m)
            return hit.group(1).decode("ascii", "replace") if hit else None
    except (OSError, ValueError):
        return None


def _major(version: str) -> int:
    try:
        return int(version.split(":")[-1].split(".")[0])
    except ValueError:
        return 0


# ---------------------------------------------------------------- activation

_lock = threading.Lock()
_active: Driver | None = None
_loaded: list = []  # keep the CDLL handles alive


def activate(driver: Driver) -> str | None:
    """Point the Vulkan loader at the driver and preload what it needs; None, or why it failed."""
    global _active
    with _lock:
        if _active is not None:
            if _active.icd != driver.icd:
                return (f"this process already uses the Vulkan driver {_active.icd}; "
                        f"{driver.icd} needs a new process")
            return None
        if driver.folder is not None:  # our driver: the loader must not pick another one
            os.environ["VK_ICD_FILENAMES"] = driver.icd
            os.environ["VK_DRIVER_FILES"] = driver.icd
        for path in driver.preload:
            try:
                _loaded.append(ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL))
            except OSError as e:
                return f"cannot load {path}: {e}; fix: rm -rf {driver.folder} and {driver.fix()}"
        _active = driver
        return None


def active() -> Driver | None:
    return _active


def load_order(roots, libdirs, include_roots: bool = True) -> list[str]:
    """Libraries in ``libdirs`` that ``roots`` need (transitively), dependencies first."""
    libdirs = [Path(d) for d in ([libdirs] if isinstance(libdirs, (str, Path)) else libdirs)]
    order: list[str] = []
    seen: set[str] = set()

    def visit(path: Path):
        if str(path) in seen:
            return
        seen.add(str(path))
        for name in elf_needed(path):
            dep = next((d / name for d in libdirs if (d / name).is_file()), None)
            if dep is not None:
                visit(dep)
        order.append(str(path))

    for r in roots:
        visit(Path(r))
    roots_s = {str(Path(r)) for r in roots}
    return order if include_roots else [p for p in order if p not in roots_s]


def elf_needed(path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF shared object ([] if it is not one)."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
            if len(head) < 64 or head[:4] != b"\x7fELF" or head[4] != 2 or head[5] != 1:
                return []
            phoff, = struct.unpack_from("<Q", head, 0x20)
            phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
            f.seek(phoff)
            phdrs = f.read(phentsize * phnum)
            loads, dyn = [], None
            for i in range(phnum):
                p_type, _, p_off, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", phdrs, i * phentsize)
                if p_type == 1:
                    loads.append((p_vaddr, p_off, p_filesz))
                elif p_type == 2:
                    dyn = (p_off, p_filesz)
            if dyn is None:
                return []
            f.seek(dyn[0])
            raw = f.read(dyn[1])
            needed, strtab = [], None
            for i in range(0, len(raw) - 15, 16):
                tag, val = struct.unpack_from("<qQ", raw, i)
                if tag == 0:
                    break
                if tag == 1:
                    needed.append(val)
                elif tag == 5:
                    strtab = val
            if strtab is None:
                return []
            base = next((off + strtab - va for va, off, sz in loads if va <= strtab < va + sz), None)
            if base is None:
                return []
            out = []
            for off in needed:
                f.seek(base + off)
                out.append(f.read(256).split(b"\0", 1)[0].decode("utf-8", "replace"))
            return out
    except (OSError, struct.error):
        return []
