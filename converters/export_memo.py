"""Exports that several conversions of one run share, made once.

Four conversions of a model write the same fp32 `.tflite`: `litert-cpu` fp32, `litert-cpu`'s
quantized schemes (they quantize that file), and `litert-gpu` fp32 and fp16 (the GPU runs the
CPU twin's file). Likewise three write the same fp32 ONNX program: `onnx-cpu` fp32, its quantized
schemes and `qnn-htp` (each quantizes or compiles that file; single-file exports only: a model
whose weights go to external data exports in each conversion). Inside `shared_exports(folder)` the first of them exports and leaves a copy in
``folder``; the others copy it (a few ms instead of seconds to minutes for a generation model).
Processes share the folder: a file lock per export makes a second process wait for the first
one's result rather than export the same thing at the same time.

The key is a fingerprint of everything the export reads: each program's name, module class,
weights and buffers, example inputs, input/output names, dynamic dims and PyTorch reference
outputs, plus the export kind and the tool's version. The folder belongs to one run (the
pipeline makes it in its scratch space and removes it), so code changes between runs never
meet an old entry. Without `shared_exports` every conversion exports on its own.

Example::

    from edgesdk.converters.export_memo import shared_exports
    with shared_exports("/tmp/run/exports"):
        a = edgesdk.convert(model, x, "litert-cpu")                      # exports
        b = edgesdk.convert(model, x, "litert-gpu", quantize="fp16")     # copies the same .tflite
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

_FOLDER: Path | None = None


@contextlib.contextmanager
def shared_exports(folder):
    """Share exports through ``folder`` (None: off) for the conversions inside the block."""
    global _FOLDER
    before = _FOLDER
    _FOLDER = Path(folder) if folder is not None else None
    try:
        yield
    finally:
        _FOLDER = before


def _tensor_bytes(h, t) -> None:
    import torch
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def fingerprint(kind: str, programs: dict) -> str:
    """sha256 of what an export of ``programs`` (name -> `Program`) reads."""
    import torch
    h = hashlib.sha256(kind.encode())
    for name, prog in programs.items():
        mod = prog.module
        h.update(f"|{name}|{type(mod).__module__}.{type(mod).__qualname__}|{prog.input_names}|"
                 f"{prog.output_names}|{prog.dynamic!r}".encode())
        for k, v in mod.state_dict(keep_vars=False).items():
            h.update(k.encode())
            _tensor_bytes(h, v)
        for k, v in mod.named_buffers():  # non-persistent buffers too (masks, rotary tables)
            h.update(k.encode())
            _tensor_bytes(h, v)
        for t in list(prog.example_inputs) + list(prog.reference):
            if isinstance(t, torch.Tensor):
                _tensor_bytes(h, t)
            else:
                h.update(repr(t).encode())
    return h.hexdigest()


def reuse(kind: str, version: str, programs: dict, path: Path | None, export: Callable[[], dict],
          keep: Callable[[dict], bool] = lambda facts: True) -> dict:
    """``export()`` writes ``path`` and returns JSON-able facts; inside `shared_exports` the
    first call per fingerprint runs it and keeps a copy, later ones copy ``path`` back instead.
    ``keep(facts)`` False: this export is not kept (e.g. it wrote files beside ``path``), so the
    next call exports again. ``path`` None: ``export()`` only computes facts (`remembered`)."""
    if _FOLDER is None:
        return export()
    import fcntl
    _FOLDER.mkdir(parents=True, exist_ok=True)
    key = fingerprint(f"{kind}|{version}", programs)[:32]
    entry = _FOLDER / key
    with open(_FOLDER / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes (also if this process dies)
        done = entry / "facts.json"
        if done.is_file():
            if path is not None:
                shutil.copyfile(entry / "payload", path)
            return json.loads(done.read_text())["facts"]
        facts = export()
        if not keep(facts):
            return facts
        tmp = _FOLDER / f".{key}.{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if path is not None:
            shutil.copyfile(path, tmp / "payload")
        (tmp / "facts.json").write_text(json.dumps({"kind": kind, "facts": facts}))
        shutil.rmtree(entry, ignore_errors=True)
        os.rename(tmp, entry)  # whole or absent
        return facts


def remembered(kind: str, version: str, programs: dict, compute: Callable[[], dict]) -> dict:
    """JSON-able facts that every conversion of ``programs`` computes alike (their FLOPs, from a
    torch.export and a core-ATen decomposition: ~4 s for the Mamba student): inside
    `shared_exports` the first conversion computes them, the others read them."""
    return reuse(kind, version, programs, None, compute)
