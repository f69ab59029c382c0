"""`qnn-htp`: Qualcomm Hexagon NPU via ONNX Runtime's QNN execution provider.

Export ONNX, quantize QDQ with ONNX Runtime's QNN configuration (uint8 or uint16
activations, uint8 weights), check how much of the graph the HTP takes (placement), and
compile an EPContext model for a chosen SoC / HTP architecture — the file that ships to a
phone. Here everything runs on the HTP emulator in the `onnxruntime-qnn` wheel.

Options (``edgesdk.convert(..., option=value)``):
- ``min_npu_fraction``: a lower share of compute nodes on the HTP is a ConversionError naming
  the ops that fell back to CPU.
- ``soc_model`` / ``htp_arch``: the phone to compile the EPContext model for (default
  Snapdragon 8 Gen 3: soc_model 57, htp_arch 75).

Generation models (several programs) get w8a16 (``uint16-static``) by default. Three fixes made
quantized Mamba right on the HTP, the maths unchanged: the SSD mask's -inf fill became a 0/1
multiply (models/mamba.py), its tied head gets its own uint8 copy (`untie_head`), and every Log
runs in fp16 under 16-bit activations (`log_islands`: the emulator's 16-bit Log returns a constant
when its output scale is below 2^-14). One rewrite serves every precision: ``Pow(x, 2)`` becomes
``Mul(x, x)`` (`square_pows`; an RMSNorm's squares were three quarters of Mamba's emulated prefill).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgesdk.converters.onnx_cpu import FeedReader as _Reader, export_onnx, nodes_of_modules, onnx_summary
from edgesdk.converters.onnx_weights import strip_node_metadata
from edgesdk.converters.gen_calibration import for_program
from edgesdk.converters.placement import block
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError, ConversionError

ACTIVATIONS = {"uint8-static": "QUInt8", "uint16-static": "QUInt16"}
# whether export runs `square_pows` (a switch for benchmarks/qnn_generation.py's "pows" before/after)
SQUARE_POWS = True


def quantize_qnn(src: Path, dst: Path, scheme: str, *, input_names, calibration, exclude) -> dict:
    """QDQ quantization with ONNX Runtime's QNN-specific configuration."""
    from onnxruntime.quantization import QuantType, quantize
    from onnxruntime.quantization.calibrate import CalibrationDataReader
    from onnxruntime.quantization.execution_providers.qnn import get_qnn_qdq_config, qnn_preprocess_model

    class Reader(_Reader, CalibrationDataReader):
        pass

    pre = dst.with_name("model.qnnpre.onnx")
    model_in = pre if qnn_preprocess_model(str(src), str(pre)) else src
    untied_path = dst.with_name("model.untied.onnx")
    untied = untie_head(model_in, untied_path)
    if untied:
        model_in = untied_path
    blocked = nodes_of_modules(model_in, exclude)
    logs = [n for n in log_islands(model_in) if n not in blocked] if scheme == "uint16-static" else []
    act = getattr(QuantType, ACTIVATIONS[scheme])
    cfg = get_qnn_qdq_config(str(model_in), Reader(input_names, calibration), activation_type=act,
                             weight_type=QuantType.QUInt8, nodes_to_exclude=(blocked + logs) or None)
    quantize(str(model_in), str(dst), cfg)
    for tmp in (pre, untied_path):
        if tmp.exists():
            tmp.unlink()
    concats = concat_inputs_share_encoding(dst)
    info = {"tool": "onnxruntime.quantization get_qnn_qdq_config + quantize", "format": "QDQ",
            "activations": f"{ACTIVATIONS[scheme][1:].lower()} per-tensor (min-max)", "weights": "uint8",
            "nodes_kept_float": blocked + logs}
    if logs:
        info["float_log_islands"] = {"nodes": logs, "why": "the HTP's 16-bit Log returns a constant below a 2^-14 "
                                     "output scale (emulator); each Log runs in fp16 with its neighbours"}
    if untied:
        info["untied_heads"] = untied
    if concats:
        info["concat_inputs_requantized"] = concats
    return info


def concat_inputs_share_encoding(path: Path) -> int:
    """Quantize every Concat input with the Concat output's encoding (scale, zero point); rewrites
    ``path`` in place and returns how many inputs changed.

    Why: the HTP's Concat reads every input with one encoding. The QDQ graph gives each input its
    producer's own, and the emulator then returned Mamba's stacked per-layer conv states off by up
    to 3.8 of 7.6 for every layer but the first (ONNX Runtime's CPU provider ran the same graph right).
    Only an input whose Q/DQ pair nothing else reads is changed: a second Q/DQ pair added for a
    shared input made no difference on the emulator, so such inputs stay as they are (still wrong
    there)."""
    import onnx
    model = onnx.load(str(path))
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    readers: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, []).append(n)
    changed = 0
    for node in list(graph.node):
        qs = [r for r in readers.get(node.output[0], []) if r.op_type == "QuantizeLinear"] if node.op_type == "Concat" else []
        if len(qs) != 1:
            continue
        scale, zero = qs[0].input[1], qs[0].input[2]
        for x in node.input:
            dq = producer.get(x)
            q = producer.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
            if q is None or q.op_type != "QuantizeLinear" or (dq.input[1], dq.input[2]) == (scale, zero):
                continue
            if len(readers[dq.input[0]]) == 1 and len(readers[x]) == 1:
                q.input[1], q.input[2], dq.input[1], dq.input[2] = scale, zero, scale, zero
                changed += 1
    if changed:
        onnx.save(model, str(path))
    return changed


def square_pows(path: Path) -> list[str]:
    """Rewrite every ``Pow(x, 2)`` whose exponent is a constant as ``Mul(x, x)``; rewrites ``path``
    in place (external data stays where it is) and returns the names of the nodes changed.

    Why: the HTP runs Pow as a general power. In Mamba's fp32 prefill on the emulator the four
    ``g.pow(2)`` of its gated RMSNorm (an RMSNorm's usual form, as in Llama's) took 75% of the
    simulator's cycles in a 3.2 s program; as ``Mul`` the program took 1.0 s (RESULTS.md, #21
    sixteenth session). ``x * x`` is what PyTorch computes for ``pow(x, 2)``."""
    import onnx
    from onnx import numpy_helper
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    consts = {i.name: i for i in graph.initializer}
    consts.update({n.output[0]: a.t for n in graph.node if n.op_type == "Constant"
                   for a in n.attribute if a.name == "value"})

    def is_two(name: str) -> bool:
        t = consts.get(name)
        if t is None or t.data_location == onnx.TensorProto.EXTERNAL:
            return False
        v = numpy_helper.to_array(t)
        return v.size == 1 and float(v.reshape(-1)[0]) == 2.0

    changed = []
    for n in graph.node:
        if n.op_type == "Pow" and not n.domain and is_two(n.input[1]):
            n.op_type = "Mul"
            n.input[1] = n.input[0]
            changed.append(n.name)
    if changed:
        onnx.save(model, str(path))
    return changed


def log_islands(path: Path) -> list[str]:
    """The nodes to keep in float (fp16 on the HTP) under 16-bit activations: every Log, with the
    node that makes its input and the nodes that read its output.

    Why: the HTP emulator's 16-bit Log returns the bottom of its output range whatever the input
    when the output scale is below 2^-14 (an output range under 4.0; `benchmarks/qnn_generation.py
    ops`: [0, 3.9] constant, [0, 4] right; 8-bit was exact). Mamba's
    dt = softplus(...) = relu(x) + log(1 + exp(-|x|)) was then wrong in every layer under w8a16, and
    the student lost 74% of its next-byte accuracy. A Log excluded alone still sits between a
    DequantizeLinear and a QuantizeLinear, and ONNX Runtime's QNN provider fuses that back into a
    quantized Log; with its neighbours float too, the Log runs in fp16. (A fused Softplus node,
    the other way out, was within 3-9% of dt on the emulator; the fp16 Log is exact to fp16.)"""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    names: list[str] = []
    for n in graph.node:
        if n.op_type != "Log":
            continue
        island = [producer[x] for x in n.input if x in producer] + [n]
        island += [r for r in graph.node if n.output[0] in r.input]
        names += [m.name for m in island if m.name not in names]
    return names


def untie_head(src: Path, dst: Path) -> list[dict]:
    """Give a head that shares its table with an embedding Gather (tied weights) its own copy.

    Why: the quantizer scales a table shared with a Gather as an activation (uint16, asymmetric
    with 16-bit activations), and the HTP's FullyConnected refuses a 16-bit weight that is not
    symmetric ("incorrect Value -34350, expected equal to -32768"), so the head fell back to the
    CPU. Its own copy is quantized as a weight (uint8). Same values; writes ``dst`` only when a
    head was untied, and returns what was done."""
    import onnx
    from onnx import TensorProto, numpy_helper
    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    readers: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            if x in inits:
                readers.setdefault(x, []).append(n)
    done = []
    for name, nodes in readers.items():
        init = inits[name]
        gathers = [n for n in nodes if n.op_type == "Gather" and n.input[0] == name]
        heads = [n for n in nodes if n.op_type in ("Gemm", "MatMul") and n.input[1] == name]
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or not gathers or not heads:
            continue
        copy = numpy_helper.from_array(numpy_helper.to_array(init).copy(), name + "_head")  # (V, D)
        graph.initializer.append(copy)
        for n in heads:
            n.input[1] = copy.name
        done.append({"table": name, "shape": list(init.dims), "head_nodes": [n.name for n in heads]})
    if done:
        onnx.save(model, str(dst))
    return done


@register_target
class QnnHtp(Converter):
    options = {"soc_model": "QNN SoC model id to compile for (default 57, Snapdragon 8 Gen 3)",
               "htp_arch": "HTP architecture version (default 75)",
               "min_npu_fraction": "fail when a smaller share of compute nodes runs on the HTP"}
    name = "qnn-htp"
    device = "npu"
    format = "onnx"
    backend = "onnxruntime-qnn"
    description = "Qualcomm Hexagon NPU (HTP) via ONNX Runtime QNN; runs here on the HTP emulator"
    quantization = ("fp32", "uint8-static", "uint16-static")
    recommended = "uint8-static"
    # generation models (several programs, each calibrated on its own recorded inputs): w8a16. On the
    # trained demo students uint8 lost the encdec's char F1 by 41% where w8a16 kept it (RESULTS.md)
    recommended_multi_program = "uint16-static"
    calibrated = ("uint8-static", "uint16-static")
    convert_packages = ("onnx", "onnxscript", "onnxruntime", "onnxruntime_qnn")
    run_packages = ("onnxruntime_qnn",)
    install_hint = "pip install onnxruntime-qnn==2.7.0"
    run_label = "simulated"
    # the HTP computes float graphs at fp16 precision; a generation model that misses this
    # tolerance is judged by the tokens it generates (converters.fp16_compute)
    default_tolerance = {"fp32": (1e-2, 1e-2)}
    float_compute = "fp16"

    @classmethod
    def run_unavailable(cls) -> str | None:
        why = super().run_unavailable()
        if why:
            return why
        return qnn_runtime().unavailable()

    def export(self, programs, workdir, *, quantize, options):
        unknown = set(options) - {"calibration", "exclude", "min_npu_fraction", "soc_model", "htp_arch"}
        if unknown:
            raise ConfigError(f"qnn-htp: unknown options {sorted(unknown)}; valid: min_npu_fraction, soc_model, "
                              "htp_arch")
        soc = {k: str(options.get(k, v)) for k, v in qnn_runtime().DEFAULT_SOC.items()}
        files, progs, placement, epcontext, summary, details, squared = [], {}, {}, {}, {}, {}, {}
        for name, prog in programs.items():
            stem = "model" if len(programs) == 1 else name
            model = workdir / f"{stem}.onnx"
            if quantize == "fp32":
                files += export_onnx(prog, model)[0]
                squared[name] = square_pows(model) if SQUARE_POWS else []
            else:
                fp32 = workdir / f"{stem}.fp32.onnx"
                tmp_files = export_onnx(prog, fp32)[0]
                squared[name] = square_pows(fp32) if SQUARE_POWS else []
                details[name] = quantize_qnn(fp32, model, quantize, input_names=prog.input_names,
                                             calibration=for_program(options.get("calibration"), name),
                                             exclude=for_program(options.get("exclude"), name) or [])
                for f in tmp_files:
                    (workdir / f).unlink()
                files += sorted(p.name for p in workdir.iterdir() if p.name.startswith(model.name))
            # the exporter's stack traces name this checkout's absolute paths: a model.onnx that differed
            # by checkout (two trees, same model: two hashes) and leaked them into what ships. Only those: the
            # shapes and initializers the QNN EP partitions stay as exported
            strip_node_metadata(model, metadata_only=True)
            arrays = [t.detach().cpu().contiguous().numpy() for t in prog.example_inputs]
            ran: list = []  # the placement run's outputs: the reference the EPContext model must give back
            ctx = workdir / f"{stem}_ctx.onnx"  # compiled by the placement session (one HTP compile for both)
            placement[name] = self._placement(model, arrays, options.get("min_npu_fraction"), soc, ran, ctx)
            epcontext[name] = self._epcontext(ctx, arrays, soc, ran)
            files.append(epcontext[name]["file"])
            progs[name] = (model.name, name)
            summary[name] = onnx_summary(model)
        single = len(programs) == 1
        extra = {
            "onnx": summary,
            "qnn": {"provider_options": soc,
                    "placement": placement[next(iter(programs))] if single else placement,
                    "epcontext": epcontext[next(iter(programs))] if single else epcontext},
            "device_label": qnn_runtime().DEVICE_LABEL, "runs_label": qnn_runtime().RUNS_LABEL,
        }
        if details:
            extra["quantization_details"] = details
        squared = {k: v for k, v in squared.items() if v}
        if squared:
            extra["qnn"]["squares_as_mul"] = squared[next(iter(programs))] if single else squared
        return {"files": files, "programs": progs, "extra": extra}

    def placement(self, extra: dict) -> dict | None:
        """Per program, the share of compute nodes ONNX Runtime ran on the HTP (its profiler)."""
        place = (extra.get("qnn") or {}).get("placement")
        if not isinstance(place, dict):
            return None
        progs = {"forward": place} if "fraction" in place else place
        return block("NPU", {name: {"fraction": p["fraction"], "on_accelerator": p.get("on_npu"),
                                    "compute_nodes": p.get("compute_nodes"),
                                    "fallback": [{"node": r.get("node"), "op_type": r.get("op_type"),
                                                  "why": "ran on ONNX Runtime's CPU provider (no HTP kernel)"}
                                                 for r in p.get("cpu_fallback", [])]}
                             for name, p in progs.items() if isinstance(p, dict) and "fraction" in p})

    @staticmethod
    def _placement(model: Path, arrays, minimum, soc: dict, outputs: list, ctx: Path) -> dict:
        place = qnn_runtime().placement(model, arrays, provider_options=soc, outputs=outputs, write_context=ctx)
        if minimum is not None and place["fraction"] < minimum:
            ops = ", ".join(f"{r['node']} ({r['op_type']})" for r in place["cpu_fallback"])
            raise ConversionError(
                f"qnn-htp: only {place['fraction']:.1%} of compute nodes run on the NPU "
                f"({place['on_npu']}/{place['compute_nodes']}), below min_npu_fraction={minimum:g}; "
                f"fell back to CPU: {ops}. Replace those ops or lower min_npu_fraction.")
        return place

    @staticmethod
    def _epcontext(ctx: Path, arrays, soc: dict, ref: list) -> dict:
        """Load ``ctx`` (written by the placement session) and check it gives back ``ref``, the QDQ
        model's outputs on ``arrays`` from the placement run (same options; running the model again
        gave the same bits and cost seconds per generation program on the emulator)."""
        qnn = qnn_runtime()
        got = qnn.session(ctx, threads=1, provider_options=soc).run(None, _feed(ctx, arrays))
        roundtrip = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
                        for a, b in zip(ref, got))
        return {"file": ctx.name, "embed_mode": 1, **soc, "roundtrip_max_abs_err": roundtrip,
                "note": "compiled for the phone named by soc_model/htp_arch; load it with the QNN EP "
                        "(backend_path libQnnHtp.so) on that device; edgesdk.runtime loads it when the "
                        "manifest's SoC is the session's"}


def qnn_runtime():
    from edgesdk.runtime import qnn
    return qnn


def _feed(path: Path, arrays):
    import onnx
    names = [i.name for i in onnx.load(str(path), load_external_data=False).graph.input]
    return dict(zip(names, arrays))
