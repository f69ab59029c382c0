"""Artifact manifest: parsing, validation and payload integrity.

An artifact is a directory::

    my-model/
      manifest.json      # this schema
      model.onnx         # payload file(s), listed under "files" with size and sha256

The manifest is untrusted input: every field is type-checked, payload paths must stay
inside the artifact directory, and sizes/hashes are checked before a native library
reads a byte of the payload.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgesdk.runtime.errors import IntegrityError
from edgesdk.runtime.plugins import load_plugins

SCHEMA = "edgesdk.manifest/1"
MANIFEST_NAME = "manifest.json"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MAX_RANK = 8
MAX_ELEMENTS = 1 << 34  # a declared tensor above 16 G elements is absurd for an edge model

# dtypes a spec may name (numpy spelling); bool masks, int token ids, float activations.
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")

FORMATS = {".onnx": "onnx", ".pte": "pte", ".tflite": "tflite", ".mlpackage": "mlpackage"}


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one input or output.

    ``shape`` holds ints for static dimensions and strings for symbolic ones
    (e.g. ``("batch", 16)``). ``value_range`` (ints only) records the range seen in the
    example inputs, so that generated inputs stay valid (token ids inside the vocabulary).
    """

    name: str
    shape: tuple
    dtype: str
    value_range: tuple | None = None

    @property
    def np_dtype(self) -> np.dtype:
        return np.dtype(self.dtype)

    def to_dict(self) -> dict:
        d = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.value_range is not None:
            d["value_range"] = list(self.value_range)
        return d

    @classmethod
    def from_dict(cls, d, where: str) -> "TensorSpec":
        if not isinstance(d, dict):
            raise IntegrityError(f"{where}: expected an object, got {type(d).__name__}")
        name = d.get("name")
        if not isinstance(name, str) or not name or len(name) > 256:
            raise IntegrityError(f"{where}.name: expected a non-empty string, got {name!r}")
        dtype = d.get("dtype")
        if dtype not in DTYPES:
            raise IntegrityError(f"{where}.dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
        shape = d.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_RANK:
            raise IntegrityError(f"{where}.shape: expected a list of at most {MAX_RANK} dims, got {shape!r}")
        elements = 1
        for dim in shape:
            if isinstance(dim, bool) or not isinstance(dim, (int, str)):
                raise IntegrityError(f"{where}.shape: dim {dim!r} is neither an int nor a symbol")
            if isinstance(dim, int):
                if dim < 0:
                    raise IntegrityError(f"{where}.shape: negative dim {dim}")
                elements *= dim
        if elements > MAX_ELEMENTS:
            raise IntegrityError(f"{where}.shape: {shape} declares {elements} elements (limit {MAX_ELEMENTS})")
        vr = d.get("value_range")
        if vr is not None:
            if (not isinstance(vr, list) or len(vr) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vr)
                    or vr[0] > vr[1]):
                raise IntegrityError(f"{where}.value_range: expected [min, max], got {vr!r}")
            vr = tuple(vr)
        return cls(name=name, shape=tuple(shape), dtype=dtype, value_range=vr)


@dataclass(frozen=True)
class ProgramSpec:
    """One entry point of an artifact (``forward``, or ``encode``/``decode_step``...).

    ``dims`` (dynamic shapes) maps each symbol used in the input shapes to its range,
    ``{"batch": {"min": 1, "max": 32, "example": 2}}``; ``structure`` is the model's output
    skeleton (output names inside nested lists / dicts) that `Session.run(structured=True)` rebuilds.
    """

    name: str
    file: str
    method: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: dict | None = None
    structure: object = None

    def to_dict(self) -> dict:
        d = {
            "file": self.file,
            "method": self.method,
            "inputs": [s.to_dict() for s in self.inputs],
            "outputs": [s.to_dict() for s in self.outputs],
        }
        if self.dims:
            d["dims"] = self.dims
        if self.structure is not None:
            d["structure"] = self.structure
        return d

    def example_dims(self) -> dict[str, int]:
        """Each symbol's size in the example inputs (what profiling and generated inputs use)."""
        return {s: r["example"] for s, r in (self.dims or {}).items()}


MAX_STRUCTURE_NODES = 4096


def _parse_dims(d, inputs, where: str) -> dict | None:
    """Ranges of the symbolic dims; every symbol in the input shapes needs one (when any is given)."""
    if d is None:
        return None
    if not isinstance(d, dict) or len(d) > 64:
        raise IntegrityError(f"{where}: expected an object of at most 64 symbols")
    out = {}
    for sym, r in d.items():
        vals = [r.get(k) for k in ("min", "max", "example")] if isinstance(r, dict) else None
        if (not vals or not all(isinstance(v, int) and not isinstance(v, bool) for v in vals)
                or not 0 <= vals[0] <= vals[2] <= vals[1] or vals[1] > (1 << 31)):
            raise IntegrityError(f"{where}[{sym!r}]: expected {{min, max, example}} ints with "
                                 f"0 <= min <= example <= max, got {r!r}")
        out[sym] = {"min": vals[0], "max": vals[1], "example": vals[2]}
    used = {dim for s in inputs for dim in s.shape if isinstance(dim, str)}
    if used - set(out):
        raise IntegrityError(f"{where}: no range for the input dims {sorted(used - set(out))}")
    return out


def _parse_structure(st, outputs, where: str):
    """Output skeleton: strings (output names, each once) inside lists and objects."""
    names = {s.name for s in outputs}
    seen: list[str] = []
    count = 0

    def walk(o, depth):
        nonlocal count
        count += 1
        if depth > 32 or count > MAX_STRUCTURE_NODES:
            raise IntegrityError(f"{where}: too deep or too large")
        if isinstance(o, str):
            if o not in names:
                raise IntegrityError(f"{where}: {o!r} is not an output of this program")
            seen.append(o)
        elif isinstance(o, list):
            for x in o:
                walk(x, depth + 1)
        elif isinstance(o, dict):
            for x in o.values():
                walk(x, depth + 1)
        else:
            raise IntegrityError(f"{where}: unexpected {type(o).__name__} in the output structure")
    walk(st, 0)
    if sorted(seen) != sorted(names):
        raise IntegrityError(f"{where}: must name every output exactly once")
    return st


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    sha256: str


@dataclass
class Manifest:
    name: str
    target: str
    format: str
    programs: dict[str, ProgramSpec]
    files: list[FileEntry]
    device: str = "cpu"
    quantization: dict = field(default_factory=lambda: {"scheme": "fp32"})
    versions: dict = field(default_factory=dict)
    created_at: str = ""
    verification: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)
    schema: str = SCHEMA
    # the runtime backend that opens it (`runtime.backends`); "" in manifests written before the field
    backend: str = ""
    # where the compute runs, normalized over targets (`converters.placement`): kind, fraction on the
    # accelerator, node counts, the nodes that fell back with why; None for plain-CPU targets and for
    # manifests written before the field
    placement: dict | None = None
    raw: dict | None = field(default=None, repr=False, compare=False)

    @property
    def default_program(self) -> ProgramSpec:
        if "forward" in self.programs:
            return self.programs["forward"]
        return next(iter(self.programs.values()))

    def to_dict(self) -> dict:
        d = {
            "schema": self.schema,
            "name": self.name,
            "target": self.target,
            **({"backend": self.backend} if self.backend else {}),
            "device": self.device,
            "format": self.format,
            "quantization": self.quantization,
            "programs": {k: p.to_dict() for k, p in self.programs.items()},
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in self.files],
            "versions": self.versions,
            "created_at": self.created_at,
            "verification": self.verification,
            **({"placement": self.placement} if self.placement is not None else {}),
        }
        d.update(self.extra)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n"


def _safe_relpath(p, where: str) -> str:
    """A payload path must be a plain relative path inside the artifact directory."""
    if not isinstance(p, str) or not p or len(p) > 512 or "\x00" in p or "\\" in p:
        raise IntegrityError(f"{where}: invalid payload path {p!r}")
    parts = Path(p).parts
    if Path(p).is_absolute() or any(part in ("..", "") for part in parts) or p.startswith("/"):
        raise IntegrityError(f"{where}: payload path {p!r} escapes the artifact directory")
    return p


_KNOWN = {"schema", "name", "target", "device", "format", "quantization", "programs",
          "files", "versions", "created_at", "verification", "backend", "placement"}


def parse_manifest(text: str | bytes) -> Manifest:
    """Parse and validate manifest JSON. Raises IntegrityError on anything malformed."""
    if len(text) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"manifest is {len(text)} bytes (limit {MAX_MANIFEST_BYTES})")
    try:
        d = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise IntegrityError(f"manifest is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise IntegrityError("manifest: top level must be an object")
    if d.get("schema") != SCHEMA:
        raise IntegrityError(f"manifest schema {d.get('schema')!r} is not supported (expected {SCHEMA!r})")
    for key in ("name", "target", "format"):
        if not isinstance(d.get(key), str) or not d.get(key):
            raise IntegrityError(f"manifest.{key}: expected a non-empty string, got {d.get(key)!r}")
    if d["format"] not in FORMATS.values():
        load_plugins("backends")  # a plug-in backend may register it
    if d["format"] not in FORMATS.values():
        raise IntegrityError(f"manifest.format {d['format']!r} is not one of {sorted(set(FORMATS.values()))}")
    files_raw = d.get("files")
    if not isinstance(files_raw, list) or not files_raw or len(files_raw) > 64:
        raise IntegrityError("manifest.files: expected a list of 1..64 payload entries")
    files = []
    for i, f in enumerate(files_raw):
        where = f"manifest.files[{i}]"
        if not isinstance(f, dict):
            raise IntegrityError(f"{where}: expected an object")
        path = _safe_relpath(f.get("path"), where)
        size, sha = f.get("size"), f.get("sha256")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or size > (1 << 40):
            raise IntegrityError(f"{where}.size: invalid size {size!r}")
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise IntegrityError(f"{where}.sha256: expected 64 lowercase hex digits")
        files.append(FileEntry(path, size, sha))
    listed = {f.path for f in files}
    progs_raw = d.get("programs")
    if not isinstance(progs_raw, dict) or not progs_raw or len(progs_raw) > 32:
        raise IntegrityError("manifest.programs: expected an object with 1..32 programs")
    programs = {}
    for pname, p in progs_raw.items():
        where = f"manifest.programs[{pname!r}]"
        if not isinstance(p, dict):
            raise IntegrityError(f"{where}: expected an object")
        file = _safe_relpath(p.get("file"), where + ".file")
        if file not in listed:
            raise IntegrityError(f"{where}.file {file!r} is not listed in manifest.files")
        method = p.get("method", pname)
        if not isinstance(method, str) or not method:
            raise IntegrityError(f"{where}.method: expected a string")
        specs = []
        for kind in ("inputs", "outputs"):
            lst = p.get(kind)
            if not isinstance(lst, list) or len(lst) > 256:
                raise IntegrityError(f"{where}.{kind}: expected a list")
            specs.append(tuple(TensorSpec.from_dict(s, f"{where}.{kind}[{j}]") for j, s in enumerate(lst)))
        names = [s.name for s in specs[0]]
        if len(set(names)) != len(names):
            raise IntegrityError(f"{where}.inputs: duplicate input names {names}")
        dims = _parse_dims(p.get("dims"), specs[0], where + ".dims")
        structure = p.get("structure")
        if structure is not None:
            structure = _parse_structure(structure, specs[1], where + ".structure")
        programs[pname] = ProgramSpec(pname, file, method, specs[0], specs[1], dims, structure)
    for key in ("quantization", "versions", "verification"):
        if key in d and not isinstance(d[key], dict):
            raise IntegrityError(f"manifest.{key}: expected an object")
    if "backend" in d and (not isinstance(d["backend"], str) or not d["backend"]):
        raise IntegrityError(f"manifest.backend: expected a non-empty string, got {d['backend']!r}")
    place = d.get("placement")
    if place is not None and not (isinstance(place, dict) and isinstance(place.get("kind"), str)
                                  and isinstance(place.get("fallback", []), list)):
        raise IntegrityError(f"manifest.placement: expected an object with a 'kind' string and a 'fallback' list, "
                             f"got {str(place)[:120]!r}")
    m = Manifest(
        name=d["name"], target=d["target"], format=d["format"], programs=programs, files=files,
        device=str(d.get("device", "cpu")), quantization=d.get("quantization", {"scheme": "fp32"}),
        versions=d.get("versions", {}), created_at=str(d.get("created_at", "")),
        verification=d.get("verification", {}), backend=d.get("backend", ""),
        placement=place, extra={k: v for k, v in d.items() if k not in _KNOWN},
    )
    m.raw = d  # the parsed JSON, for signature checks over exactly what was read
    return m


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entry(root: Path, rel: str) -> FileEntry:
    p = root / rel
    return FileEntry(rel, p.stat().st_size, sha256_file(p))


def verify_payload(root: Path, manifest: Manifest) -> None:
    """Check every payload file's size and sha256 against the manifest.

    Runs before any backend opens a payload; raises IntegrityError naming the file,
    the expected and the actual value.
    """
    root_real = root.resolve()
    for f in manifest.files:
        p = root / f.path
        real = p.resolve()
        if root_real not in real.parents:
            raise IntegrityError(f"{p}: resolves outside the artifact directory {root_real}")
        if not p.is_file():
            raise IntegrityError(f"{p}: payload file listed in the manifest is missing")
        size = p.stat().st_size
        if size != f.size:
            raise IntegrityError(
                f"{p}: size {size} bytes, manifest says {f.size} (truncated or replaced file)")
        actual = sha256_file(p)
        if actual != f.sha256:
            raise IntegrityError(f"{p}: sha256 {actual} differs from the manifest's {f.sha256}")


def natural_order(names) -> list[str]:
    """Names sorted with their numbers compared as numbers (``args_2`` before ``args_10``): the
    order of a LiteRT signature's inputs and outputs, which it lists as strings."""
    return sorted(names, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])
