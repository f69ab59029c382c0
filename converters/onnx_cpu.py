"""`onnx-cpu`: ONNX via `torch.onnx.export(dynamo=True)`, run by ONNX Runtime's CPU EP.

When the dynamo exporter fails (e.g. "Failed to decompose the FX graph for ONNX compatibility"
on T5) or its model does not verify, the TorchScript exporter (`dynamo=False`) is tried next;
the manifest's ``onnx_exporter`` says which one made each file and why the first was not used.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import torch

from edgesdk.converters.calibration import is_mask_range
from edgesdk.converters.gen_calibration import for_program
from edgesdk.converters.onnx_weights import (fold_weight_transposes, global_average_pools, quantize_tied_table,
                                             strip_node_metadata)
from edgesdk.converters.quant_configs import CONFIGS, Fp16, Int8Dynamic, Int8Static, QuantConfig
from edgesdk.converters.recipes import int8_ops, model_kind
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError, ConversionError

# Above this many parameter bytes the weights go to an external `.onnx.data` file
# (protobuf's 2 GiB limit); below it one self-contained file is simpler to ship and hash.
EXTERNAL_DATA_BYTES = 1 << 30
DYNAMIC_OPS = ("MatMul", "Gemm")
# int8-static recipe, from ORT profiles of BERT-tiny and MobileNetV3-small (2 threads, benchmarks/RESULTS.md
# "int8 recipes"):
# - only the compute ops: with every op type quantized, the embedding Gather's table was dequantized
#   in full on every run (91 DequantizeLinear nodes, 92% of BERT-tiny's profiled time);
# - uint8 activations (int8 weights): with int8 ones ORT fused 41 of 52 MobileNetV3 Convs and 8 of
#   BERT-tiny's 16 MatMuls into QLinear kernels, the rest ran in float behind DequantizeLinear; with
#   uint8 all 52 Convs and all 16 MatMuls became QLinearConv / QLinearMatMul.
#   (x86 without VNNI can saturate u8 x s8 products; the accuracy gate catches that.)
STATIC_OPS = ("Conv", "MatMul", "Gemm")
# CNNs (one program, 2-D convolutions, no attention) also quantize what sits between the convolutions: with
# Conv/MatMul/Gemm only, a Relu/Clip between two QLinearConvs left a DequantizeLinear -> QuantizeLinear
# requantization (34 on MnasNet-0.5 and MobileNetV2) and residual Adds ran float; with these int8, ORT folds
# the activations into the convolutions' output scales and runs QLinearAdd: MobileNetV2 0.97x -> 0.53x fp32,
# MobileNetV4-conv-small 0.85x -> 0.59x (benchmarks/onnx_static_ops.py, 2 threads, 2026-12-02 16:47, RESULTS.md
# "int8-static on ONNX Runtime CNNs"). Concat stays float for now: with it ShuffleNet-v2 measured 1.02x against
# 0.81x without, though most other CNNs measured a little faster with it (the +Concat column; a noisy run).
# Squeeze-excite blocks too: their spatial means become GlobalAveragePool (`onnx_weights.global_average_pools`),
# and the pool, its Sigmoid gate and the gating Mul run as QLinearGlobalAveragePool / QLinearSigmoid / QLinearMul.
# Left float, each block ran DequantizeLinear -> ReduceMean -> ... -> Mul -> QuantizeLinear: int8-static / fp32
# RegNetY-400MF 0.72x -> 0.67x, GhostNet 0.84x -> 0.72x, EfficientNet-B0 (SiLU = Sigmoid x Mul) 1.86x -> 0.95x
# (still not faster: the recipe keeps deploying fp32 there), MobileNetV3-small 1.43x -> 1.23x (HardSigmoid has no
# int8 kernel) (benchmarks/int8_ceiling.py on zoo folders converted before / after, 8 interleaved rounds, 2 threads,
# VNNI Xeon, 2026-12-04 18:30; RESULTS.md "#17, fourteenth session").
# Transformers, and models whose convolutions are 1-D (Mamba's, wav2vec2's feature extractor), keep STATIC_OPS.
CNN_STATIC_OPS = STATIC_OPS + ("Relu", "Clip", "Add", "GlobalAveragePool", "Sigmoid", "Mul")


def _param_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


EXPORTERS = ("dynamo", "torchscript")


def _export_with(exporter: str, program, path: Path) -> None:
    dyn = program.dynamic
    if exporter == "dynamo":
        torch.onnx.export(
            program.module, program.example_inputs, str(path), dynamo=True,
            input_names=program.input_names, output_names=program.output_names,
            dynamic_shapes=dyn.torch_shapes(program.input_names) if dyn else None,
            external_data=_param_bytes(program.module) > EXTERNAL_DATA_BYTES, verbose=False,
        )
    else:  # TorchScript exporter: traces instead of torch.export, so graphs dynamo cannot decompose pass
        axes = {**dyn.inputs, **dyn.outputs} if dyn else None
        torch.onnx.export(
            program.module, program.example_inputs, str(path), dynamo=False,
            input_names=program.input_names, output_names=program.output_names, dynamic_axes=axes,
            opset_version=18, verbose=False,
        )


def export_onnx(program, path: Path, exporter: str | None = None) -> tuple[list[str], dict]:
    """Export one program to `path` with ``exporter`` (default: dynamo, falling back to TorchScript
    when dynamo fails); returns the files written (model plus external data) and what was used.
    Inside the pipeline, conversions of one model share a single-file export (`converters.export_memo`)."""
    from edgesdk.converters import export_memo
    # the default (None) is dynamo with a TorchScript fallback: it shares dynamo's exports, and keeps
    # its own only when dynamo made it
    facts = export_memo.reuse(f"onnx|{exporter or 'dynamo'}", torch.__version__, {program.name: program}, Path(path),
                              lambda: _facts(*_export_onnx(program, Path(path), exporter), path=Path(path)),
                              keep=lambda f: f["kept"])
    return ([Path(path).name] if facts["kept"] else facts["files"]), facts["info"]


def _facts(files: list[str], info: dict, path: Path) -> dict:
    # kept for later conversions only as one file (weights in external data would need renaming)
    return {"files": files, "info": info, "kept": files == [path.name] and "fallback_from" not in info}


def _export_onnx(program, path: Path, exporter: str | None = None) -> tuple[list[str], dict]:
    order = EXPORTERS if exporter is None else (exporter,)
    errors = []
    for name in order:
        before = set(path.parent.iterdir())
        try:
            _export_with(name, program, path)
        except Exception as e:  # the exporter's own failure: try the next one
            for p in set(path.parent.iterdir()) - before:
                p.unlink()
            errors.append(f"{name}: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            if name == order[-1]:
                raise ConversionError("onnx-cpu: every ONNX exporter failed: " + " | ".join(errors)) from e
            continue
        info = {"exporter": f"torch.onnx.export(dynamo={name == 'dynamo'})"}
        if errors:
            info["fallback_from"] = errors
        return sorted(p.name for p in set(path.parent.iterdir()) - before), info
    raise AssertionError("unreachable")


def module_path(node) -> str | None:
    """Dotted torch module path of an ONNX node, from the exporter's name-scope metadata."""
    import ast
    for p in node.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(p.value)
            except (ValueError, SyntaxError):
                return None
            inner = scopes[1:-1]
            # newer exporters name each scope by its full dotted path ('m.mlp', 'm.mlp.up'): the innermost
            # is the module; older ones give one name per level ('m', 'mlp', 'up'): join them
            if len(inner) > 1 and all(b.startswith(a + ".") for a, b in zip(inner, inner[1:])):
                return inner[-1]
            return ".".join(inner)
    return None


def nodes_of_modules(path: Path, modules: list[str]) -> list[str]:
    """Names of the ONNX nodes that implement the given torch modules (or their children)."""
    import onnx
    if not modules:
        return []
    m = onnx.load(str(path), load_external_data=False)
    out = []
    for n in m.graph.node:
        mp = module_path(n)
        if mp is not None and any(mp == mod or mp.startswith(mod + ".") for mod in modules):
            out.append(n.name)
    return out


class FeedReader:
    """ONNX Runtime calibration reader over validated sample tuples."""

    def __init__(self, names, samples):
        self._it = iter([{n: t.detach().cpu().contiguous().numpy() for n, t in zip(names, s)} for s in samples])

    def get_next(self):
        return next(self._it, None)


def quantize_onnx(src: Path, dst: Path, scheme, *, input_names, calibration, exclude,
                  int8_ops: str = "compute", cnn: bool = False, reduce_range: bool = True) -> dict:
    """Quantize an fp32 ONNX file per scheme (a name or its typed config,
    `converters.quant_configs`), dispatched by the config's type; returns what was done (for the
    manifest). ``cnn``: int8-static quantizes `CNN_STATIC_OPS` instead of `STATIC_OPS`;
    ``reduce_range``: int8 weights in 7 bits (`reduce_range`)."""
    cfg = scheme if isinstance(scheme, QuantConfig) else CONFIGS.get(scheme)
    kind = cfg if isinstance(cfg, type) else type(cfg)
    if kind not in QUANTIZERS:
        raise ConfigError(f"onnx-cpu cannot quantize with {scheme!r}; it offers "
                          f"{', '.join(c.scheme for c in QUANTIZERS)}")
    blocked = nodes_of_modules(src, exclude)
    if kind is Fp16:
        return _fp16(src, dst, blocked=blocked)
    import onnx
    # a tied embedding / head table: int8 rows for the Gather, its own copy for the head's quantizer
    model = onnx.load(str(src), load_external_data=False)
    external = any(i.data_location == onnx.TensorProto.EXTERNAL for i in model.graph.initializer)
    tied_tables = [] if external else quantize_tied_table(model, skip_nodes=set(blocked))  # > 1 GiB: left as is
    folded = 0 if external else fold_weight_transposes(model.graph)
    pools = global_average_pools(model) if cnn and kind is Int8Static and not external else 0
    rewritten = bool(tied_tables or folded or pools)
    if rewritten:
        src = dst.with_name(dst.stem + ".untied.onnx")
        onnx.save(model, str(src))
    del model
    try:
        # int8-static keeps a tied head fp32: per-tensor uint8 logits flip argmaxes, and the head quantized
        # as int8-dynamic does inside the static model cut the encdec student's greedy agreement from 99.7%
        # to 43.9% (benchmarks/generation_quant.py, 2026-12-02 09:44; RESULTS.md)
        heads = [n for t in tied_tables for n in t["head_nodes"]] if kind is not Int8Dynamic else []
        info = QUANTIZERS[kind](src, dst, blocked=blocked, input_names=input_names, calibration=calibration,
                                int8_ops=int8_ops, keep_float=heads, cnn=cnn, reduce_range=reduce_range)
    finally:
        if rewritten:
            src.unlink()
    return {**info, "tied_tables": tied_tables, **({"weight_transposes_folded": folded} if folded else {}),
            **({"spatial_means_as_global_pools": pools} if pools else {})}


def _fp16(src: Path, dst: Path, *, blocked, **_) -> dict:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True, node_block_list=blocked or None)
    onnx.save(model, str(dst))
    return {"tool": "onnxruntime.transformers.float16", "nodes_kept_float": blocked}


def reduce_range(options: dict) -> bool:
    """The ``reduce_range`` option, validated (default True). ONNX Runtime's u8s8 kernels on x86 without
    VNNI multiply-add byte pairs into int16 (vpmaddubsw), which saturates once 255 x |w| x 2 exceeds
    32767: with full-range int8 weights the gate failed on an AVX2 EPYC where it passed on an AVX-512 VNNI
    Xeon (an MLP's top-1 agreement 93.3% for int8-dynamic, an embedding's min cosine 0.83 for int8-static;
    CI 2026-12-04, tests/test_export_memo.py, tests/test_user_models.py). 7-bit weights (|w| <= 64) cannot
    saturate, run the same kernels, and an artifact verified on one host keeps its accuracy on another
    (onnxruntime's quantize_static docstring recommends it for x86 without VNNI)."""
    v = options.get("reduce_range", True)
    if not isinstance(v, bool):
        raise ConfigError(f"reduce_range must be True or False, got {v!r}")
    return v


def _weights(reduce_range: bool) -> str:
    return "int8 per-channel" + (", 7-bit range (reduce_range: no int16 saturation on x86 without VNNI)"
                                 if reduce_range else "")


def _int8_dynamic(src: Path, dst: Path, *, blocked, reduce_range: bool = True, **_) -> dict:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    # MatMul/Gemm only: ONNX Runtime's dynamic ConvInteger ran ~40x slower than fp32 Conv on
    # x86 (benchmarks/RESULTS.md); convolutions belong to int8-static
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True, reduce_range=reduce_range,
                     nodes_to_exclude=blocked, op_types_to_quantize=list(DYNAMIC_OPS))
    return {"tool": "onnxruntime.quantization.quantize_dynamic", "weights": _weights(reduce_range),
            "ops": list(DYNAMIC_OPS), "nodes_kept_float": blocked}


def _int8_static(src: Path, dst: Path, *, blocked, input_names, calibration, int8_ops, keep_float=(),
                 cnn: bool = False, reduce_range: bool = True) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import CalibrationDataReader, create_calibrator, save_tensors_data
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(FeedReader, CalibrationDataReader):
        pass

    STATIC_ACTIVATIONS = QuantType.QUInt8  # see STATIC_OPS
    pre = dst.with_name(dst.stem + ".pre.onnx")
    # shape inference only: graph optimisation would rename the nodes we map to torch modules
    try:
        quant_pre_process(str(src), str(pre), skip_optimization=True)
        pre_info = "quant_pre_process (shape inference)"
    except Exception as e:  # its symbolic pass fails on some graphs (MiniLM's Expand: len(None)); ONNX's own suffices
        quant_pre_process(str(src), str(pre), skip_optimization=True, skip_symbolic_shape=True)
        pre_info = f"quant_pre_process (ONNX shape inference only; symbolic failed: {type(e).__name__})"
    if int8_ops == "all":  # the tool's defaults: every op type it supports, int8 activations
        act, ops = QuantType.QInt8, None
    else:
        act, ops = STATIC_ACTIVATIONS, list(CNN_STATIC_OPS if cnn else STATIC_OPS)
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        # calibrate once here, so that mask-range tensors can be found before quantizing
        cal = create_calibrator(pre, None, augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=CalibrationMethod.MinMax)
        cal.collect_data(Reader(input_names, calibration))
        ranges = cal.compute_data()
        del cal
        masks = mask_nodes(pre, {n: td.range_value for n, td in ranges.items()})
        tied = tied_weight_nodes(pre)
        save_tensors_data(ranges, Path(tmp) / "ranges.json")
        quantize_static(str(pre), str(dst), None, quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range, activation_type=act, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=blocked + masks + tied + list(keep_float),
                        op_types_to_quantize=ops, calibration_cache_path=str(Path(tmp) / "ranges.json"))
    pre.unlink()
    return {"tool": "onnxruntime.quantization.quantize_static", "format": "QDQ",
            "weights": _weights(reduce_range), "preprocess": pre_info,
            "activations": f"{'uint8' if act == QuantType.QUInt8 else 'int8'} per-tensor (min-max)",
            "ops": "every supported op type" if ops is None else ops, "nodes_kept_float": blocked,
            "mask_nodes_kept_float": masks, "tied_weight_nodes_kept_float": tied + list(keep_float)}


# the scheme's typed config -> how onnx-cpu quantizes it
QUANTIZERS = {Fp16: _fp16, Int8Dynamic: _int8_dynamic, Int8Static: _int8_static}


def tied_weight_nodes(path: Path) -> list[str]:
    """MatMul/Gemm nodes whose weight initializer another node also reads (a language model's output
    head tied to its embedding): ONNX Runtime's per-channel static quantizer picks one channel axis
    per initializer, which does not fit the head's bias ("operands could not be broadcast")."""
    import onnx
    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    users = Counter(x for n in graph.node for x in set(n.input) if x in inits)
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and any(users[x] > 1 for x in n.input
                                                                                   if x in inits)]


def mask_nodes(path: Path, ranges: dict) -> list[str]:
    """Nodes that produce or consume a tensor whose calibrated range is a mask's
    (`calibration.is_mask_range`): int8 cannot hold both the mask and the scores it is added to."""
    import onnx
    wide = {n for n, (lo, hi) in ranges.items() if is_mask_range(lo, hi)}
    graph = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in graph.node if wide & (set(n.input) | set(n.output))]


def onnx_summary(path: Path) -> dict:
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    ops = Counter(n.op_type for n in m.graph.node)
    return {"opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), default=None),
            "nodes": sum(ops.values()), "op_types": dict(ops.most_common())}


@register_target
class OnnxCpu(Converter):
    name = "onnx-cpu"
    device = "cpu"
    format = "onnx"
    backend = "onnxruntime"
    description = "ONNX Runtime, CPU execution provider"
    convert_packages = ("onnx", "onnxscript")
    run_packages = ("onnxruntime",)
    install_hint = "pip install onnx onnxscript onnxruntime"
    quantization = ("fp32", "int8-dynamic", "int8-static", "fp16")
    recommended = "int8-static"
    recommended_multi_program = "int8-dynamic"
    # transformers: dynamic MatMuls beat static QDQ on BERT-tiny (benchmarks/int8_recipes.py, RESULTS.md)
    recommended_by_kind = {"transformer": "int8-dynamic"}
    # CNNs with HardSwish/SiLU/GELU: int8 ran slower than fp32 (measurements: converters/recipes.py)
    fp32_for_float_activation_convs = ("ONNX Runtime runs HardSwish/SiLU/GELU in float between Q/DQ pairs (measured "
                                       "1.47-1.98x fp32 p50 on EfficientNet-B0 and MobileNetV3-small, 1.02-2.96x "
                                       "on the zoo's GELU CNNs)")
    # CNNs on a CPU without int8 dot-product instructions (x86 without VNNI/AMX): int8 ran slower too
    fp32_for_convs_without_int8_dot = (
        "the deployment CPU has no int8 dot-product instructions (x86 without VNNI or AMX; this machine's unless "
        "EDGESDK_CPU_INT8_DOT=1 says the deployment CPU has them), where ONNX Runtime's int8 convolutions run no "
        "faster than fp32 ones (1.05-1.35x the fp32 kernels they replace on the zoo's ReLU CNNs, AVX2 EPYC) and "
        "int8-static measured 1.05-1.35x fp32 p50 on ResNet-18, GhostNet, MnasNet, MobileNetV2, ShuffleNetV2, "
        "SqueezeNet and RegNetY, each in at least one of two runs (benchmarks/onnx_int8_headroom.py, RESULTS.md "
        "\"#17, ninth session\")")
    calibrated = ("int8-static",)
    dynamic_shapes = True
    exporters = EXPORTERS
    options = {"int8_ops": "int8-static: 'compute' (default: Conv/MatMul/Gemm with uint8 activations, the measured "
                           "faster recipe) or 'all' (every op type onnxruntime can quantize, int8 activations)",
               "reduce_range": "int8 schemes: 7-bit weights (default True), so that x86 CPUs without VNNI (AVX2, "
                               "AVX-512 before Cascade Lake) do not saturate; False only for a fleet known to have "
                               "VNNI or Arm dot-product"}

    def export(self, programs, workdir, *, quantize, options):
        ops = int8_ops(options)
        reduce = reduce_range(options)
        files, progs, summary, extra, used = [], {}, {}, {}, {}
        module = next(iter(programs.values())).module
        cnn = len(programs) == 1 and model_kind(module) != "transformer" and any(
            isinstance(m, torch.nn.Conv2d) for m in module.modules())
        for name, prog in programs.items():
            fname = "model.onnx" if len(programs) == 1 else f"{name}.onnx"
            if quantize == "fp32":
                written, used[name] = export_onnx(prog, workdir / fname, options.get("exporter"))
                files += written
            else:
                fp32 = workdir / f"{name}.fp32.onnx"
                written, used[name] = export_onnx(prog, fp32, options.get("exporter"))
                extra[name] = quantize_onnx(fp32, workdir / fname, quantize, input_names=prog.input_names,
                                            calibration=for_program(options.get("calibration"), name),
                                            exclude=for_program(options.get("exclude"), name) or [],
                                            int8_ops=ops, cnn=cnn, reduce_range=reduce)
                for f in written:
                    (workdir / f).unlink()
                files += sorted(p.name for p in workdir.iterdir() if p.name.startswith(fname))
            strip_node_metadata(workdir / fname)  # the exporter's stack traces: ~9% of a small file
            progs[name] = (fname, name)
            summary[name] = onnx_summary(workdir / fname)
        return {"files": files, "programs": progs,
                "extra": {"onnx": summary, "onnx_exporter": used,
                          **({"quantization_details": extra} if extra else {})}}


_Reader = FeedReader  # the earlier name, while other branches still import it
