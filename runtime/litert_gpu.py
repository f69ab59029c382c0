"""LiteRT GPU backend (`litert-gpu`): `.tflite` on LiteRT's GPU accelerator. Torch-free.

The artifact is the same `.tflite` the CPU twin (`litert-cpu`) runs; here it goes through
`ai_edge_litert`'s compiled-model API with ``HardwareAccelerator.GPU`` (CPU as fallback for ops
the GPU does not take: ``fully_accelerated`` says whether any were left). The accelerator is
WebGPU (Dawn) over Vulkan; on a machine without a GPU it runs the real GPU kernels on Mesa's
lavapipe, a CPU Vulkan driver that `runtime.gpu_sim` finds and loads (``make gpu-sim``).

Precision is the manifest's ``gpu_precision``: ``"fp16"`` (the accelerator's default: fp16
compute and storage, errors ~1e-3) or ``"fp32"`` (``GpuOptions(enforce_f32=True)``, ~1e-7).
int64 inputs are narrowed to the int32 LiteRT stores (refusing values that do not fit) and
integer outputs widened back, as in `runtime.litert`.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from pathlib import Path

import numpy as np

from edgesdk.runtime import gpu_sim
from edgesdk.runtime.errors import ExecutionError, InputError, IntegrityError
from edgesdk.runtime.logs import mute_native_exit_logs, native_output
from edgesdk.runtime.manifest import Manifest, ProgramSpec

NAME = "litert-gpu"
PRECISIONS = ("fp16", "fp32")
DEFAULT_PRECISION = "fp16"  # LiteRT's GPU default

# y = 2x + 1 on a (1, 4) float32 input: litert_torch.convert of a two-op module (1060 bytes).
_PROBE_MODEL = base64.b64decode(
    "HAAAAFRGTDMUACAABAAIAAwAEAAUAAAAGAAcABQAAAADAAAARAAAADgAAABUAQAADAAAAMAAAAA8AAAACAAAAOADAADcAwAAaAMA"
    "ABgDAADQAwAAzAMAAAwBAADMAAAAAQAAAEABAAACAAAAeAIAANgBAAABAAAAEAAAAAAACgAQAAwACAAEAAoAAAAMAAAAHAAAACAA"
    "AAAPAAAAc2VydmluZ19kZWZhdWx0AAEAAAAUAAAAAQAAACgAAAAIAAwACAAEAAgAAAAEAAAABAAAAAgAAABvdXRwdXRfMAAAAAA2"
    "/f//BAAAAAYAAABhcmdzXzAAAAIAAABIAAAABAAAAMj///8IAAAABwAAABcAAABrZWVwX3N0YWJsZWhsb19jb25zdGFudAB+/f//"
    "BAAAAAQAAAB0cnVlCAAMAAQACAAIAAAACAAAAAYAAAATAAAAbWluX3J1bnRpbWVfdmVyc2lvbgC6/f//BAAAABAAAAAxLjUuMAAA"
    "AAAAAAAAAAAADwAAAE1MSVIgQ29udmVydGVkLgAAAA4AGAAEAAgADAAQABQADgAAADwAAAAwAAAAJAAAABQAAAAEAAAABAAAAG1h"
    "aW4AAAAAAgAAAOAAAAA8AAAAAQAAAAQAAAABAAAAAAAAAAUAAADwAQAAiAEAAEABAAAAAQAAWAAAAAAADgAYAAgADAAQAAcAFAAO"
    "AAAAAAAACwEAAAAYAAAADAAAAAQAAAAI/v//AQAAAAQAAAACAAAAAwAAAAEAAAAAAAoACAAAAAAABAAKAAAAAQAAAI7+//8AAAAB"
    "NAAAAAUAAAAIAAAANAAAAB8AAABzZXJ2aW5nX2RlZmF1bHRfb3V0cHV0XzBfb3V0cHV0AAIAAAABAAAABAAAAPj+//8AAA4AFAAA"
    "AAgADAAHABAADgAAAAAAABUYAAAADAAAAAQAAACk/v//AQAAAAMAAAACAAAAAAAAAAIAAAAMABAACwAAAAwABAAMAAAAEgAAAAAA"
    "ABIBAAAAMv///wAAAAEkAAAABAAAAAgAAAAkAAAADAAAAF9fbWFpbl9fLlA7MgAAAAACAAAAAQAAAAQAAAAQ////bv///wAAAAEk"
    "AAAAAwAAAAgAAAAcAAAADAAAAF9fbWFpbl9fLlA7MQAAAAAAAAAARP///7r///8EAAAABAAAAAAAAECy////AAAAASAAAAACAAAA"
    "CAAAABwAAAALAAAAX19tYWluX18uUDsAAAAAAAQABgAEAAAAAAAGAAgABAAGAAAABAAAAAQAAAAAAIA/AAAWABgACAAAAAwAEAAU"
    "AAAAAAAAAAcAFgAAAAAAAAEsAAAAAQAAAAgAAAAsAAAAFgAAAHNlcnZpbmdfZGVmYXVsdF9hcmdzXzAAAAIAAAABAAAABAAAAPz/"
    "//8EAAQABAAAAA==")


def version() -> str:
    from importlib.metadata import version as v
    return v("ai-edge-litert")


# ---------------------------------------------------------------- native log capture

_KNOWN = re.compile(r"Couldn't load Vulkan: [^\n]*|No adapters found|No supported adapters")
# what LiteRT logs on every start and is never the cause (vendor NPU plugins this wheel ships)
_NOISE = re.compile(r"plugin|openvino|npu_registry|NPU accelerator|OpenCL", re.I)


def _reason(log: str, exc: BaseException | None) -> str:
    """The native log's line(s) that explain a failure, else the exception's last line."""
    found = []
    for m in _KNOWN.finditer(log):
        s = m.group(0).strip().rstrip(".")
        if s not in found:
            found.append(s)
    if not found:
        found = [ln.strip() for ln in log.splitlines()
                 if re.search(r"ERROR|[Ff]ailed|[Ee]rror:", ln) and not _NOISE.search(ln)][-2:]
    if found:
        return "; ".join(found[:3])
    return (str(exc).strip().splitlines() or [type(exc).__name__])[-1] if exc else "unknown error"


# ---------------------------------------------------------------- availability

_lock = threading.Lock()
_state: dict = {}  # "why": str | None, "report": dict — set once the driver was activated


def _litert():
    from ai_edge_litert.compiled_model import CompiledModel
    from ai_edge_litert.hardware_accelerator import HardwareAccelerator
    from ai_edge_litert.options import CpuOptions, GpuOptions, Options
    return CompiledModel, HardwareAccelerator, Options, CpuOptions, GpuOptions


_env = None


def _environment():
    """One LiteRT environment (and so one GPU device) shared by every model in the process."""
    global _env
    if _env is None:
        from ai_edge_litert.environment import Environment
        mute_native_exit_logs()  # the accelerator registry logs from C++ destructors at exit
        _env = Environment.create()
    return _env


def unavailable() -> str | None:
    """Why `litert-gpu` artifacts cannot run in this process (with the fix), or None.

    Finds the driver (`runtime.gpu_sim`), loads it, and runs a two-op probe model on the GPU
    accelerator alone. Once a driver was loaded the answer is cached for the process.
    """
    with _lock:
        if "why" in _state:
            return _state["why"]
        driver = gpu_sim.find()
        if isinstance(driver, str):
            return driver  # nothing loaded: a later `make gpu-sim` can still help this process
        why = gpu_sim.activate(driver)
        if why is None:
            why = _probe(driver)
        _state["why"] = why
        return why


def _probe(driver: gpu_sim.Driver) -> str | None:
    CompiledModel, HA, Options, _, GpuOptions = _litert()
    exc, y, full = None, None, None
    t0 = time.perf_counter()
    with native_output("LiteRT GPU", need_text=True) as log:
        try:
            model = CompiledModel.from_buffer(
                _PROBE_MODEL, environment=_environment(),
                options=Options(hardware_accelerators=HA.GPU, gpu_options=GpuOptions(enforce_f32=True)))
            ins, outs = model.create_input_buffers(0), model.create_output_buffers(0)
            ins[0].write(np.ones((1, 4), np.float32))
            model.run_by_index(0, ins, outs)
            y = outs[0].read(4, np.float32)
            full = model.is_fully_accelerated()
        except Exception as e:  # noqa: BLE001 - the native layer raises RuntimeError with a trace
            exc = e
    _state["report"] = {"driver": driver.description, "icd": driver.icd, "ms": (time.perf_counter() - t0) * 1e3,
                        "output": None if y is None else y.tolist(), "fully_accelerated": full}
    if exc is not None:
        fix = (f"fix: rm -rf {driver.folder} and {driver.fix()}" if driver.folder else
               f"fix: point VK_ICD_FILENAMES at a Mesa >= 25 lavapipe ICD, or unset it and {driver.fix()}")
        return (f"LiteRT's GPU accelerator (WebGPU over Vulkan) could not start on {driver.description} "
                f"from {driver.source} ({driver.icd}): {_reason(log[0], exc)}; {fix}")
    if not np.allclose(y, 3.0):
        return f"the GPU accelerator on {driver.description} computed {y.tolist()} for 2*1+1; the driver is broken"
    return None


def probe_report() -> dict:
    """What the availability probe saw (driver, time, output, full acceleration)."""
    return dict(_state.get("report", {}))


def driver_labels(fully_accelerated: bool | None) -> tuple[str, str]:
    """(device_label, runs_label) for a profile of this process's GPU accelerator."""
    from edgesdk.runtime.profile import cpu_name
    d = gpu_sim.active() or gpu_sim.find()
    if isinstance(d, str):
        return "litert-gpu: no GPU driver", "software GPU (lavapipe)"
    device = f"litert-gpu: {d.description}" + (f" on {cpu_name()}" if d.software else "")
    runs = d.runs_label
    if fully_accelerated is False:
        device += " (some ops fell back to the CPU)"
        runs += " + CPU fallback"
    return device, runs


# ---------------------------------------------------------------- programs

from edgesdk.runtime.manifest import natural_order as _natural  # noqa: E402  (shared with the CPU twin)
from edgesdk.runtime.litert import narrow as _narrow  # noqa: E402


class _Compiled:
    """A `.tflite` compiled for the GPU accelerator, shared by its signatures."""

    def __init__(self, path: Path, precision: str, threads: int):
        CompiledModel, HA, Options, CpuOptions, GpuOptions = _litert()
        why = unavailable()
        if why:
            from edgesdk.runtime.errors import TargetUnavailableError
            raise TargetUnavailableError(f"cannot run litert-gpu artifacts here: {why}")
        t0 = time.perf_counter()
        with native_output("LiteRT GPU", need_text=True) as log:
            try:
                self.model = CompiledModel.from_file(
                    str(path), environment=_environment(),
                    options=Options(hardware_accelerators=HA.GPU | HA.CPU, cpu_options=CpuOptions(num_threads=threads),
                                    gpu_options=GpuOptions(enforce_f32=precision == "fp32")))
                self.fully_accelerated = bool(self.model.is_fully_accelerated())
                err = None
            except Exception as e:  # noqa: BLE001
                err = e
        if err is not None:
            raise ExecutionError(f"{path}: LiteRT's GPU accelerator could not compile the model: "
                                 f"{_reason(log[0], err)}") from None
        self.compile_ms = (time.perf_counter() - t0) * 1e3
        self.log = log[0]
        self.precision = precision
        self.lock = threading.Lock()  # signatures share the model: one run at a time


class Program:
    """One signature of a `.tflite` on the GPU accelerator (serialised per model, so thread-safe)."""

    thread_safe = True

    def __init__(self, compiled: _Compiled, spec: ProgramSpec, signature: str, io_names: dict | None, path: Path):
        model = compiled.model
        sigs = model.get_signature_list()
        if signature not in sigs:
            raise IntegrityError(f"{path}: no signature {signature!r} (has {sorted(sigs)})")
        sig_in, sig_out = list(sigs[signature]["inputs"]), list(sigs[signature]["outputs"])
        in_names = (io_names or {}).get("inputs") or _natural(sig_in)
        out_names = (io_names or {}).get("outputs") or _natural(sig_out)
        if len(in_names) != len(spec.inputs) or len(out_names) != len(spec.outputs):
            raise IntegrityError(
                f"{path}: signature {signature!r} has {len(in_names)} inputs / {len(out_names)} outputs, "
                f"manifest declares {len(spec.inputs)} / {len(spec.outputs)}")
        if sorted(in_names) != sorted(sig_in) or sorted(out_names) != sorted(sig_out):
            raise IntegrityError(f"{path}: signature {signature!r} tensors {sig_in} -> {sig_out} do not match "
                                 f"the manifest's {in_names} -> {out_names}")
        ind, outd = model.get_input_tensor_details(signature), model.get_output_tensor_details(signature)
        self.compiled = compiled
        self.fully_accelerated = compiled.fully_accelerated
        self.precision = compiled.precision
        self._model = model
        self._index = model.get_signature_index(signature)
        # buffers in the signature's order (what run_by_index takes); specs in PyTorch's order
        self._in_bufs = [model.create_input_buffer_by_name(signature, n) for n in sig_in]
        self._out_bufs = [model.create_output_buffer_by_name(signature, n) for n in sig_out]
        self._in = [(self._in_bufs[sig_in.index(n)], np.dtype(ind[n]["dtype"]), s.name)
                    for n, s in zip(in_names, spec.inputs)]
        self._out = []
        for n, s in zip(out_names, spec.outputs):
            shape = tuple(int(d) for d in outd[n]["shape"])
            self._out.append((self._out_bufs[sig_out.index(n)], np.dtype(outd[n]["dtype"]), shape,
                              int(np.prod(shape, dtype=np.int64)), np.dtype(s.dtype)))

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        try:
            with self.compiled.lock:
                for a, (buf, dtype, name) in zip(arrays, self._in):
                    buf.write(_narrow(a, dtype, name))
                self._model.run_by_index(self._index, self._in_bufs, self._out_bufs)
                outs = [buf.read(n, dt).reshape(shape) for buf, dt, shape, n, _ in self._out]
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001
            raise ExecutionError(f"LiteRT's GPU accelerator failed to run the model: {e}") from None
        return [o if o.dtype == want else o.astype(want) for o, (*_, want) in zip(outs, self._out)]

    def raw_call(self):
        """The backend's own call, for overhead benchmarks: write / run_by_index / read."""
        model, idx, ins, outs = self._model, self._index, self._in_bufs, self._out_bufs
        inb = [b for b, _, _ in self._in]
        outr = [(b, dt, shape, n) for b, dt, shape, n, _ in self._out]

        def call(arrays):
            for b, a in zip(inb, arrays):
                b.write(a)
            model.run_by_index(idx, ins, outs)
            return [b.read(n, dt).reshape(shape) for b, dt, shape, n in outr]
        return call


def precision_of(manifest: Manifest) -> str:
    p = manifest.extra.get("gpu_precision", DEFAULT_PRECISION)
    if p not in PRECISIONS:
        raise IntegrityError(f"manifest gpu_precision {p!r} is not one of {', '.join(PRECISIONS)}")
    return p


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict) -> Program:
    precision = precision_of(manifest)
    key = (path, precision)
    if key not in cache:
        cache[key] = _Compiled(path, precision, threads)
    compiled = cache[key]
    io_names = manifest.extra.get("litert_io", {}).get(spec.name)
    prog = Program(compiled, spec, spec.method, io_names, path)
    # profiles report the device this session runs on (the manifest's labels say where it was verified)
    device, runs = driver_labels(compiled.fully_accelerated)
    manifest.extra.update(device_label=device, runs_label=runs,
                          gpu_fully_accelerated=compiled.fully_accelerated)
    return prog


def inspect(path, precision: str = DEFAULT_PRECISION, threads: int = 1) -> dict:
    """Compile a `.tflite` for the GPU accelerator here and say how it went (for manifests).

    Raises TargetUnavailableError when no GPU accelerator runs in this process.
    """
    if precision not in PRECISIONS:
        raise IntegrityError(f"gpu precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    c = _Compiled(Path(path), precision, threads)
    device, runs = driver_labels(c.fully_accelerated)
    d = gpu_sim.active()
    return {"fully_accelerated": c.fully_accelerated, "compile_ms": round(c.compile_ms, 3),
            "device_label": device, "runs_label": runs,
            "driver": {"name": d.name, "mesa": d.mesa, "source": d.source, "packages": dict(d.packages)} if d else None}


def manifest_for_file(path: Path) -> Manifest:
    """Describe a bare `.tflite` (as `runtime.litert` does) for the GPU at its default precision."""
    from edgesdk.runtime.litert import manifest_for_file as cpu_manifest
    m = cpu_manifest(path)
    m.target = NAME
    m.device = "gpu"
    m.extra["gpu_precision"] = DEFAULT_PRECISION
    return m


def op_events(path: Path, spec: ProgramSpec, arrays, runs: int, threads: int, manifest: Manifest | None = None):
    """No per-op timings (the compiled-model Python API has none); the profile's `extra` records
    the GPU precision, whether every op ran on the GPU, and the driver."""
    d = gpu_sim.active()
    extra = {"gpu_precision": precision_of(manifest) if manifest is not None else DEFAULT_PRECISION,
             "gpu_fully_accelerated": manifest.extra.get("gpu_fully_accelerated") if manifest is not None else None,
             "gpu_driver": d.description if d else None}
    if d is not None and d.mesa:
        extra["mesa"] = d.mesa
    return [], ("LiteRT's compiled-model Python API exposes no per-op timings for the GPU accelerator "
                "(whole-model latency only)"), extra


def main(argv=None) -> int:
    """`python -m edgesdk.runtime.litert_gpu`: where the Vulkan driver is (`runtime.gpu_sim`), and
    whether LiteRT's GPU accelerator runs on it (the last step of ``make gpu-sim``)."""
    import edgesdk.runtime.litert_gpu as gpu  # not __main__'s copy: the one the rest of the SDK uses
    why = gpu.unavailable()
    d = gpu_sim.active() or gpu_sim.find()
    if why:
        print(f"litert-gpu cannot run here: {why}")
        return 1
    print(f"litert-gpu runs here on a {d.description} ({d.source}: {d.icd})")
    for k, v in sorted(d.packages.items()):
        print(f"  {k} {v}")
    print(f"  probe: {gpu.probe_report()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
