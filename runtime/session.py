"""`runtime.load(path) -> Session`: open an artifact, validate inputs, run it.

No torch import here. Backends live one per file (`ort.py`, `executorch.py`, `litert.py`,
`qnn.py`, `litert_gpu.py`, `coreml.py`, `vulkan.py`), are registered by name in `backends.py`
(the manifest's ``backend`` picks one) and are imported only when an artifact needs them.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from edgesdk.runtime.backends import backend_for
from edgesdk.runtime.plugins import load_plugins
from edgesdk.runtime.errors import ConfigError, InputError, IntegrityError
from edgesdk.runtime.generate import KEY as GENERATION_KEY, parse_spec as parse_generation
from edgesdk.runtime.manifest import (
    FORMATS, MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, ProgramSpec, TensorSpec,
    parse_manifest, verify_payload,
)

NAN_POLICIES = ("reject", "allow")


def backend_module(fmt: str, target: str | None = None, backend: str | None = None):
    """The runtime backend for an artifact (by the manifest's ``backend``, else its target, else
    its format: `runtime.backends`), or TargetUnavailableError saying how to get it."""
    return backend_for(fmt, target, backend)


def default_threads() -> int:
    """Intra-op threads used by every backend unless told otherwise: all usable cores."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Binding:
    """A program plus its input validation: the hot path of `Session.run`."""

    __slots__ = ("spec", "program", "nan_policy", "_checks", "_names", "_lock", "_symbols", "pool")

    def __init__(self, spec: ProgramSpec, program, nan_policy: str):
        self.spec = spec
        self.program = program
        self.nan_policy = nan_policy
        self._names = [s.name for s in spec.inputs]
        # (name, dtype, static shape with None for symbolic dims, check finiteness)
        self._checks = [
            (s.name, s.np_dtype, tuple(d if isinstance(d, int) else None for d in s.shape),
             s.np_dtype.kind == "f" and nan_policy == "reject")
            for s in spec.inputs
        ]
        self._lock = None if getattr(program, "thread_safe", False) else threading.Lock()
        self.pool: list = []  # bound copies of this program with their state buffers (runtime.state)
        # dynamic shapes: (input index, dim, symbol) of every symbolic dim that has a declared range
        ranges = spec.dims or {}
        self._symbols = [(i, d, sym) for i, s in enumerate(spec.inputs) for d, sym in enumerate(s.shape)
                         if isinstance(sym, str) and sym in ranges]

    def _expected(self) -> str:
        dims = self.spec.dims or {}
        ranges = "".join(f"; {sym} in {r['min']}..{r['max']}" for sym, r in dims.items())
        return ", ".join(f"{s.name}: {s.dtype}{list(s.shape)}" for s in self.spec.inputs) + ranges

    def validate(self, inputs) -> list:
        checks = self._checks
        if isinstance(inputs, dict):
            unknown = [k for k in inputs if k not in self._names]
            missing = [n for n in self._names if n not in inputs]
            if unknown or missing:
                raise InputError(
                    f"program {self.spec.name!r}: unknown inputs {unknown}, missing {missing}; "
                    f"expected {self._expected()}")
            inputs = [inputs[n] for n in self._names]
        elif isinstance(inputs, np.ndarray):
            inputs = [inputs]
        elif not isinstance(inputs, (list, tuple)):
            raise InputError(
                f"inputs must be a list of numpy arrays or a dict name -> array, got "
                f"{type(inputs).__name__}; expected {self._expected()}")
        if len(inputs) != len(checks):
            raise InputError(
                f"program {self.spec.name!r} takes {len(checks)} inputs, got {len(inputs)}; "
                f"expected {self._expected()}")
        out = []
        for a, (name, dtype, shape, finite) in zip(inputs, checks):
            if type(a) is not np.ndarray:
                if hasattr(a, "__array__") or isinstance(a, (list, tuple, int, float, bool)):
                    a = np.asarray(a)
                else:
                    raise InputError(f"input {name!r}: expected a numpy array, got {type(a).__name__}")
            if a.dtype != dtype:
                if a.dtype.newbyteorder("=") == dtype:  # wrong-endian copy of the right type
                    a = a.astype(dtype)
                else:
                    raise InputError(
                        f"input {name!r}: dtype {a.dtype}, expected {dtype} "
                        f"(cast with .astype(np.{dtype.name})); expected {self._expected()}")
            if a.ndim != len(shape) or any(d is not None and d != n for d, n in zip(shape, a.shape)):
                raise InputError(
                    f"input {name!r}: shape {list(a.shape)}, expected "
                    f"{[d if d is not None else '?' for d in shape]}; expected {self._expected()}")
            if finite and not np.isfinite(a).all():
                raise InputError(
                    f"input {name!r} contains NaN or Inf and nan_policy='reject'; "
                    f"clean the input or load with nan_policy='allow'")
            if not a.flags.c_contiguous:
                a = np.ascontiguousarray(a)
            out.append(a)
        if self._symbols:
            self._check_dims(out)
        return out

    def _check_dims(self, arrays) -> None:
        """Dynamic dims: inside the exported range, and one size per symbol across inputs."""
        sizes: dict[str, tuple[int, str]] = {}
        for i, d, sym in self._symbols:
            n, name = arrays[i].shape[d], self._names[i]
            r = self.spec.dims[sym]
            if not r["min"] <= n <= r["max"]:
                raise InputError(f"input {name!r}: dim {d} ({sym}) is {n}, outside the exported range "
                                 f"{r['min']}..{r['max']}; expected {self._expected()}")
            if sym in sizes and sizes[sym][0] != n:
                raise InputError(f"inputs {sizes[sym][1]!r} and {name!r} must agree on {sym}: "
                                 f"{sizes[sym][0]} vs {n}; expected {self._expected()}")
            sizes[sym] = (n, name)

    def run(self, inputs) -> list[np.ndarray]:
        arrays = self.validate(inputs)
        if self._lock is None:
            return self.program.run(arrays)
        with self._lock:
            return self.program.run(arrays)


def restructure(spec: ProgramSpec, outs: list):
    """Put a program's flat outputs back into the model's structure (a dict of names when the
    manifest records none)."""
    by_name = dict(zip([s.name for s in spec.outputs], outs))
    if spec.structure is None:
        return by_name

    def build(node):
        if isinstance(node, str):
            return by_name[node]
        if isinstance(node, list):
            return [build(x) for x in node]
        return {k: build(v) for k, v in node.items()}
    return build(spec.structure)


class Session:
    """A loaded artifact, ready to run.

    Example::

        import numpy as np
        from edgesdk import runtime
        sess = runtime.load("out/mlp-onnx-cpu")
        print(sess.inputs)                       # [TensorSpec(name='x', shape=(1, 64), ...)]
        (y,) = sess.run([np.zeros((1, 64), np.float32)])

    ``run`` accepts a list of arrays (positional) or a dict name -> array, validates them
    against the spec (count, names, shape, dtype, NaN policy) and returns a list of arrays.
    Sessions are safe to share between threads: backends that are not re-entrant are
    serialised by a per-program lock.
    """

    def __init__(self, path: Path, manifest: Manifest, backend, programs: dict[str, _Binding],
                 verified: bool, threads: int, load_ms: float = 0.0, generation=None):
        self.path = path
        self.generation = generation  # runtime.generate.GenerationSpec for generation artifacts
        self.manifest = manifest
        self.backend = backend
        self._programs = programs
        self.verified = verified
        self.threads = threads
        self.load_ms = load_ms
        self._default = programs["forward"] if "forward" in programs else next(iter(programs.values()))

    @property
    def target(self) -> str:
        return self.manifest.target

    @property
    def format(self) -> str:
        return self.manifest.format

    @property
    def backend_name(self) -> str:
        return self.backend.NAME

    @property
    def program_names(self) -> list[str]:
        return list(self._programs)

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._default.spec.inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._default.spec.outputs)

    def program(self, name: str) -> _Binding:
        try:
            return self._programs[name]
        except KeyError:
            raise ConfigError(f"no program {name!r}; this artifact has {', '.join(self._programs)}") from None

    def run(self, inputs, *, program: str | None = None, structured: bool = False):
        """Outputs as a list of arrays; with ``structured=True`` in the structure the PyTorch
        model returned (its dict / ``ModelOutput`` keys, nested tuples as lists)."""
        b = self._default if program is None else self.program(program)
        outs = b.run(inputs)
        return restructure(b.spec, outs) if structured else outs

    def generate(self, prompt, max_new_tokens: int = 32, *, strategy: str = "greedy", top_k: int = 40,
                 temperature: float = 1.0, seed: int | None = None, stop_at_eos: bool = True):
        """Generate tokens with the artifact's prefill and step programs (encoder-decoder,
        decoder with KV cache, recurrent): see :mod:`runtime.generate`.

        ``prompt`` is a sequence of token ids (or text for byte-tokenizer artifacts); returns a
        `Generation` with ``tokens``, ``ttft_ms``, ``step_ms``, ``tokens_per_s``, ``state_bytes``.
        ``strategy`` is ``"greedy"`` or ``"top_k"`` (``top_k``, ``temperature``, ``seed``).
        """
        from edgesdk.runtime.generate import generate
        return generate(self, prompt, max_new_tokens, strategy=strategy, top_k=top_k,
                        temperature=temperature, seed=seed, stop_at_eos=stop_at_eos)

    def score(self, prompt, continuation) -> dict:
        """Teacher-forced log-probabilities of ``continuation`` after ``prompt`` (generation
        artifacts): ``bits_per_token`` and next-token ``accuracy`` measured on the artifact."""
        from edgesdk.runtime.generate import score
        return score(self, prompt, continuation)

    def __repr__(self) -> str:
        return (f"Session({str(self.path)!r}, target={self.target!r}, backend={self.backend_name!r}, "
                f"programs={self.program_names}, verified={self.verified})")


def _read_manifest(path: Path) -> Manifest:
    try:
        size = path.stat().st_size
    except OSError as e:
        raise IntegrityError(f"cannot read {path}: {e.strerror}") from None
    if size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{path}: {size} bytes is too large for a manifest")
    return parse_manifest(path.read_bytes())


def resolve(path) -> tuple[Path, Manifest | None, Path | None]:
    """Return (artifact root, manifest or None, bare model file or None) for what a user passed."""
    load_plugins("backends")  # a plug-in backend may add the format this artifact uses
    p = Path(path)
    if not p.exists():
        raise ConfigError(
            f"{p}: no such file or directory; pass an artifact directory, its manifest.json "
            f"or a model file ({', '.join(FORMATS)})")
    if p.is_dir() and p.suffix != ".mlpackage":
        m = p / MANIFEST_NAME
        if not m.is_file():
            raise ConfigError(f"{p}: directory has no {MANIFEST_NAME}; is it an artifact from `edgesdk convert`?")
        return p, _read_manifest(m), None
    if p.parent.suffix == ".mlpackage":  # a file inside a Core ML package: open the package
        return p.parent.parent, None, p.parent
    if p.name == MANIFEST_NAME or p.suffix == ".json":
        return p.parent, _read_manifest(p), None
    if p.suffix in FORMATS:
        return p.parent, None, p
    raise ConfigError(
        f"{p}: unrecognised file type {p.suffix!r}; expected an artifact directory, "
        f"manifest.json or one of {', '.join(FORMATS)}")


def load(path, *, threads: int | None = None, nan_policy: str = "reject",
         require_verified: bool = False, require_signature: bool = False, public_key=None) -> Session:
    """Open an artifact directory, its ``manifest.json``, or a bare model file.

    Example::

        from edgesdk import runtime
        sess = runtime.load("out/mlp-executorch-xnnpack")
        sess.inputs, sess.outputs

    With a manifest, every payload file's size and sha256 are checked before a native
    library reads it (``IntegrityError`` on mismatch) and ``sess.verified`` is True. Bare
    files are allowed (specs are read from the model) but ``verified`` is False;
    ``require_verified=True`` refuses them. ``require_signature=True`` also demands a valid
    Ed25519 signature by ``public_key`` (PEM path or bytes; default ``$EDGESDK_PUBLIC_KEY``)
    over the manifest, checked before anything else is read.
    """
    import time

    if nan_policy not in NAN_POLICIES:
        raise ConfigError(f"nan_policy {nan_policy!r} is not one of {NAN_POLICIES}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads must be a positive int, got {threads!r}")
    threads = threads or default_threads()
    t0 = time.perf_counter()
    root, manifest, bare = resolve(path)
    if require_signature:
        if manifest is None:
            raise IntegrityError(f"{bare}: a bare model file cannot carry a signature; load a signed artifact")
        from edgesdk.runtime.signing import verify_signature
        verify_signature(manifest.raw or manifest.to_dict(), public_key or os.environ.get("EDGESDK_PUBLIC_KEY"))
    if manifest is not None:
        verify_payload(root, manifest)
        backend = backend_module(manifest.format, manifest.target, manifest.backend)
        verified = True
    else:
        if require_verified:
            raise IntegrityError(f"{bare}: a bare model file has no manifest to verify against")
        fmt = FORMATS[bare.suffix]
        backend = backend_module(fmt)
        if bare.stat().st_size == 0:
            raise IntegrityError(f"{bare}: empty file")
        manifest = backend.manifest_for_file(bare)
        verified = False
    generation = None
    if GENERATION_KEY in manifest.extra:  # validated before any native library opens a program
        generation = parse_generation(manifest.extra[GENERATION_KEY], manifest.programs)
    programs, cache = {}, {}
    for name, spec in manifest.programs.items():
        prog = backend.open_program(root / spec.file, spec, threads=threads, manifest=manifest, cache=cache)
        programs[name] = _Binding(spec, prog, nan_policy)
    # a backend whose thread pool is process-wide may keep the size other sessions use
    threads = getattr(backend, "effective_threads", lambda t: t)(threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    return Session(root if bare is None else bare, manifest, backend, programs, verified, threads, load_ms,
                   generation)
