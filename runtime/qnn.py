"""Qualcomm HTP (Hexagon NPU) through ONNX Runtime's QNN execution provider. Torch-free.

On x86_64 the `onnxruntime-qnn` wheel ships `libQnnHtp.so`, an emulator of the HTP: results
are numerically the NPU's, timings are the simulator's (not a phone's), and every profile
says so. The provider is an ONNX Runtime plugin: its library is registered once per process
and added for the QNN device with ``backend_path`` pointing at the HTP library. Nodes the HTP
cannot run fall back to ONNX Runtime's CPU provider; `placement()` measures how many did.
"""

from __future__ import annotations

import csv
import json
import os
import platform
import re
import tempfile
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edgesdk.runtime import ort as _ort
from edgesdk.runtime.errors import ConversionError, IntegrityError
from edgesdk.runtime.manifest import Manifest, ProgramSpec

NAME = "onnxruntime-qnn"
EP = "QNNExecutionProvider"
DEVICE_LABEL = f"qnn-htp (simulator on {platform.machine()})"
RUNS_LABEL = "simulated: QNN HTP emulator, numerics of the NPU, latency not a phone's"
# The phone the emulator models unless a manifest says otherwise: Snapdragon 8 Gen 3
# (SM8650, Hexagon v75). Without a SoC the emulator fails to finalize many float graphs
# (QNN_COMMON_ERROR_MEM_ALLOC), with one it compiles them.
DEFAULT_SOC = {"soc_model": "57", "htp_arch": "75"}
# whether a session opens each program's EPContext model (compiled by the converter for the manifest's
# SoC) instead of compiling its QDQ ONNX (off: always compile, as before; the outputs are bit-identical)
USE_CONTEXT_MODEL = True
_lock = threading.Lock()
_device = None


def version() -> str:
    import onnxruntime_qnn
    return f"{onnxruntime_qnn.__version__} (onnxruntime {ort.__version__})"


def _qnn_device():
    global _device
    with _lock:
        if _device is None:
            import onnxruntime_qnn
            if not any(d.ep_name == EP for d in ort.get_ep_devices()):
                ort.register_execution_provider_library(EP, onnxruntime_qnn.get_library_path())
            devices = [d for d in ort.get_ep_devices() if d.ep_name == EP]
            if not devices:
                raise RuntimeError("the QNN provider registered no device")
            _device = devices[0]
    return _device


def htp_library() -> str:
    import onnxruntime_qnn
    return onnxruntime_qnn.get_qnn_htp_path()


def unavailable() -> str | None:
    try:
        _qnn_device()
    except Exception as e:  # missing library, ABI mismatch...
        return f"the QNN execution provider could not be registered ({e}); fix: pip install 'edge-sdk-runtime[qnn]'"
    if not Path(htp_library()).is_file():
        return f"{htp_library()} is missing; reinstall onnxruntime-qnn==2.7.0"
    return None


def session(path: Path, *, threads: int, provider_options: dict | None = None, config: dict | None = None,
            profile_prefix: str | None = None) -> ort.InferenceSession:
    """An ONNX Runtime session with the HTP first and the CPU provider as fallback."""
    so = _ort.session_options(threads, profile_prefix)
    for k, v in (config or {}).items():
        so.add_session_config_entry(k, str(v))
    opts = {"backend_path": htp_library(), **DEFAULT_SOC,
            **{k: str(v) for k, v in (provider_options or {}).items()}}
    so.add_provider_for_devices([_qnn_device()], opts)
    try:
        return _ort.inference_session(path, so)
    except Exception as e:
        msg = str(e)
        if "finalize QNN graph" in msg:
            raise ConversionError(
                f"{path.name}: the HTP could not compile this graph ({msg.strip()[-120:]}); the HTP runs "
                "quantized graphs best: try quantize='uint16-static' or 'uint8-static'") from None
        raise IntegrityError(f"{path}: ONNX Runtime (QNN HTP) could not load the model: {e}") from None


def _provider_options(manifest: Manifest) -> dict:
    return dict(manifest.extra.get("qnn", {}).get("provider_options", {}))


def context_model(path: Path, spec: ProgramSpec, manifest: Manifest | None) -> Path | None:
    """The EPContext model the converter compiled for ``spec``'s program (`converters.qnn_htp`), if the
    manifest names one beside ``path`` compiled for the SoC this session asks for; else None."""
    if manifest is None or not USE_CONTEXT_MODEL:
        return None
    ctx = manifest.extra.get("qnn", {}).get("epcontext")
    if isinstance(ctx, dict) and "file" not in ctx:  # several programs: one context model each
        ctx = ctx.get(spec.name)
    if not isinstance(ctx, dict) or not isinstance(ctx.get("file"), str):
        return None
    asked = _provider_options(manifest)
    if any(str(ctx.get(k)) != str(asked.get(k, v)) for k, v in DEFAULT_SOC.items()):
        return None
    f = path.parent / ctx["file"]
    return f if f.is_file() and f.parent == path.parent else None


def _open(path: Path, spec: ProgramSpec, manifest: Manifest | None, threads: int,
          provider_options: dict) -> tuple[ort.InferenceSession, Path]:
    """A session on the program's context binary where the artifact has one for this SoC (what a
    phone loads: no graph compile; the converter checked it gives the QDQ model's outputs bit for
    bit), else on the QDQ model (compiled here). Loading the Mamba student (prefill + step) on the
    emulator: 0.03 s from its context models, 1.4-2.4 s compiling its ONNX (benchmarks/qnn_context_load.py,
    RESULTS.md #21 twenty-third session)."""
    ctx = context_model(path, spec, manifest)
    if ctx is not None:
        try:
            return session(ctx, threads=threads, provider_options=provider_options), ctx
        except (IntegrityError, ConversionError) as e:  # another HTP than the one it was compiled for
            import warnings
            warnings.warn(f"{ctx.name} did not load ({e}); compiling {path.name} instead", stacklevel=3)
    return session(path, threads=threads, provider_options=provider_options), path


def open_program(path: Path, spec: ProgramSpec, *, threads: int, manifest: Manifest, cache: dict):
    sess, opened = _open(path, spec, manifest, threads, _provider_options(manifest))
    prog = _ort.Program(sess, spec)
    prog.file = opened  # the file the session runs: the EPContext model, or the QDQ model compiled here
    return prog


def manifest_for_file(path: Path) -> Manifest:
    return _ort.manifest_for_file(path)


def _is_io_conversion(op: str) -> bool:
    return op in ("QuantizeLinear", "DequantizeLinear", "Cast")


def placement(path: Path, arrays: list[np.ndarray], *, threads: int = 1, provider_options: dict | None = None,
              outputs: list | None = None, write_context: Path | None = None) -> dict:
    """Which graph nodes ran on the HTP and which fell back to CPU, from ONNX Runtime's profiler.

    QDQ models quantize their inputs and dequantize their outputs on the CPU by design; those
    boundary conversions are listed but not counted as fallback. ``fraction`` is the share of
    the graph's compute nodes (all but Quantize/DequantizeLinear/Cast) that ran on the HTP.
    ``outputs`` (a list, filled in): the run's outputs, for a caller that needs them too (a run on
    the emulator costs seconds for a generation program). ``write_context``: the same session also
    writes the EPContext model there (one graph compile for both).
    """
    import onnx
    model = onnx.load(str(path), load_external_data=False)
    compute = [n for n in model.graph.node if not _is_io_conversion(n.op_type)]
    with tempfile.TemporaryDirectory(prefix="edgesdk-qnnplace-") as tmp:
        config = None if write_context is None else {"ep.context_enable": "1", "ep.context_embed_mode": "1",
                                                       "ep.context_file_path": str(write_context)}
        sess = session(path, threads=threads, provider_options=provider_options, config=config,
                       profile_prefix=os.path.join(tmp, "p"))
        if write_context is not None and not Path(write_context).is_file():
            raise ConversionError(f"QNN did not write the EPContext model {Path(write_context).name}")
        got = sess.run(None, dict(zip([i.name for i in sess.get_inputs()], arrays)))
        if outputs is not None:
            outputs.extend(got)
        with open(sess.end_profiling()) as f:
            events = json.load(f)
    on_cpu, seen = [], set()
    for ev in events:
        name = ev.get("name", "")
        if ev.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        args = ev.get("args", {})
        node = name[: -len("_kernel_time")]
        if args.get("provider") == "CPUExecutionProvider" and node not in seen:
            seen.add(node)
            on_cpu.append({"node": node, "op_type": args.get("op_name", "?")})
    fallback = [r for r in on_cpu if not _is_io_conversion(r["op_type"])]
    total = len(compute)
    return {
        "compute_nodes": total, "on_npu": total - len(fallback), "on_cpu": len(fallback),
        "fraction": (total - len(fallback)) / total if total else 1.0,
        "cpu_fallback": fallback,
        "io_conversions_on_cpu": [r for r in on_cpu if _is_io_conversion(r["op_type"])],
    }


_NODE = re.compile(r"^(?P<name>.*?)([: ]OpId_\d+)? \(cycles\)$")


def parse_profile_csv(path: str) -> tuple[list[dict], list[float]]:
    """QNN profiling CSV -> per-run node cycles and accelerator execute times (µs)."""
    runs, exec_us, _ = _parse_profile(path)
    return runs, exec_us


def _parse_profile(path: str) -> tuple[list[dict], list[float], list[float]]:
    """-> (per-run node cycles, per-run execute µs, per-run total accelerator cycles)."""
    runs: list[dict] = []
    exec_us: list[float] = []
    cycles: list[float] = []
    current: dict | None = None
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ident, unit = row.get("Event Identifier", ""), row.get("Unit of Measurement", "")
            try:
                value = float(row.get("Time", "0"))
            except ValueError:
                continue
            if ident == "Accelerator (execute) time (cycles)":
                current = {}
                runs.append(current)
                cycles.append(value)
            elif row.get("Event Level") == "SUB-EVENT" and unit == "CYCLES" and current is not None:
                m = _NODE.match(ident)
                if m:
                    current[m.group("name")] = current.get(m.group("name"), 0.0) + value
            elif ident == "Accelerator (execute) time" and unit == "US":
                exec_us.append(value)
    return runs, exec_us, cycles


def accelerator_profile(path: Path, arrays, *, runs: int = 5, provider_options: dict | None = None) -> dict:
    """The HTP's own account of ``runs`` executions of one ONNX model on ``arrays`` (QNN detailed
    profiling): per run, the accelerator's total cycles, its execute time (µs) and each op's cycles.

    On the x86_64 emulator these are the simulator's cycle model and wall time, not a phone's.
    The first execution (graph preparation included) is dropped when there are more.

    >>> p = accelerator_profile(Path("model.onnx"), [x], runs=5)          # doctest: +SKIP
    >>> p["cycles"], p["execute_us"], p["op_cycles"][0]                    # doctest: +SKIP
    """
    with tempfile.TemporaryDirectory(prefix="edgesdk-qnnprof-") as tmp:
        csv_path = os.path.join(tmp, "qnn.csv")
        sess = session(path, threads=1, provider_options={**(provider_options or {}), "profiling_level": "detailed",
                                                          "profiling_file_path": csv_path})
        feed = dict(zip([i.name for i in sess.get_inputs()], arrays))
        for _ in range(runs + 1):
            sess.run(None, feed)
        del sess  # the CSV is flushed when the session is released
        if not os.path.exists(csv_path):
            raise ConversionError(f"{Path(path).name}: QNN wrote no profiling file")
        node_runs, exec_us, cycles = _parse_profile(csv_path)
    skip = 1 if len(cycles) > 1 else 0
    return {"cycles": cycles[skip:], "execute_us": exec_us[skip:], "op_cycles": node_runs[skip:],
            "note": "QNN HTP emulator on x86_64: the simulator's cycle counts and times, not a phone's"}


def op_events(path: Path, spec: ProgramSpec, arrays, runs: int, threads: int, manifest: Manifest | None = None):
    """QNN's own detailed profiling: accelerator execute time per run, per-op cycles.

    Per-op times are the run's accelerator time apportioned by each op's share of the
    simulator's cycle count.
    """
    with tempfile.TemporaryDirectory(prefix="edgesdk-qnnprof-") as tmp:
        csv_path = os.path.join(tmp, "qnn.csv")
        opts = {**(_provider_options(manifest) if manifest else {}), "profiling_level": "detailed",
                "profiling_file_path": csv_path}
        sess = _open(path, spec, manifest, threads, opts)[0]
        feed = dict(zip([i.name for i in sess.get_inputs()], arrays))
        for _ in range(runs):
            sess.run(None, feed)
        del sess  # the CSV is flushed when the session is released
        if not os.path.exists(csv_path):
            return [], "QNN wrote no profiling file", {}
        node_runs, exec_us = parse_profile_csv(csv_path)
    import onnx
    op_types = {n.name: n.op_type for n in onnx.load(str(path), load_external_data=False).graph.node}
    # the first profiled execution includes graph preparation; drop it when there are more
    pairs = list(zip(node_runs, exec_us))[1:] or list(zip(node_runs, exec_us))
    events = []
    for nodes, us in pairs:
        total = sum(nodes.values()) or 1.0
        for name, cyc in nodes.items():
            base = re.sub(r"_token_\d+$", "", name)
            events.append((name, op_types.get(base, "graph I/O" if name.startswith(("Input", "Output")) else "HTP op"),
                           us * cyc / total, "QNN HTP (simulated)"))
    extra = {"accelerator_execute_us": exec_us, "profiling_level": "detailed", "profiled_runs": len(pairs),
             "note": "QNN HTP emulator on x86_64: cycle counts and times are the simulator's"}
    return events, ("per-op times apportioned from the QNN HTP simulator's cycle counts "
                    "(not phone timings)"), extra
