"""`Artifact`: the directory every conversion hands back, written atomically.

Layout: ``<out_dir>/<name>/{manifest.json, payload files}``. The directory is built under
a hidden ``.<name>.partial-*`` sibling, fsynced, verified, and only then renamed into place
(an atomic exchange when replacing an earlier artifact), so an interrupted conversion leaves
either the previous complete artifact or none - never a half one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.runtime.manifest import MANIFEST_NAME, Manifest, parse_manifest

PARTIAL = ".partial-"


@dataclass
class Artifact:
    """A verified conversion result. ``path`` is the artifact directory."""

    path: Path
    manifest: Manifest
    log: str = field(default="", repr=False)

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def files(self) -> list[Path]:
        return [self.path / f.path for f in self.manifest.files]

    @property
    def size_bytes(self) -> int:
        return sum(f.size for f in self.manifest.files)

    @property
    def verification(self) -> dict:
        return self.manifest.verification

    @property
    def outside_delegate(self) -> dict[str, list[dict]]:
        """Per program, the compute ops a delegated backend left on its reference kernels
        ([{op, count, share of nodes}], from the partition report): why a delegated artifact is slow."""
        part = self.manifest.extra.get("partition") or {}
        return {p: r.get("outside_delegate", []) for p, r in part.items()
                if isinstance(r, dict) and r.get("outside_delegate")}

    def summary(self) -> list[str]:
        """Notes a user should see after converting: ops outside the delegate, exporter fallbacks."""
        lines = []
        for prog, rows in self.outside_delegate.items():
            part = self.manifest.extra["partition"][prog]
            ops = ", ".join(f"{_op(r['op'])} x{r['count']} "
                            f"({r['share'] * 100:.0f}%)" for r in rows[:6])
            lines.append(f"{prog}: {len(rows)} op type(s) outside the delegate ({(1 - part['delegated_fraction']) * 100:.0f}% "
                         f"of nodes, portable kernels): {ops}" + (" ..." if len(rows) > 6 else "")
                         + "; `edgesdk profile` times them")
        for f in self.manifest.extra.get("exporter_fallback", []):
            lines.append(f"exporter {f['exporter']!r} did not work ({f['error'][:160]}); the artifact comes from "
                         "the next exporter")
        return lines

    @classmethod
    def open(cls, path) -> "Artifact":
        p = Path(path)
        return cls(p, parse_manifest((p / MANIFEST_NAME).read_bytes()))


def _op(name: str) -> str:
    """'aten_cumsum_default' -> 'cumsum'."""
    for pre in ("aten_", "aten."):
        name = name.removeprefix(pre)
    for suf in ("_default", ".default"):
        name = name.removesuffix(suf)
    return name


def fsync_path(p: Path) -> None:
    fd = os.open(p, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_manifest(workdir: Path, manifest: Manifest) -> None:
    tmp = workdir / (MANIFEST_NAME + ".tmp")
    tmp.write_text(manifest.to_json())
    fsync_path(tmp)
    os.replace(tmp, workdir / MANIFEST_NAME)


def new_workdir(out_dir: Path, name: str) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    clean_stale_partials(out_dir, name)
    wd = out_dir / f".{name}{PARTIAL}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    wd.mkdir()
    return wd


def clean_stale_partials(out_dir: Path, name: str) -> None:
    """Remove work dirs left by conversions that were killed (their pid is gone)."""
    for p in out_dir.glob(f".{name}{PARTIAL}*"):
        try:
            pid = int(p.name.split(PARTIAL, 1)[1].split("-", 1)[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError):
            continue


_libc = None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    global _libc
    try:
        if _libc is None:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        AT_FDCWD, RENAME_EXCHANGE = -100, 2
        rc = _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
        return rc == 0
    except (OSError, AttributeError):
        return False


def publish(workdir: Path, final: Path) -> None:
    """Move a complete, verified work dir to its final path atomically."""
    for p in workdir.iterdir():
        fsync_path(p)
    fsync_path(workdir)
    if final.exists():
        if _exchange(workdir, final):
            shutil.rmtree(workdir, ignore_errors=True)  # now holds the previous artifact
        else:  # fallback: a short window where neither is at `final`
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.rename(final, old)
            os.rename(workdir, final)
            shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(workdir, final)
    fsync_path(final.parent)
