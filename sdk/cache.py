"""The content-addressed cache behind `edgesdk.pipeline`: trained modules and converted artifacts.

Both kinds live under one root (``output.cache``, default ``.cache/edgesdk``)::

    <root>/<family>/<entry>-<key[:20]>/             weights.safetensors + meta.json (training)
    <root>/artifacts/<target>/<key[:24]>/<name>/    an artifact directory (conversion)

A key is the sha256 of everything that goes into the result (`key_of`); an entry is built in a
hidden temporary folder and renamed into place (`publish`), so a reader sees a complete entry
or none, and two writers of the same key (two processes, two hosts on a shared folder) leave
one. Only safetensors and artifact payloads are read back, never pickle; an artifact is used
only after its payload hashes match its manifest.

Example::

    from edgesdk.cache import ArtifactCache, TrainingCache, fingerprint
    cache = TrainingCache(".cache/edgesdk", "mlp", {"spec": {...}, "code": "..."})
    student = cache.module("student", build=make_untrained, train=train_it)
    arts = ArtifactCache(".cache/edgesdk")
    hit = arts.get("onnx-cpu", key, "my-model")       # an Artifact, or None
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = ".cache/edgesdk"


def fingerprint(obj) -> str:
    """A content hash of a module (its state dict), tensor, array, mapping/sequence, or repr."""
    h = hashlib.sha256()

    def feed(o):
        if isinstance(o, nn.Module):
            h.update(type(o).__qualname__.encode())
            for k, v in sorted(o.state_dict().items()):
                h.update(k.encode())
                feed(v)
        elif isinstance(o, torch.Tensor):
            a = o.detach().cpu().contiguous()
            h.update(f"{a.dtype}{tuple(a.shape)}".encode())
            h.update(a.view(torch.uint8).numpy().tobytes() if a.numel() else b"")
        elif isinstance(o, np.ndarray):
            h.update(f"{o.dtype.str}{o.shape}".encode())
            h.update(np.ascontiguousarray(o).tobytes())
        elif isinstance(o, dict):
            for k in sorted(o, key=str):
                h.update(str(k).encode())
                feed(o[k])
        elif isinstance(o, (list, tuple)):
            for v in o:
                feed(v)
        elif hasattr(o, "tensors") and isinstance(o.tensors, dict):  # TensorData-like
            feed(o.tensors)
        else:
            h.update(repr(o).encode())
    feed(obj)
    return h.hexdigest()


def code_version(sources) -> str:
    """sha256 over the given source files (paths relative to the repository root)."""
    h = hashlib.sha256()
    for rel in sorted(sources):
        p = ROOT / rel
        h.update(rel.encode())
        h.update(p.read_bytes() if p.is_file() else b"<missing>")
    return h.hexdigest()


def key_of(parts: dict) -> str:
    """The content address of a result: sha256 of its inputs as canonical JSON."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def publish(fill: Callable[[Path], None], final: Path) -> Path:
    """Build an entry with ``fill(tmp_dir)`` in a hidden sibling folder, then rename it to
    ``final`` (replacing an older entry). A failed ``fill`` leaves nothing behind."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        fill(tmp)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def copy_artifact(src: Path, dest: Path) -> Path:
    """Copy an artifact directory to ``dest`` atomically (a reader never sees half of it)."""
    return publish(lambda tmp: shutil.copytree(src, tmp), dest)


class TrainingCache:
    """Content-addressed store of trained modules: ``<root>/<family>/<entry>-<key>/``
    holding ``weights.safetensors`` and ``meta.json`` (written last: its presence marks a
    complete entry). Writes go to a hidden temporary folder renamed into place; only
    safetensors (never pickle) is read back. ``enabled=False`` trains every time."""

    def __init__(self, root, family: str, key_parts: dict, enabled: bool = True, log=None):
        self.root = Path(root) / family
        self.family, self.key_parts, self.enabled = family, key_parts, enabled
        self.hits: list[str] = []
        self.misses: list[str] = []
        self._log = log or (lambda s: None)

    def key(self, name: str) -> str:
        return key_of({"entry": name, **self.key_parts})

    def path(self, name: str) -> Path:
        return self.root / f"{name}-{self.key(name)[:20]}"

    def module(self, name: str, build: Callable[[], nn.Module], train: Callable[[], nn.Module]) -> nn.Module:
        from safetensors.torch import load_model, save_model
        d = self.path(name)
        if self.enabled and (d / "meta.json").is_file():
            try:
                meta = json.loads((d / "meta.json").read_text())
                m = build()
                load_model(m, str(d / "weights.safetensors"), strict=True)
                for k, v in meta.get("attrs", {}).items():
                    setattr(m, k, v)
                m.eval()
                self.hits.append(name)
                self._log(f"{self.family}/{name}: cached ({d})")
                return m
            except Exception as e:  # a corrupt or stale entry: retrain and replace it
                self._log(f"{self.family}/{name}: cache entry unusable ({type(e).__name__}: {e}); retraining")
        t0 = time.perf_counter()
        m = train()
        m.eval()
        seconds = time.perf_counter() - t0
        self.misses.append(name)
        if self.enabled:
            def fill(tmp: Path) -> None:
                tmp.mkdir()
                save_model(m, str(tmp / "weights.safetensors"))
                attrs = {k: v for k, v in (("log", getattr(m, "log", None)),) if _jsonable(v)}
                (tmp / "meta.json").write_text(json.dumps(
                    {"family": self.family, "entry": name, "key": self.key(name), "train_s": round(seconds, 3),
                     "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "key_parts": self.key_parts, "attrs": attrs}, indent=2, default=str))
            try:
                publish(fill, d)
            except OSError:
                if not (d / "meta.json").is_file():
                    raise
        return m


class ArtifactCache:
    """Content-addressed store of converted artifacts: ``<root>/artifacts/<target>/<key[:24]>/<name>/``.
    An entry is handed out only when its payload files match its manifest's sizes and sha256s."""

    def __init__(self, root):
        self.root = Path(root) / "artifacts"

    def path(self, target: str, key: str, name: str) -> Path:
        return self.root / target / key[:24] / name

    def get(self, target: str, key: str, name: str):
        """The cached `converters.Artifact`, or None (absent). Raises OSError/ValueError/
        IntegrityError when an entry exists but is unusable (the caller converts again)."""
        from edgesdk.converters import Artifact
        from edgesdk.runtime.manifest import verify_payload
        d = self.path(target, key, name)
        if not (d / "manifest.json").is_file():
            return None
        art = Artifact.open(d)
        verify_payload(d, art.manifest)
        return art

    def put(self, target: str, key: str, name: str, src: Path) -> Path | None:
        """Copy the artifact at ``src`` into the cache (None when the disk refuses: the cache is an
        optimisation, a read-only or full disk must not fail the run)."""
        try:
            return copy_artifact(Path(src), self.path(target, key, name))
        except OSError:
            return None


def _jsonable(v) -> bool:
    if v is None:
        return False
    try:
        json.dumps(v)
        return True
    except (TypeError, ValueError):
        return False
