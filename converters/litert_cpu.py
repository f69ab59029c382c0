"""`litert-cpu`: `.tflite` via litert-torch, run by LiteRT (`ai_edge_litert`) with XNNPACK."""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path

from edgesdk.converters import litert_classes as size_classes
from edgesdk.converters.calibration import is_mask_range
from edgesdk.converters.gen_calibration import for_program
from edgesdk.converters.litert_names import shorten_tensor_names
from edgesdk.converters.recipes import int8_ops, model_kind
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.manifest import natural_order

SINGLE_SIGNATURE = "serving_default"
# int8-static recipe ("compute", the default): every op type the quantizer supports except those that
# LiteRT's XNNPACK delegate does not take in int8 in these graphs, with float model I/O. Found by counting
# delegate partitions while leaving one op type float at a time (benchmarks/litert_static_ops.py,
# RESULTS.md "int8 recipes"; 2026-12-02, ai-edge-litert 2.3.0, ai-edge-quantizer 0.10.0):
# - every op type int8 (static_wi8_ai8): an int8 HARD_SWISH splits MobileNetV3-small into 20 partitions
#   (3.4x fp32); on BERT-tiny int8 ADD and SUB (15 partitions), on EfficientFormerV2 also DIV and MAXIMUM
#   (29), with TFLite's own int8 kernels between them; LayerNorm pieces, GELU, SOFTMAX and BATCH_MATMUL
#   split BERT-tiny into 24 when int8 (the first measurement);
# - FULLY_CONNECTED and convolutions only (the recipe before): one partition, but each float op between
#   two convolutions (MUL, MEAN, PAD, HARD_SWISH ...) costs a dequantize/quantize pair: MobileNetV3-small
#   1.45x, MnasNet 1.20x, MobileNetV4-conv-small 1.20x fp32 (2 threads, 15:41 UTC, alone on the machine);
# - every op int8 but these: as many partitions as before on 14 of 15 zoo CNNs (EdgeNeXt 4 -> 7): 0.65x,
#   0.61x, 0.51x (the 15 CNNs: 0.34-1.22x).
# ADD is not in the list: the ADDs that split the delegate stay float after calibration (`float_add_scopes`): those
# that broadcast (a bias, a mask, LayerNorm's eps and shift) and those whose scale ratio XNNPACK refuses. A residual
# ADD of two activations is int8: MnasNet-0.5 1.09x -> 1.04x fp32, GhostNet 0.89x -> 0.84x, RepViT 0.49x -> 0.41x,
# MobileNetV3-small 1.01x -> 0.96x, partitions unchanged on 15 zoo CNNs (with every ADD int8: ConvNeXt-atto 1 -> 31,
# EdgeNeXt 7 -> 39, FastViT 1 -> 21; benchmarks/litert_static_ops.py --adds, 8 rounds, cpu-exclusive, 2026-12-03 07:38)
STATIC_FLOAT_OPS = ("HARD_SWISH", "GELU", "SOFTMAX", "SQUARED_DIFFERENCE", "RSQRT", "BATCH_MATMUL",
                    "SUB", "DIV", "MAXIMUM")
# depthwise convolutions with a kernel side above this stay float in int8-static (`large_depthwise_scopes`):
# with int8 7x7 ones the zoo's int8-static ran 4.62x fp32 on ConvNeXt-atto, 2.78x EdgeNeXt, 4.87x FastViT;
# with them float 0.79x, 0.93x, 1.03x (benchmarks/recommended_vs_fp32.py, 10 interleaved rounds, 2 threads,
# cpu-exclusive, 2026-12-02 19:45 / 19:58). Depthwise ones with a depth multiplier (FastViT's grouped 3x3 and 7x7,
# 2 outputs per group) stay float too: FastViT 1.02x -> 0.90x. Not all depthwise ones: plain 3x3/5x5 int8 ones
# pay (MobileNetV2 0.73x, all float 0.88x; EfficientNet 0.59x / 0.67x; benchmarks/litert_static_ops.py
# --depthwise, 8 rounds, cpu-exclusive, 20:01 and 20:03; RESULTS.md "#17, sixth session")
FLOAT_DEPTHWISE_ABOVE = 5
# transformers keep the recipe before: with the ops between the FULLY_CONNECTEDs int8 as well (LayerNorm
# means, scales) the real MiniLM's sentence embeddings fell to mean cosine 0.64 of fp32 (0.94 min with
# FULLY_CONNECTED only; int8-dynamic, their recommended scheme, 0.998)
TRANSFORMER_STATIC_OPS = ("FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D")
# the model's own inputs and outputs stay float: the runtime would otherwise quantize them in numpy
STATIC_FLOAT_IO = ("INPUT", "OUTPUT")
# int8-dynamic keeps depthwise convolutions float: their weights are k x C (Mamba's conv1d: 4 x 384, 1% of
# the student), but the hybrid kernel quantizes their activations per tensor; with every other group float,
# an int8 conv1d alone cost the Mamba student 5.3 points of greedy agreement (92.7% vs 98.0%, 40 held-out
# prompts; benchmarks/litert_groups.py)
# It keeps the other convolutions float too: LiteRT's dynamic-range (hybrid) convolution made LeViT-128S's
# int8-dynamic 1.12x fp32, with its convolutions float 0.78x (DeiT-tiny, one patch conv, 0.53x either way;
# Whisper's encoder 0.64x -> 0.70x; benchmarks/litert_static_ops.py --dynamic, 2026-12-02 15:55, RESULTS.md
# "int8-static on LiteRT CNNs").
DYNAMIC_FLOAT_OPS = ("DEPTHWISE_CONV_2D", "CONV_2D")


def export_tflite(programs, path) -> dict[str, str]:
    """Write every program as a signature of one `.tflite`; returns program -> signature name.
    The fp32 file of litert-cpu's every scheme and of litert-gpu: made once per run where the
    pipeline shares exports (`converters.export_memo`)."""
    from importlib.metadata import version

    from edgesdk.converters import export_memo
    return export_memo.reuse("tflite", version("litert-torch"), programs, Path(path),
                             lambda: _export_tflite(programs, path))


def _export_tflite(programs, path) -> dict[str, str]:
    from edgesdk.converters.deferred_codegen import deferred_recompiles
    with deferred_recompiles():  # litert-torch's passes recompile ~130 times per Mamba export, ~4 s
        return _export_tflite_now(programs, path)


def _export_tflite_now(programs, path) -> dict[str, str]:
    import litert_torch
    items = list(programs.items())
    if len(items) == 1:
        (_, prog), = items
        model = litert_torch.convert(_resizable(prog) if prog.dynamic else prog.module, prog.example_inputs)
        sigs = {items[0][0]: SINGLE_SIGNATURE}
        if prog.dynamic:
            model.export(str(path))
            if _follows_range(path, prog):
                return sigs
            return size_classes.export(items[0][0], prog, path)
    else:
        conv = None
        for name, prog in items:
            conv = (litert_torch if conv is None else conv).signature(
                name, _resizable(prog) if prog.dynamic else prog.module, prog.example_inputs)
        model = conv.convert()
        sigs = {name: name for name, _ in items}
    model.export(str(path))
    return sigs


def _resizable(prog):
    """A module LiteRT can resize along the program's dynamic dims.

    litert-torch 0.10 lowers most ops through a JAX bridge that needs concrete sizes, so a
    symbolic export fails even on ``flatten`` ("Shapes must be 1D sequences of concrete values").
    Instead: torch.export with the dynamic dims, decompose, and write every view/reshape whose
    target size has one symbolic entry with -1 there; re-exported at the example size, the
    `.tflite` then takes other sizes through `resize_tensor_input`. Ops that bake a size in
    (positions sliced to the example length, for one) do not follow: the verification at the
    range's ends catches that, and the conversion fails with a pointer to shape classes.
    """
    import torch
    ep = torch.export.export(prog.module, prog.example_inputs,
                             dynamic_shapes=prog.dynamic.torch_shapes(prog.input_names, prog.module)
                             ).run_decompositions()
    gm = ep.module()
    reshapes = (torch.ops.aten.view.default, torch.ops.aten.reshape.default, torch.ops.aten._unsafe_view.default,
                torch.ops.aten.view_copy.default)
    for n in gm.graph.nodes:
        if n.op == "call_function" and n.target in reshapes:
            size = list(n.args[1])
            sym = [i for i, d in enumerate(size) if not isinstance(d, int)]
            if len(sym) == 1 and -1 not in size:
                size[sym[0]] = -1
                n.args = (n.args[0], size, *n.args[2:])
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return gm


def _follows_range(path, prog) -> bool:
    """Does the resizable `.tflite` match PyTorch at both ends of every dynamic range? When it
    does not (sizes baked in), `export_tflite` falls back to size classes."""
    return all(size_classes.matches(path, SINGLE_SIGNATURE, prog, point) for point in prog.dynamic.points())


def signature_io(path, sigs: dict[str, str], programs: dict | None = None) -> dict:
    """The tflite tensor names of each signature in PyTorch argument order.

    Outputs named after the model's own output names (dict / ModelOutput keys) follow the
    program's order; generic ones (output_0, output_1...) are in natural order.
    """
    from ai_edge_litert.interpreter import Interpreter
    listed = Interpreter(model_path=str(path)).get_signature_list()
    out = {}
    for prog, sig in sigs.items():
        names = list(listed[sig]["outputs"])
        own = list(programs[prog].output_names) if programs and prog in programs else []
        outs = own if own and sorted(own) == sorted(names) else natural_order(names)
        out[prog] = {"inputs": natural_order(listed[sig]["inputs"]), "outputs": outs}
    return out


def scope_regex(module: str) -> str:
    """Regex over LiteRT tensor names ('<pkg.Class>_<attr>/...') selecting one torch module's ops."""
    parts = [re.escape(p) for p in module.split(".")]
    return r".*?(^|/)[^/;]*_" + r"/[^/;]*_".join(parts) + r"([/;].*)?$"


def op_scopes(path, modules) -> list[str]:
    """Exact ai-edge-quantizer scopes of the ops that touch a torch module's tensors.

    The quantizer matches recipes against an op's output tensor names, but a model's last
    layer writes to the graph output ('serving_default_output_0_output'), which carries no
    module name. Its weight tensors do, so we select ops by any input or output name.
    """
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    pats = [re.compile(scope_regex(m)) for m in modules]
    model = tfu.read_model(str(path))
    scopes = []
    for sg in model.subgraphs:
        for op in sg.operators:
            names = [tfu.get_tensor_name(sg.tensors[i]) for i in list(op.inputs) + list(op.outputs) if i != -1]
            if any(p.search(n) for p in pats for n in names if n):
                scopes.append(tfu.get_op_scope(op, sg.tensors))
    return scopes


def module_scopes(path, module: str) -> tuple[str, list[str]]:
    """(the name matched, op scopes) for keeping one torch module in float. LiteRT names tensors by the
    modules the traced forward passed through, so a block reached by iterating a ModuleList (Mamba's
    ``model.blocks.2.mixer.in_proj``) appears without its index and root (``.../Mamba2Mixer_mixer/
    Linear_in_proj``): leading parts are dropped until a suffix matches, which keeps that module of every
    block in float (more than asked, never less). None matching: ``(module, [])``."""
    parts = module.split(".")
    for i in range(len(parts)):
        if parts[i].isdigit():
            continue
        scopes = op_scopes(path, [".".join(parts[i:])])
        if scopes:
            return ".".join(parts[i:]), scopes
    return module, []


def _scopes_of(path, op_name: str, keep) -> list[str]:
    """ai-edge-quantizer scopes of the ``op_name`` ops for which ``keep(model, subgraph, op)`` is true."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    model = tfu.read_model(str(path))
    scopes = []
    for sg in model.subgraphs:
        for op in sg.operators:
            code = model.operatorCodes[op.opcodeIndex]
            if tfu.TFL_OP_CODE_TO_NAME.get(max(code.builtinCode, code.deprecatedBuiltinCode)) == op_name \
                    and keep(model, sg, op):
                scope = tfu.get_op_scope(op, sg.tensors)
                if scope not in scopes:
                    scopes.append(scope)
    return scopes


def large_depthwise_scopes(path, above: int | None = FLOAT_DEPTHWISE_ABOVE) -> list[str]:
    """ai-edge-quantizer scopes of the DEPTHWISE_CONV_2D ops whose kernel side is above ``above``, or
    that have more than one output channel per input channel (a depth multiplier; None: none)."""
    if above is None:
        return []

    def large(model, sg, op):
        shape = list(sg.tensors[op.inputs[1]].shape)  # [1, kh, kw, out channels]
        cin = list(sg.tensors[op.inputs[0]].shape)[-1:]
        return len(shape) == 4 and (max(shape[1:3]) > above or bool(cin and 0 < cin[0] < shape[3]))
    return _scopes_of(path, "DEPTHWISE_CONV_2D", large)


# XNNPACK's int8 ADD takes each input-to-output scale ratio in [2**-10, 2**8) only (xnn_create_add_nd_qs8); an
# ADD outside it runs on TFLite's own kernel and splits the delegate. A random-weight layer-scale branch (ConvNeXt's
# gamma starts at 1e-6) is 1e-6 of the skip path: ConvNeXt-atto 1 -> 13 partitions with such ADDs int8
XNNPACK_ADD_SCALE_RATIO = (2.0 ** -10, 2.0 ** 8)


def float_add_scopes(path, ranges: dict | None = None) -> list[str]:
    """ai-edge-quantizer scopes of the ADD ops that int8-static keeps float: those that broadcast (one input
    is a constant, or the two inputs' shapes differ, which a residual ADD of two activations never does)
    and, given calibrated ``ranges`` (tensor name -> min / max), those whose input-to-output range ratio is
    outside `XNNPACK_ADD_SCALE_RATIO` (with a factor 2 of margin)."""
    import numpy as np
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    lo, hi = XNNPACK_ADD_SCALE_RATIO[0] * 2, XNNPACK_ADD_SCALE_RATIO[1] / 2

    def span(t):
        q = (ranges or {}).get(tfu.get_tensor_name(t)) or {}
        return float(np.max(q["max"]) - np.min(q["min"])) if "min" in q and "max" in q else None

    def refused(model, sg, op):
        a, b = (sg.tensors[i] for i in op.inputs[:2])
        if list(a.shape) != list(b.shape) or any(
                t.buffer and model.buffers[t.buffer].data is not None and len(model.buffers[t.buffer].data)
                for t in (a, b)):
            return True
        out = span(sg.tensors[op.outputs[0]]) if ranges else None
        return bool(out) and any(x is not None and not lo <= x / out < hi for x in (span(a), span(b)))
    return _scopes_of(path, "ADD", refused)


def keep_adds_float(qt, src, ranges: dict) -> int:
    """After calibration: the CNN recipe's ADDs that XNNPACK would not take in int8 stay float; returns how many."""
    from ai_edge_quantizer import qtyping
    scopes = float_add_scopes(src, ranges)
    for scope in scopes:
        qt.update_quantization_recipe(regex="^" + re.escape(scope) + "$", operation_name=qtyping.TFLOperationName.ADD,
                                      algorithm_key="no_quantize")
    return len(scopes)


def static_quantizer(src, kind: str, float_ops=STATIC_FLOAT_OPS, float_depthwise_above=FLOAT_DEPTHWISE_ABOVE):
    """(ai-edge-quantizer `Quantizer`, description) of the int8-static recipe for a model of ``kind``
    (`recipes.model_kind`): a transformer's FULLY_CONNECTEDs and convolutions, or every op type but
    ``float_ops`` (and the model's I/O; the ADDs XNNPACK would not take follow after calibration,
    `keep_adds_float`); either way depthwise convolutions with kernels above ``float_depthwise_above`` stay
    float."""
    from ai_edge_quantizer import qtyping, quantizer, recipe, recipe_manager
    dw = large_depthwise_scopes(src, float_depthwise_above)
    if kind == "transformer":
        rm = recipe_manager.RecipeManager()
        for op in TRANSFORMER_STATIC_OPS:
            rm.add_static_config(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                 activation_num_bits=8, weight_num_bits=8)
        qt = quantizer.Quantizer(str(src), rm.get_quantization_recipe())
        desc = {"tool": "ai-edge-quantizer static (int8 weights and activations)", "weights": "int8 per-channel",
                "activations": "int8 per-tensor static", "ops": list(TRANSFORMER_STATIC_OPS)}
    else:
        qt = quantizer.Quantizer(str(src), recipe.static_wi8_ai8())
        for op in tuple(float_ops) + STATIC_FLOAT_IO:
            qt.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                          algorithm_key="no_quantize")
        desc = {"tool": "ai-edge-quantizer static_wi8_ai8", "weights": "int8 per-channel",
                "activations": "int8 per-tensor static", "ops": "every supported op type but the float ones",
                "float_ops": list(float_ops), "io": "float32"}
    for scope in dw:
        qt.update_quantization_recipe(regex="^" + re.escape(scope) + "$",
                                      operation_name=qtyping.TFLOperationName.DEPTHWISE_CONV_2D,
                                      algorithm_key="no_quantize")
    if dw:
        desc["large_depthwise_convs_kept_float"] = len(dw)
    return qt, desc


def quantize_tflite(src, dst, scheme: str, *, signatures: dict, io: dict, calibration, exclude,
                    int8_ops: str = "compute", kind: str = "conv") -> dict:
    """Quantize an fp32 .tflite with ai-edge-quantizer (float I/O kept where the scheme allows);
    ``kind`` (`recipes.model_kind`) picks the int8-static op set."""
    from ai_edge_quantizer import qtyping, quantizer, recipe
    if scheme == "fp16":
        qt = quantizer.Quantizer(str(src))
        qt.update_quantization_recipe(
            regex=".*", operation_name="*", algorithm_key="float_casting",
            op_config=qtyping.OpQuantizationConfig(
                weight_tensor_config=qtyping.TensorQuantizationConfig(num_bits=16, dtype=qtyping.TensorDataType.FLOAT),
                compute_precision=qtyping.ComputePrecision.FLOAT, explicit_dequantize=True))
        desc = {"tool": "ai-edge-quantizer float_casting", "weights": "float16"}
    elif scheme == "int8-dynamic":
        qt = quantizer.Quantizer(str(src), recipe.dynamic_wi8_afp32())
        for op in DYNAMIC_FLOAT_OPS:
            qt.update_quantization_recipe(regex=".*", operation_name=getattr(qtyping.TFLOperationName, op),
                                          algorithm_key="no_quantize")
        desc = {"tool": "ai-edge-quantizer dynamic_wi8_afp32", "weights": "int8 per-channel",
                "activations": "int8 dynamic", "float_ops": list(DYNAMIC_FLOAT_OPS)}
    elif scheme == "int8-weight":
        qt = quantizer.Quantizer(str(src), recipe.weight_only_wi8_afp32())
        desc = {"tool": "ai-edge-quantizer weight_only_wi8_afp32", "weights": "int8 per-channel",
                "activations": "float32 (weights dequantized at load: fp32 speed, 1/4 the weights)"}
    elif int8_ops == "all":  # the tool's default: every op type it supports
        qt = quantizer.Quantizer(str(src), recipe.static_wi8_ai8())
        desc = {"tool": "ai-edge-quantizer static_wi8_ai8", "weights": "int8 per-channel",
                "activations": "int8 per-tensor static", "ops": "every supported op type"}
    else:
        qt, desc = static_quantizer(src, kind)
    matched = {m: module_scopes(src, m) for m in exclude or []}
    for scope in sorted({s for _, scopes in matched.values() for s in scopes}):
        qt.update_quantization_recipe(regex="^" + re.escape(scope) + "$", operation_name="*",
                                      algorithm_key="no_quantize")
    if any(as_ != m for m, (as_, _) in matched.items()):  # said in the manifest: more may stay float than asked
        desc["modules_matched_as"] = {m: {"as": as_, "ops": len(scopes)} for m, (as_, scopes) in matched.items()}
    result = None
    if qt.need_calibration:
        data = {}
        for prog, sig in signatures.items():
            names = io[prog]["inputs"]
            # calibration: one list, or per program (a generation model) / per size-class signature
            data[sig] = [{n: _litert_dtype(t) for n, t in zip(names, sample)}
                         for sample in for_program(calibration, prog)]
        result = qt.calibrate(data)
        if scheme == "int8-static" and int8_ops == "compute" and kind != "transformer":
            desc["adds_kept_float"] = keep_adds_float(qt, src, result)
        masks = mask_scopes(src, result)
        for scope in masks:  # int8 cannot hold a -1e9 mask and the scores it is added to
            qt.update_quantization_recipe(regex="^" + re.escape(scope) + "$", operation_name="*",
                                          algorithm_key="no_quantize")
        if masks:
            desc["mask_ops_kept_float"] = masks
    qt.quantize(result).export_model(str(dst), overwrite=True)
    return {**desc, "modules_kept_float": list(exclude)}


def mask_scopes(path, ranges: dict) -> list[str]:
    """Scopes of the ops that produce or read a tensor whose calibrated range is a mask's
    (`calibration.is_mask_range`)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    wide = {n for n, q in ranges.items() if "min" in q and "max" in q and is_mask_range(q["min"], q["max"])}
    if not wide:
        return []
    model = tfu.read_model(str(path))
    scopes = []
    for sg in model.subgraphs:
        for op in sg.operators:
            names = {tfu.get_tensor_name(sg.tensors[i]) for i in list(op.inputs) + list(op.outputs) if i != -1}
            if names & wide:
                scope = tfu.get_op_scope(op, sg.tensors)
                if scope not in scopes:
                    scopes.append(scope)
    return scopes


def _all_programs(exclude) -> list:
    """One .tflite holds every signature: modules kept in float for any program stay float in all."""
    if isinstance(exclude, dict):
        return sorted({m for mods in exclude.values() for m in mods})
    return list(exclude or [])


def _litert_dtype(t):
    a = t.detach().cpu().contiguous().numpy()
    return a.astype("int32") if a.dtype == "int64" else a


@register_target
class LiteRtCpu(Converter):
    name = "litert-cpu"
    device = "cpu"
    format = "tflite"
    backend = "litert"
    description = "LiteRT (ai-edge-litert) with XNNPACK on CPU"
    convert_packages = ("litert_torch",)
    run_packages = ("ai_edge_litert",)
    install_hint = "pip install litert-torch ai-edge-litert"
    quantization = ("fp32", "int8-dynamic", "int8-static", "int8-weight", "fp16")
    recommended = "int8-static"
    # generation students, 100 held-out prompts x 32 greedy tokens vs fp32 (benchmarks/generation_quant.py,
    # 2026-12-02 09:44): int8-dynamic keeps encdec 95.5% / Mamba 96.6% of tokens at 0.29x the size and
    # 0.64x / 0.68x fp32's time per token; fp16 only halves the size. Demo gate (8 held-out prompts): both pass.
    recommended_multi_program = "int8-dynamic"
    # transformers: on the real MiniLM int8-static kept min cosine 0.937 (below the 0.99 gate),
    # int8-dynamic 0.997 at ~0.6x fp32 on BERT-tiny (benchmarks/int8_recipes.py, RESULTS.md)
    recommended_by_kind = {"transformer": "int8-dynamic"}
    # inverted-residual CNNs on a CPU without int8 dot-product instructions: int8-static measured slower (recipes.py);
    # EfficientNet-B0, 0.92x there (depthwise int8 or float alike), is the gain this rule gives up
    fp32_for_inverted_residuals_without_int8_dot = (
        "an inverted-residual CNN (MobileNetV2-style blocks) on a deployment CPU without int8 dot-product instructions "
        "(x86 without VNNI or AMX; this machine's unless EDGESDK_CPU_INT8_DOT=1 says the deployment CPU has them): "
        "int8-static measured 1.11-1.19x fp32 p50 on MobileNetV2, MNASNet and MobileNetV3-small, and keeping their "
        "depthwise convolutions float made it worse (benchmarks/litert_static_ops.py --depthwise, RESULTS.md \"#17, "
        "eleventh session\")")
    calibrated = ("int8-static",)
    dynamic_shapes = True
    options = {"int8_ops": "int8-static: 'compute' (default: FULLY_CONNECTED and convolutions, the measured faster "
                           "recipe) or 'all' (every op type ai-edge-quantizer supports)"}

    def export(self, programs, workdir, *, quantize, options):
        ops = int8_ops(options)
        path = workdir / "model.tflite"
        src = path if quantize == "fp32" else workdir / "fp32.tflite"
        sigs = export_tflite(programs, src)
        io = signature_io(src, sigs, programs)
        extra = {"litert_io": io}
        classes = size_classes.entry(src, programs)
        if classes:  # one signature per size class (see converters.litert_classes)
            extra["litert_classes"] = classes
        if quantize != "fp32":
            qsigs, qio, calib = sigs, io, options.get("calibration")
            if classes and calib is not None:  # calibrate every class: samples cut / padded to its size
                (prog_name, c), = classes.items()
                prog = programs[prog_name]
                qsigs = {s: s for s in c["signatures"]}
                qio = c["io"]
                calib = {s: [size_classes.fit(tuple(x), prog, n) for x in calib]
                         for s, n in zip(c["signatures"], c["sizes"])}
            with contextlib.redirect_stdout(sys.stderr):  # the quantizer prints a size summary
                extra["quantization_details"] = quantize_tflite(
                    src, path, quantize, signatures=qsigs, io=qio, calibration=calib,
                    exclude=_all_programs(options.get("exclude")), int8_ops=ops,
                    kind=model_kind(next(iter(programs.values())).module))
            src.unlink()
        shorten_tensor_names(path)  # torch scope paths as tensor names: ~4% of a small quantized file
        return {"files": ["model.tflite"], "programs": {p: ("model.tflite", s) for p, s in sigs.items()},
                "extra": extra}
