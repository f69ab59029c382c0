"""`executorch-xnnpack`: `.pte` lowered to ExecuTorch's XNNPACK delegate (mobile CPU)."""

from __future__ import annotations

import contextlib
import operator

import torch

from edgesdk.converters.embedding_rows import int8_rows, tied_heads
from edgesdk.converters.gen_calibration import for_program
from edgesdk.converters.placement import from_partition
from edgesdk.converters.registry import Converter, register_target
from edgesdk.runtime.errors import ConfigError
from edgesdk.runtime.machine import int8_dot_product


def delegation_report(edge, method: str) -> dict:
    """Which ops the partitioner delegated and which stayed on portable kernels."""
    from executorch.devtools.backend_debug import get_delegation_info
    info = get_delegation_info(edge.exported_program(method).graph_module)
    not_delegated = {op: b.non_delegated for op, b in info.delegation_by_operator.items() if b.non_delegated}
    total = info.num_delegated_nodes + info.num_non_delegated_nodes
    return {"delegated_subgraphs": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
            "non_delegated_nodes": info.num_non_delegated_nodes,
            "delegated_fraction": info.num_delegated_nodes / total if total else 0.0,
            "not_delegated_ops": not_delegated,
            # what runs on ExecuTorch's portable (reference) kernels: the usual cause of a slow .pte
            "outside_delegate": outside_delegate(not_delegated, total)}


# int8-static keeps depthwise convolutions float when their kernel side is above this, or when they have a
# depth multiplier (None: none float). Above 5 first, as litert-cpu does: ConvNeXt-atto 0.95x -> 0.80x fp32,
# EdgeNeXt 0.94x -> 0.84x, FastViT-T8 1.03x -> 0.83x; MobileNetV2 (3x3 only) 0.69x either way, all float 0.77x
# (benchmarks/xnnpack_depthwise.py, 2026-12-03). Above 3 since: ExecuTorch's XNNPACK build runs an int8 5x5
# depthwise convolution at 1.6-1.8x its fp32 one and 1.4-1.8x LiteRT's int8 one (3x3: 0.85x and 1.1x;
# benchmarks/xnnpack_builds.py), and with 5x5 ones float too int8-static / fp32 went MobileNetV3-small 0.71x ->
# 0.62x, MNASNet 0.76x -> 0.71x, EfficientNet-B0 0.76x -> 0.70x, GhostNet 0.72x -> 0.69x (xnnpack_depthwise.py
# --variants, 8 interleaved rounds, AMD EPYC with AVX-512 VNNI, RESULTS.md "#17, twenty-eighth session")
FLOAT_DEPTHWISE_ABOVE = 3
# Where the deployment CPU has no int8 dot-product instructions (x86 without VNNI or AMX; `depthwise_rule`)
# every depthwise convolution stays float: there XNNPACK's int8 depthwise kernels ran 2.2-3.0x its fp32 ones
# (MobileNetV2's 17: 1.61 -> 3.49 ms; benchmarks/inverted_residuals.py kernels) and its int8 1x1 convolutions no
# faster than fp32 (9.72 -> 9.60 ms). int8-static / fp32, depthwise int8 -> float: MobileNetV2 1.23x -> 1.15x,
# MNASNet-0.5 1.32x -> 1.11x,
# MobileNetV3-small 1.24x -> 1.02x, EfficientNet-B0 1.32x -> 1.07x, GhostNet 0.92x -> 0.88x, ShuffleNetV2 0.92x ->
# 0.93x (benchmarks/xnnpack_depthwise.py, 6 interleaved rounds, AVX2 EPYC, 2026-12-04 10:00; RESULTS.md "#17,
# eleventh session"). With VNNI, MobileNetV2's 3x3 ones pay in int8 (0.69x, all float 0.77x, above).
FLOAT_DEPTHWISE_WITHOUT_INT8_DOT = 0

# bookkeeping nodes that cost nothing at run time: not worth listing as "outside the delegate"
FREE_OPS = ("getitem", "executorch_call_delegate", "alloc", "view_copy", "sym_size", "_assert")


def outside_delegate(not_delegated: dict, total: int) -> list[dict]:
    """Compute ops left outside a delegate: [{op, count, share of nodes}] by count."""
    rows = [{"op": op, "count": n, "share": n / total if total else 0.0}
            for op, n in not_delegated.items() if not any(f in op for f in FREE_OPS)]
    return sorted(rows, key=lambda r: -r["count"])


# whether `layer_norm_as_mean` also decomposes norms over several rows. Off: it runs without the crash
# (below) now, but measured slower than the portable kernel's fused norm on every model tried, though
# with fewer delegate calls (fp32 after/before, 6 interleaved rounds, 2 threads: Mamba prefill 0.99x at 9 -> 2
# calls, encdec encode 1.05-1.09x at 9 -> 1, DeiT 1.02x, BERT-tiny 1.13x, Whisper-tiny encoder 1.06x, GPT-2
# 1.23x, MobileViT 1.09x; benchmarks/xnnpack_views.py --rewrite norms, RESULTS.md "#17/#21, seventeenth session")
MULTI_ROW_NORMS = False


def layer_norm_as_mean(x, normalized_shape, weight=None, bias=None, eps: float = 1e-5, cudnn_enable=True):
    """``aten.layer_norm`` as means over a (rows, 1, n, 1) view: the same maths in ops XNNPACK takes.

    The XNNPACK partitioner has no layer norm, and its mean takes only the two innermost dims of a
    4-D tensor, so a layer norm left whole runs on the portable kernels and splits the delegated
    graph at every norm (the Mamba student's step: 37 delegate calls before, 2 with this and its
    graph written for the delegate).

    Norms over several rows stay whole unless ``MULTI_ROW_NORMS`` (measured slower; see there).
    Decomposed, the Mamba prefill's had crashed the XNNPACK runtime once enough of the graph fell into
    one delegate call; the cause was not the norms but the SSD's triangle, both a linear weight and a
    mask in that call, read after ExecuTorch had released it (`unshare_packed_constants` fixes it:
    with every norm decomposed the demo-size student's prefill runs, 9 -> 2 delegate calls, outputs
    within 4.8e-06 of the whole norms'; benchmarks/xnnpack_views.py --rewrite norms)."""
    import math
    if not MULTI_ROW_NORMS and math.prod(x.shape[:-len(normalized_shape)]) > 1:
        return torch.ops.aten.native_layer_norm.default(x, normalized_shape, weight, bias, eps)[0]
    n = math.prod(normalized_shape)
    rows = x.reshape(-1, 1, n, 1)                                             # (rows, 1, n, 1)
    centred = rows - rows.mean((-2, -1), keepdim=True)
    var = (centred * centred).mean((-2, -1), keepdim=True)                    # biased, as LayerNorm
    y = (centred * torch.rsqrt(var + eps)).reshape(x.shape)
    if weight is not None:
        y = y * weight
    return y if bias is None else y + bias


def pow_as_mul(ep) -> int:
    """Rewrite ``x ** 2`` / ``x ** 3`` (aten ``pow.Tensor_Scalar``) in an exported program as
    multiplications, which XNNPACK takes; returns how many were rewritten. The XNNPACK partitioner has
    no pow, so it ran on ExecuTorch's portable kernel: on phi-tiny (tanh-GELU cubes its input) 4.21 ms
    a call in the int8-dynamic program, 84% of its run, 4.24x fp32 (RESULTS.md "#17, sixth session").
    Other exponents stay pow (an aten decomposition cannot fall back to the op it replaces)."""
    g = ep.graph_module.graph
    done = 0
    for n in list(g.nodes):
        if n.op != "call_function" or n.target != torch.ops.aten.pow.Tensor_Scalar or n.args[1] not in (2, 3):
            continue
        with g.inserting_before(n):
            y = g.call_function(torch.ops.aten.mul.Tensor, (n.args[0], n.args[0]))
            if n.args[1] == 3:
                y.meta = dict(n.meta)
                y = g.call_function(torch.ops.aten.mul.Tensor, (y, n.args[0]))
        y.meta = dict(n.meta)
        n.replace_all_uses_with(y)
        g.erase_node(n)
        done += 1
    if done:
        ep.graph_module.recompile()
    return done


# ops whose constant operands XNNPACK packs into its own weight layout when the program loads
_PACKS_CONSTANTS = {torch.ops.aten.linear.default, torch.ops.aten.convolution.default, torch.ops.aten.conv1d.default,
                    torch.ops.aten.conv2d.default, torch.ops.aten.addmm.default, torch.ops.aten.mm.default,
                    torch.ops.aten.bmm.default, torch.ops.aten.matmul.default}
# ops that run outside the XNNPACK delegate: ExecuTorch's partitioner already gives those their own copy
_OUTSIDE_XNNPACK = {torch.ops.aten.embedding.default}


def unshare_packed_constants(ep) -> list[str]:
    """Give the other readers of a constant that a matmul or convolution also reads (its weight) a
    copy of their own; returns the constants copied.

    Inside one XNNPACK delegate such a constant is packed for the matmul and its original bytes are
    released after loading, while an op reading it directly (a slice, a multiply) keeps pointing at
    them: ExecuTorch 1.5.1 then reads freed memory. ``linear(x, c) * c[:2]`` crashes the process
    (SIGSEGV in XNNPACK's copy kernel); the 1-layer Mamba student's prefill did (the SSD's triangle
    is both a cumulative-sum weight and a mask; the 2- and 4-layer students ran, whether or not they
    read released bytes: benchmarks/xnnpack_mamba_crash.py). A copy costs the
    constant's bytes once (the Mamba student's 64 x 64 triangle: 16 KiB)."""
    from torch._export.utils import get_buffer, get_lifted_tensor_constant, get_param
    from torch.export.graph_signature import InputKind, InputSpec, TensorArgument
    g = ep.graph_module.graph
    specs = list(ep.graph_signature.input_specs)
    placeholders = [n for n in g.nodes if n.op == "placeholder"]
    copied = []
    for node in placeholders:
        value = get_param(ep, node)
        value = get_buffer(ep, node) if value is None else value
        value = get_lifted_tensor_constant(ep, node) if value is None else value
        if value is None:
            continue
        packed = [u for u in node.users if u.op == "call_function" and u.target in _PACKS_CONSTANTS]
        direct = [u for u in node.users if u not in packed
                  and not (u.op == "call_function" and u.target in _OUTSIDE_XNNPACK)]
        if not packed or not direct:
            continue
        name = f"{node.name}_unpacked"
        with g.inserting_before(node):
            twin = g.placeholder(name)
        twin.meta = dict(node.meta)
        for u in direct:
            u.replace_input_with(node, twin)
        ep.constants[name] = value.detach().clone()
        specs.insert(placeholders.index(node) + len(copied),
                     InputSpec(kind=InputKind.CONSTANT_TENSOR, arg=TensorArgument(name=name), target=name))
        copied.append(node.name)
    if copied:
        ep.graph_signature.input_specs = specs
        ep.graph_module.recompile()
    return copied


def _same_shape(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two (fake) tensors have the same shape; a symbolic size matches only the same expression."""
    return [str(d) for d in a.shape] == [str(d) for d in b.shape]


def delegable_views(gm: torch.fx.GraphModule):
    """Edge-dialect pass: rewrite two ops the XNNPACK partitioner lacks, each of which ended a delegated
    partition and ran on ExecuTorch's portable kernels, as what it takes (the same values):

    - an ``expand_copy`` to the shape it already has (what ``aten.matmul`` of two 4-D tensors becomes:
      every attention product), or one that only elementwise ops of two tensors read, which broadcast anyway
      (``F.normalize``'s ``x / norm.expand_as(x)``: EdgeNeXt's attention) -> its input;
    - a float ``x ** 2.0`` / ``x ** 0.5`` (what ``torch.linalg.vector_norm`` becomes in the edge dialect; the
      partitioner takes integer powers only) -> ``x * x`` / ``sqrt(x)``;
    - a ``split_with_sizes_copy`` into static sizes (a fused QKV projection's ``chunk`` / ``split``) ->
      one ``slice_copy`` per piece;
    - an ``alias_copy`` (a slice over a whole dimension: timm's GhostNet ends every ghost module with
      ``out[:, :out_chs]`` of a tensor that has just ``out_chs`` channels) -> its input;
    - a ``mean`` of a 4-D tensor over its last two dimensions without ``keepdim`` (``x.mean((2, 3))``: the
      global pool before a classifier in torchvision's MNASNet and ShuffleNetV2, timm's RepViT) -> the same
      mean with ``keepdim`` (XNNPACK's global average pooling) and a ``view_copy`` to the pooled shape;
    - a chain of reshapes that ends at the shape it started from (``unsqueeze(squeeze(w, 1), 1)``) -> its
      start. Hugging Face's Mamba passes its depthwise ``conv1d`` weight that way, and a convolution or a
      linear whose weight is not a parameter itself stays off the delegate ("Expected weight to be a static
      param"): both of mamba-tiny's convolutions ran on the portable kernels.

    The shipped decoder's prefill went from 23 delegate calls to 11 (its layer norms over several rows split
    the rest) and its step from 7 to 3; p50 0.89-0.93x, the same outputs (`benchmarks/xnnpack_views.py`)."""
    from torch.fx.passes.infra.pass_base import PassResult
    from executorch.exir.dialects._ops import ops as exir_ops
    aten = exir_ops.edge.aten
    reshapes = {aten.view_copy.default, aten.squeeze_copy.dims, aten.squeeze_copy.dim, aten.squeeze_copy.default,
                aten.unsqueeze_copy.default}
    g, changed = gm.graph, False
    for n in list(g.nodes):
        if n.op != "call_function":
            continue
        if n.target == aten.expand_copy.default:
            src = n.args[0]
            if _same_shape(src.meta["val"], n.meta["val"]) or _broadcast_anyway(n, src):
                n.replace_all_uses_with(src)
                g.erase_node(n)
                changed = True
        elif n.target == aten.pow.Tensor_Scalar and n.args[1] in (2, 0.5) and n.meta["val"].dtype.is_floating_point:
            with g.inserting_before(n):
                y = g.call_function(aten.mul.Tensor, (n.args[0], n.args[0])) if n.args[1] == 2 \
                    else g.call_function(aten.sqrt.default, (n.args[0],))
            y.meta = dict(n.meta)
            n.replace_all_uses_with(y)
            g.erase_node(n)
            changed = True
        elif n.target == aten.split_with_sizes_copy.default:
            src, sizes = n.args[0], list(n.args[1])
            dim = n.args[2] if len(n.args) > 2 else n.kwargs.get("dim", 0)
            if not all(isinstance(s, int) for s in sizes) or any(u.target is not operator.getitem for u in n.users):
                continue
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            for u in list(n.users):
                i = u.args[1]
                with g.inserting_before(u):
                    piece = g.call_function(aten.slice_copy.Tensor, (src, dim, starts[i], starts[i] + sizes[i], 1))
                piece.meta = dict(u.meta)
                u.replace_all_uses_with(piece)
                g.erase_node(u)
            g.erase_node(n)
            changed = True
        elif n.target == aten.alias_copy.default and isinstance(n.args[0], torch.fx.Node) \
                and n.args[0].op != "placeholder" and all(u.op != "output" for u in n.users):
            src = n.args[0]
            n.replace_all_uses_with(src)
            g.erase_node(n)
            _fold_requantize(g, src)
            changed = True
        elif n.target == aten.mean.dim and _global_pool_without_keepdim(n):
            with g.inserting_before(n):
                pooled = g.call_function(aten.mean.dim, (n.args[0], list(n.args[1]), True))
                flat = g.call_function(aten.view_copy.default, (pooled, list(n.meta["val"].shape)))
            src = n.args[0].meta["val"]
            pooled.meta = {**n.meta, "val": src.new_empty((*src.shape[:2], 1, 1))}
            flat.meta = dict(n.meta)
            n.replace_all_uses_with(flat)
            g.erase_node(n)
            changed = True
        elif n.target in reshapes and (start := _reshape_round_trip(n, reshapes)) is not None:
            chain = n.args[0]
            n.replace_all_uses_with(start)
            g.erase_node(n)
            while chain is not start and not chain.users:   # the chain's own reshapes, now unread
                chain, dead = chain.args[0], chain
                g.erase_node(dead)
            changed = True
    if changed:
        gm.recompile()
    return PassResult(gm, changed)


def _broadcast_anyway(expand: torch.fx.Node, src: torch.fx.Node) -> bool:
    """Whether every reader of ``expand`` is an elementwise op of two tensors whose result keeps its shape
    and dtype with ``src`` in its place (broadcasting does what the expand did), e.g. ``F.normalize``'s
    ``x / norm.expand_as(x)``."""
    from executorch.exir.dialects._ops import ops as exir_ops
    aten = exir_ops.edge.aten
    binary = (aten.add.Tensor, aten.sub.Tensor, aten.mul.Tensor, aten.div.Tensor)

    def same_result(u):
        if u.target not in binary or len(u.args) != 2 or u.kwargs:
            return False
        other = u.args[1] if u.args[0] is expand else u.args[0]
        if other is expand or not isinstance(other, torch.fx.Node) or "val" not in other.meta:
            return False
        a, b = src.meta["val"], other.meta["val"]
        try:
            shape = torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError:
            return False
        return list(shape) == list(u.meta["val"].shape) and a.dtype == b.dtype == u.meta["val"].dtype
    return bool(expand.users) and all(same_result(u) for u in expand.users)


def _global_pool_without_keepdim(n: torch.fx.Node) -> bool:
    """Whether ``n`` (a ``mean.dim``) averages a static 4-D float tensor over dimensions 2 and 3 and drops them."""
    src = getattr(n.args[0], "meta", {}).get("val")
    if not isinstance(src, torch.Tensor) or src.dim() != 4 or not src.dtype.is_floating_point \
            or n.kwargs.get("dtype") is not None or (len(n.args) > 2 and n.args[2]):
        return False
    dims = n.args[1] if len(n.args) > 1 else None
    return isinstance(dims, (list, tuple)) and sorted(d % 4 for d in dims) == [2, 3] \
        and all(isinstance(d, int) for d in src.shape)


def _fold_requantize(g: torch.fx.Graph, dq: torch.fx.Node) -> None:
    """Where ``dq`` dequantizes a tensor and a reader quantizes it again with the same parameters (what a
    removed copy between them leaves in an int8 graph), the reader is the int8 tensor itself. With the pairs
    left in, GhostNet's int8-static program split into 6 partitions and failed at run time ("Attempted to
    resize a static tensor": a delegate output's shape did not match the program's; not looked into further)."""
    from executorch.exir.dialects._ops import ops as exir_ops
    qd = exir_ops.edge.quantized_decomposed
    if dq.op != "call_function" or dq.target != qd.dequantize_per_tensor.default:
        return
    for q in [u for u in dq.users if u.target == qd.quantize_per_tensor.default]:
        if tuple(q.args[1:]) == tuple(dq.args[1:]) and q.kwargs == dq.kwargs:
            q.replace_all_uses_with(dq.args[0])
            g.erase_node(q)
    if not dq.users:
        g.erase_node(dq)


def _reshape_round_trip(n: torch.fx.Node, reshapes: set):
    """The earliest node of the chain of reshapes ending at ``n`` that has ``n``'s shape (a reshape keeps the
    elements' order, so that node holds the same tensor), or None. A constant (a graph input) that other ops
    also read is not returned: as a matmul's or convolution's weight it would be packed and its bytes released
    while they read it (`unshare_packed_constants` has already run)."""
    found, src, first = None, n.args[0], n
    while isinstance(src, torch.fx.Node) and "val" in src.meta:
        if _same_shape(src.meta["val"], n.meta["val"]) and (src.op != "placeholder" or set(src.users) == {first}):
            found = src
        if src.op != "call_function" or src.target not in reshapes:
            break
        first, src = src, src.args[0]
    return found


# whether `lower` runs `delegable_views` for XNNPACK (a switch for benchmarks/xnnpack_views.py's "before")
DELEGABLE_VIEWS = True


def channels_last_before_quantize(gm: torch.fx.GraphModule):
    """Edge-dialect pass: where a 4-D float graph input is quantized and read only by convolutions (an image
    into an int8-static CNN), XNNPACK transposes the float tensor to channels-last, not the int8 one.

    The delegate's layout pass leaves the quantize in the input's NCHW order and puts a transpose between each
    of its dequantizes (torchao makes one per reader) and the convolution, as ``Transpose (ND, X8)`` on
    3-channel int8 rows, which XNNPACK moves more slowly than the float ones. The input becomes ``to
    channels-last -> quantize -> dequantize -> to contiguous -> quantize -> dequantize -> convolution``, both
    quantize pairs with the input's parameters: the convolution reads its values in the order it did (no
    channels-last strides reach the rest of the program), and XNNPACK's own redundant-copy pass removes the
    round trip, so that the delegate runs one ``transpose (fp32) -> convert`` for all the readers. The same
    int8 values, so the same outputs bit for bit (`CHANNELS_LAST_BEFORE_QUANTIZE` has the timings)."""
    from torch.fx.passes.infra.pass_base import PassResult
    from executorch.exir.dialects._ops import ops as exir_ops
    qd, aten = exir_ops.edge.quantized_decomposed, exir_ops.edge.aten
    to_dim_order = exir_ops.edge.dim_order_ops._to_dim_order_copy.default
    g, changed = gm.graph, False
    for x in [n for n in g.nodes if n.op == "placeholder"]:
        val = x.meta.get("val")
        if not isinstance(val, torch.Tensor) or val.dim() != 4 or not val.dtype.is_floating_point \
                or not val.is_contiguous() or not all(isinstance(d, int) for d in val.shape) or len(x.users) != 1:
            continue
        q = next(iter(x.users))
        if q.target != qd.quantize_per_tensor.default or not q.users or any(
                dq.target != qd.dequantize_per_tensor.default or not dq.users
                or any(r.target != aten.convolution.default or r.args[0] is not dq for r in dq.users)
                for dq in q.users):
            continue
        with g.inserting_after(x):
            nhwc = g.call_function(to_dim_order, (x,), {"dim_order": [0, 2, 3, 1]})
        nhwc.meta = {**x.meta, "val": val.clone(memory_format=torch.channels_last)}
        for dq in list(q.users):   # one dequantize per convolution after torchao's convert_pt2e
            with g.inserting_after(dq):
                nchw = g.call_function(to_dim_order, (dq,), {"dim_order": [0, 1, 2, 3]})
            with g.inserting_after(nchw):
                q2 = g.call_function(q.target, (nchw, *q.args[1:]), dict(q.kwargs))
            with g.inserting_after(q2):
                dq2 = g.call_function(dq.target, (q2, *dq.args[1:]), dict(dq.kwargs))
            for node, like in ((nchw, x), (q2, q), (dq2, dq)):
                node.meta = dict(like.meta)
            for r in list(dq.users):
                if r is not nchw:
                    r.replace_input_with(dq, dq2)
        q.replace_input_with(x, nhwc)
        changed = True
    if changed:
        gm.recompile()
    return PassResult(gm, changed)


# whether `lower` runs `channels_last_before_quantize` for XNNPACK. int8-static p50 on / off, 8 interleaved rounds,
# 2 threads, outputs bit-identical (benchmarks/xnnpack_views.py --rewrite input-layout, RESULTS.md "#17,
# thirtieth session"): MNASNet-0.5 0.96x, MobileNetV3-small 0.96x, MobileViT-xxs 0.98x, EfficientNet-B0 0.99x,
# GhostNet 0.99x, EdgeNeXt 1.01x (ConvNeXt 0.93x and FastViT 0.91x with wide ranges)
CHANNELS_LAST_BEFORE_QUANTIZE = True


# ops never merged: quantize / dequantize / choose-qparams nodes (written one per consumer, which is how the
# partitioner matches them) and ops whose result is not a function of their arguments (random, uninitialised)
_NOT_MERGED = ("quantized_decomposed", "torchao", "rand", "dropout", "bernoulli",
               "normal", "multinomial", "poisson", "empty")


def _mergeable(n: torch.fx.Node) -> bool:
    """Whether ``n`` is a pure operator call whose result depends on its arguments alone."""
    if n.op != "call_function" or any(u.op == "output" for u in n.users):
        return False
    schema = getattr(n.target, "_schema", None)
    if schema is None:
        return n.target is operator.getitem
    if schema.is_mutable or any(w in str(n.target) for w in _NOT_MERGED):
        return False
    return True


def _merge_key(n: torch.fx.Node):
    """What two calls of one op must share to give the same value: the op, and its arguments' structure,
    nodes and constants (by type and repr, so 1, 1.0 and True differ)."""
    from torch.utils._pytree import tree_flatten
    leaves, spec = tree_flatten((n.args, n.kwargs))
    return (n.target, str(spec), tuple((type(v).__name__, v if isinstance(v, torch.fx.Node) else repr(v))
                                       for v in leaves))


def shared_subexpressions(gm: torch.fx.GraphModule):
    """Edge-dialect pass: one node for each pure op called again on the same arguments (common subexpressions).

    Hugging Face encoders hand every layer the same boolean attention mask, and `bool_masked_attention` turns
    it into an additive bias and a fully-masked-row factor in each layer: two casts and an ``any`` per layer
    that XNNPACK has no kernels for, each on the portable kernels. Merged, each runs once per call."""
    from torch.fx.passes.infra.pass_base import PassResult
    seen, changed = {}, False
    for n in list(gm.graph.nodes):
        if not _mergeable(n):
            continue
        key = _merge_key(n)
        first = seen.setdefault(key, n)
        if first is not n:
            n.replace_all_uses_with(first)
            gm.graph.erase_node(n)
            changed = True
    if changed:
        gm.recompile()
    return PassResult(gm, changed)


# whether `lower` runs `shared_subexpressions` for XNNPACK (a switch for benchmarks/xnnpack_views.py's "before")
SHARED_SUBEXPRESSIONS = True


# whether `lower` lets XNNPACK's preprocess skip re-tracing a graph that a pass left unchanged (off: every
# re-trace, ExecuTorch's own behaviour; the .pte is byte-identical either way)
SKIP_UNCHANGED_RETRACES = True


def _graph_key(gm: torch.fx.GraphModule) -> list:
    return [(n, n.op, n.target, n.args, n.kwargs) for n in gm.graph.nodes]


def _unchanged(gm: torch.fx.GraphModule, key: list) -> bool:
    try:
        return _graph_key(gm) == key
    except RuntimeError:  # an argument compared as a tensor: count it as changed
        return False


@contextlib.contextmanager
def retrace_changed_graphs_only():
    """While lowering: XNNPACK's preprocess runs 17 passes on every partition, and most of them end by
    re-tracing the whole partition with fake tensors (ExportPass.call), which only refreshes node
    metadata after their own edits, whether or not they edited anything. Inside this context that
    re-trace is skipped when the pass changed no node (same nodes, targets and arguments as when it
    started). Passes whose re-trace is itself the rewrite (they override ExportPass's per-node
    hooks, e.g. ConstPropPass, DimOrderOpsRevertPass) always run it. Yields {"skipped", "retraced"}.

    Measured: benchmarks/executorch_cuts.py --code (a checkout without it) against this one: the demo
    students' XNNPACK conversions took 0.67-0.96x the seconds, files identical (RESULTS.md)."""
    from executorch.backends.xnnpack import _passes as xnnpack_passes
    from executorch.exir.pass_base import ExportPass, PassResult
    hooks = [h for h in dir(ExportPass) if h.startswith("call_") or h in ("placeholder", "output")]
    counts = {"skipped": 0, "retraced": 0}
    retrace, transform = ExportPass.call, xnnpack_passes._transform

    def refresh_only(cls) -> bool:
        return cls.call is not retrace and all(getattr(cls, h) is getattr(ExportPass, h) for h in hooks)

    def transform_noting_the_graph(ep, p, **kw):
        if refresh_only(type(p)):
            p._edgesdk_graph_before = _graph_key(ep.graph_module)
        return transform(ep, p, **kw)

    def call(self, gm):
        before = self.__dict__.pop("_edgesdk_graph_before", None)
        if before is not None and _unchanged(gm, before):
            counts["skipped"] += 1
            return PassResult(gm, False)
        counts["retraced"] += 1
        return retrace(self, gm)
    ExportPass.call, xnnpack_passes._transform = call, transform_noting_the_graph
    try:
        yield counts
    finally:
        ExportPass.call, xnnpack_passes._transform = retrace, transform


# whether `lower` runs ExecuTorch's edge-dialect dtype check once per distinct graph (off: at every
# program construction, ExecuTorch's own behaviour; the check's verdict and the .pte are the same either way)
DTYPE_CHECK_ONCE = True


def _dtype_check_key(gm: torch.fx.GraphModule) -> str:
    """What the edge verifier's dtype check reads: every node (op, target, arguments) and the inputs'
    fake tensors (dtype, shape, strides) and attributes' types; a blake2b digest."""
    import hashlib
    h = hashlib.blake2b(digest_size=20)
    for n in gm.graph.nodes:
        h.update(f"{n.op}|{n.name}|{n.target}|{n.args!r}|{n.kwargs!r}".encode())
        if n.op == "placeholder":
            v = n.meta.get("val")
        elif n.op == "get_attr":
            v = getattr(gm, n.target, None)
        else:
            continue
        if isinstance(v, torch.Tensor):
            h.update(f"|{v.dtype}|{tuple(v.shape)}|{v.stride()}".encode())
        else:  # a symbolic int, a lowered module...
            h.update(f"|{type(v).__qualname__}|{repr(v) if n.op == 'placeholder' else ''}".encode())
    return h.hexdigest()


@contextlib.contextmanager
def dtype_checked_once():
    """While lowering: ExecuTorch validates an edge program every time one is built (each pass, each
    step of `to_edge_transform_and_lower`), and its dtype check runs the whole graph with fake tensors
    each time, ~0.1-0.2 s for a Mamba program, though about half of those graphs it already checked.
    Inside this context a graph whose nodes and inputs are the same as one that passed is not run
    again; a changed graph, and every other check of the verifier, runs as before. Yields
    {"checked", "skipped", "check_s"}. Measured on the Mamba student's XNNPACK fp32 lowering: 40 checks
    (4.3 s) -> 20 (1.2 s), int8-dynamic 37 (10.5 s) -> 17 (2.5 s); same .pte bytes
    (benchmarks/edge_dtype_checks.py, RESULTS.md #21 twenty-third session)."""
    from executorch.exir.verification import verifier
    import time
    check = verifier._check_tensor_args_matching_op_allowed_dtype
    passed: set[str] = set()
    counts = {"checked": 0, "skipped": 0, "check_s": 0.0}

    def once(gm):
        key = _dtype_check_key(gm)
        if key in passed:
            counts["skipped"] += 1
            return None
        counts["checked"] += 1
        t0 = time.perf_counter()
        try:
            check(gm)  # raises on a violation: nothing is remembered then
        finally:
            counts["check_s"] += time.perf_counter() - t0
        passed.add(key)
    verifier._check_tensor_args_matching_op_allowed_dtype = once
    try:
        yield counts
    finally:
        verifier._check_tensor_args_matching_op_allowed_dtype = check


def lower(programs, partitioners, caller_owned_inputs: bool = False,
          decompositions: dict | None = None, passes: list | None = None) -> tuple[bytes, dict]:
    """torch.export every program, lower with the given partitioners, return (pte bytes, report).

    ``caller_owned_inputs``: leave graph inputs out of memory planning, so the program reads its
    inputs where the caller keeps them instead of copying them in at every call (what a
    generation step's multi-MB caches need; `runtime.executorch` then feeds it padded buffers).
    ``decompositions``: {aten op: function} applied to the exported programs before lowering;
    ``passes``: edge-dialect passes run before partitioning."""
    from edgesdk.converters.deferred_codegen import deferred_recompiles
    # a GraphModule's Python source made only when read: ~1,300-1,500 recompiles per generation-student
    # lowering, 7-11 s of them; 0.87x / 0.78x the seconds of the Mamba Vulkan / XNNPACK int8-dynamic
    # conversions, same .pte bytes (benchmarks/deferred_codegen.py, RESULTS.md #21 twenty-first session)
    with deferred_recompiles(), dtype_checked_once() if DTYPE_CHECK_ONCE else contextlib.nullcontext():
        return _lower(programs, partitioners, caller_owned_inputs, decompositions, passes)


def _lower(programs, partitioners, caller_owned_inputs, decompositions, passes) -> tuple[bytes, dict]:
    from executorch.exir import ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    eps = {name: torch.export.export(p.module, p.example_inputs, dynamic_shapes=export_shapes(p))
           for name, p in programs.items()}
    if decompositions:
        eps = {name: ep.run_decompositions(decompositions) for name, ep in eps.items()}
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    # only XNNPACK releases a packed weight's bytes; on Vulkan the copy broke the lowering (the delegate's
    # original program lists the copy, which to_executorch's re-trace cannot find: every Mamba student failed)
    xnnpack = any(isinstance(p, XnnpackPartitioner) for p in partitioners)
    unshared = {}
    for name, ep in eps.items():
        pow_as_mul(ep)
        unshared[name] = unshare_packed_constants(ep) if xnnpack else []
    with retrace_changed_graphs_only() if xnnpack and SKIP_UNCHANGED_RETRACES else contextlib.nullcontext():
        edge = to_edge_transform_and_lower(eps, transform_passes=passes or None, partitioner=partitioners)
    report = {name: delegation_report(edge, name) for name in eps}
    for name, copied in unshared.items():
        if copied:
            report[name]["constants_copied_for_unpacked_reads"] = copied
    config = ExecutorchBackendConfig(memory_planning_pass=MemoryPlanningPass(alloc_graph_input=not caller_owned_inputs))
    return edge.to_executorch(config).buffer, report


def _lower_xnnpack(programs, quantize: str, caller_owned_inputs: bool) -> tuple[bytes, dict, str | None]:
    """Lower with one XnnpackPartitioner -> (pte bytes, report, how it was partitioned if not so).

    Dynamically quantized graphs can make the grouped partitioner propose partitions that depend on
    each other both ways ("Invalid partition, found dependency cycles": BART-tiny's cross-attention in
    the zoo, ExecuTorch 1.5.1). Then the dynamically quantized ops are lowered first by their own
    partitioner and the rest by the general one, ExecuTorch's own order for its int8-dynamic LLMs
    (BART-tiny: converts, 59% of nodes delegated; one partition per op would give 49%)."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import (
        XnnpackDynamicallyQuantizedPartitioner, XnnpackPartitioner)
    passes = [p for p, on in ((delegable_views, DELEGABLE_VIEWS), (shared_subexpressions, SHARED_SUBEXPRESSIONS),
                              (channels_last_before_quantize, CHANNELS_LAST_BEFORE_QUANTIZE)) if on]
    try:
        return (*lower(programs, [XnnpackPartitioner(configs=partitioner_configs())], caller_owned_inputs,
                       xnnpack_decompositions(), passes), None)
    except AssertionError as e:
        if quantize != "int8-dynamic" or "dependency cycles" not in str(e):
            raise
    partitioners = [XnnpackDynamicallyQuantizedPartitioner(), XnnpackPartitioner(configs=partitioner_configs())]
    return (*lower(programs, partitioners, caller_owned_inputs,
                   xnnpack_decompositions(), passes),
            "dynamically quantized ops first, then the rest (one partitioner formed a dependency cycle)")


def export_shapes(program):
    """torch.export's ``dynamic_shapes`` for a program (None: static)."""
    return program.dynamic.torch_shapes(program.input_names, program.module) if program.dynamic else None


def pt2e_quantize(program, quantizer, calibration, masks: list | None = None) -> torch.nn.Module:
    """torch.export -> prepare_pt2e -> calibrate -> convert_pt2e (torchao's PT2E flow).

    ``masks`` (a list, filled in): a static scheme first calibrates, and when an observed
    activation's range is a mask's (`calibration.is_mask_range`, e.g. scores + a -1e9 attention
    bias), the nodes that produce or read it are left unannotated (float) and it calibrates again."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    def prepared_on(skip: set):
        gm = torch.export.export(program.module, program.example_inputs,
                                 dynamic_shapes=export_shapes(program)).module()
        quantizer.skip_nodes = skip
        prep = prepare_pt2e(gm, quantizer)
        with torch.no_grad():
            for sample in calibration or [program.example_inputs]:
                prep(*sample)
        return prep
    prepared = prepared_on(set())
    wide = _mask_range_nodes(prepared) if masks is not None else set()
    if wide:
        masks.extend(sorted(wide))
        prepared = prepared_on(wide)
    return convert_pt2e(prepared)


def _mask_range_nodes(prepared) -> set:
    """Names of the nodes on either side of an observer whose min/max is a mask's range."""
    from edgesdk.converters.calibration import is_mask_range
    out = set()
    for node in prepared.graph.nodes:
        if node.op != "call_module":
            continue
        obs = getattr(prepared, node.target, None)
        lo, hi = getattr(obs, "min_val", None), getattr(obs, "max_val", None)
        if lo is None or hi is None or lo.numel() == 0 or not is_mask_range(float(lo.min()), float(hi.max())):
            continue
        out.update(a.name for a in node.args if hasattr(a, "name") and a.op == "call_function")
        out.update(u.name for u in node.users if u.op == "call_function")
    return out


def in_modules(node, modules) -> bool:
    """Whether an exported graph node was traced inside one of the named torch modules."""
    stack = node.meta.get("nn_module_stack") or {}
    return any(path == m or path.startswith(m + ".") for path, _ in stack.values() for m in modules)


def float_scalars_to_attrs(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """XNNPACKQuantizer's scalar-to-tensor rewrite, on floating-point ``add``/``mul`` only.

    Upstream's ``transform_for_annotation`` turns every scalar operand of ``add``/``mul`` into a
    float32 tensor constant so that it can carry a quantization spec. It does so in integer index
    math too (``arange(n) + offset`` for position ids, mask arithmetic), which then yields float
    indices: ``IndexError: tensors used as indices must be long...`` while calibrating BERT and
    Llama. Integer nodes are never quantized, so they keep their Python scalars here.
    """
    for n in list(gm.graph.nodes):
        val = n.meta.get("val")
        if n.op != "call_function" or n.target not in (torch.ops.aten.add.Tensor, torch.ops.aten.mul.Tensor) \
                or not isinstance(val, torch.Tensor) or not val.dtype.is_floating_point:
            continue
        args = list(n.args)
        for i, a in enumerate(args):
            if isinstance(a, (int, float)) and not isinstance(a, bool):
                const = torch.tensor(float(a))  # () float32, as upstream
                attr = f"_float_scalar_{len([b for b, _ in gm.named_buffers() if b.startswith('_float_scalar_')])}"
                gm.register_buffer(attr, const)
                with gm.graph.inserting_before(n):
                    node = gm.graph.create_node("get_attr", attr, (), {})
                node.meta["val"] = val.fake_mode.from_tensor(const, static_shapes=True)
                args[i] = node
        n.args = tuple(args)
    gm.recompile()
    return gm


# int8-static runs sigmoids with int8 inputs and outputs, and SiLU as x * sigmoid(x) with both ops int8.
# ExecuTorch's partitioner takes a sigmoid in fp32 only, so each SiLU or sigmoid gate between int8 layers ran as
# dequantize, fp32 sigmoid (and product), quantize. XNNPACK's int8 sigmoid takes any output scale: each sigmoid's
# output step comes from its calibrated range (a fixed 1/256 step flipped a RepViT-m0.9 top-1 on the zoo's gate).
# int8-static / fp32, four SiLU inverted residuals: 0.90x -> 0.57x; with sigmoid gates: 0.71x -> 0.74x, the same
# within the rounds (benchmarks/xnnpack_activations.py); EfficientNet-B0 0.78x -> 0.53x, MobileViT-xxs 0.76x -> 0.70x
# (int8_ceiling.py, 12 interleaved rounds, AMD EPYC with AVX-512 VNNI; RESULTS.md "#17, twenty-ninth session").
# GELU, HardSwish and tanh: 0.99-1.01x of the p50s either way (the lowering already runs them on the int8 tensors
# around them), so they are left as they are.
INT8_SIGMOID = True


def silu_as_sigmoid_product(gm: torch.fx.GraphModule) -> int:
    """Rewrite every ``silu(x)`` as ``x * sigmoid(x)`` (the same maths), so that the quantizer can annotate the
    sigmoid and the product as int8 ops. An in-place ``silu_(x)`` (``nn.SiLU(inplace=True)``: torchvision's
    EfficientNet, timm's MobileViT) too, unless ``x`` is a graph input: the nodes after it that read ``x`` then
    read the product. -> how many were rewritten."""
    done = 0
    order = {node: i for i, node in enumerate(gm.graph.nodes)}
    for n in list(gm.graph.nodes):
        if n.op != "call_function" or n.target not in (torch.ops.aten.silu.default, torch.ops.aten.silu_.default):
            continue
        x = n.args[0]
        in_place = n.target == torch.ops.aten.silu_.default
        if not isinstance(x, torch.fx.Node) or (in_place and x.op == "placeholder"):
            continue
        with gm.graph.inserting_before(n):
            gate = gm.graph.call_function(torch.ops.aten.sigmoid.default, (x,))
            product = gm.graph.call_function(torch.ops.aten.mul.Tensor, (x, gate))
        gate.meta, product.meta = dict(n.meta), dict(n.meta)
        n.replace_all_uses_with(product)
        if in_place:
            for user in [u for u in x.users if u not in (n, gate, product) and order.get(u, -1) > order[n]]:
                user.replace_input_with(x, product)
        gm.graph.erase_node(n)
        done += 1
    if done:
        gm.recompile()
    return done


def annotate_int8_sigmoids(gm: torch.fx.GraphModule, config) -> int:
    """Annotate every floating-point sigmoid not annotated yet with ``config``'s activation specs, input and
    output (the output's step from its calibrated range: a squeeze-excitation gate spans less than [0, 1]).
    -> how many."""
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation
    done = 0
    for n in gm.graph.nodes:
        val = n.meta.get("val")
        if n.op == "call_function" and n.target == torch.ops.aten.sigmoid.default \
                and "quantization_annotation" not in n.meta and isinstance(n.args[0], torch.fx.Node) \
                and isinstance(val, torch.Tensor) and val.dtype == torch.float32:
            n.meta["quantization_annotation"] = QuantizationAnnotation(
                input_qspec_map={n.args[0]: config.input_activation}, output_qspec=config.output_activation,
                _annotated=True)
            done += 1
    return done


def partitioner_configs() -> list:
    """ExecuTorch's XNNPACK partitioner configs, with sigmoid also taken between int8 quantize ops
    (`INT8_SIGMOID`); an fp32 sigmoid is taken as before."""
    from executorch.backends.xnnpack.partition.config import ALL_PARTITIONER_CONFIGS
    from executorch.backends.xnnpack.partition.config.generic_node_configs import SigmoidConfig
    from executorch.backends.xnnpack.partition.config.xnnpack_config import ConfigPrecisionType

    class Int8SigmoidConfig(SigmoidConfig):
        def supported_precision_types(self):
            return [ConfigPrecisionType.FP32, ConfigPrecisionType.STATIC_QUANT]
    return [Int8SigmoidConfig if c is SigmoidConfig and INT8_SIGMOID else c for c in ALL_PARTITIONER_CONFIGS]


def is_quantized_graph(module) -> bool:
    """True when ``module`` is a graph with quantize ops (what `converters.qat.convert_qat` returns)."""
    graph = getattr(module, "graph", None)
    if graph is None:
        return False
    return any(n.op == "call_function" and "quantize_per" in str(n.target) for n in graph.nodes)


def _module_of(node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return in_split_depthwise(node) or (list(stack.values())[-1][0] if stack else node.name)


def _large_depthwise(n: torch.fx.Node, above: int | None) -> bool:
    """A 2-D depthwise convolution (one input channel per group) with a kernel side above ``above``
    or a depth multiplier (more output channels than groups)."""
    if above is None or n.target != torch.ops.aten.conv2d.default or len(n.args) < 7:
        return False
    w = getattr(n.args[1], "meta", {}).get("val")
    groups = n.args[6]
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or not isinstance(groups, int) or groups < 2:
        return False
    return w.shape[1] == 1 and (max(w.shape[2:]) > above or w.shape[0] > groups)


def depthwise_rule() -> tuple[int | None, str | None]:
    """(kernel side above which int8-static keeps depthwise convolutions float, what the manifest says of it):
    `FLOAT_DEPTHWISE_WITHOUT_INT8_DOT` where the deployment CPU has no int8 dot-product instructions
    (`runtime.machine.int8_dot_product`, ``EDGESDK_CPU_INT8_DOT``), else `FLOAT_DEPTHWISE_ABOVE`."""
    no_dot = int8_dot_product() is False
    above = FLOAT_DEPTHWISE_WITHOUT_INT8_DOT if no_dot else FLOAT_DEPTHWISE_ABOVE
    if above is None:
        return None, None
    why = (": the deployment CPU has no int8 dot-product instructions (EDGESDK_CPU_INT8_DOT=1 says it has)"
           if no_dot else "")
    return above, ("all float" if above == 0 else f"float above {above}x{above} or with a depth multiplier") + why


def kept_float_by_rule(gm: torch.fx.GraphModule, depthwise_above: int | None = None) -> set:
    """Names of the nodes that int8 leaves float on XNNPACK, whatever the user excludes:

    - a ``linear`` whose weight is a buffer, not a parameter, i.e. a constant of the model's maths
      (the Mamba SSD's cumulative sum is a linear with a 0/1 triangle), not a learned layer; an int8
      activation would round the running sums that the decays exponentiate, and the weights cost
      nothing to keep;
    - with ``depthwise_above``, depthwise convolutions with a larger kernel or a depth multiplier
      (`FLOAT_DEPTHWISE_ABOVE`), and the adds that sum a `SplitDepthwise`'s float pieces."""
    buffers = {name for name, _ in gm.named_buffers(remove_duplicate=False)}
    kept = set()
    for n in gm.graph.nodes:
        if n.op == "call_function" and ((n.target == torch.ops.aten.linear.default and len(n.args) > 1
                                         and getattr(n.args[1], "op", None) == "get_attr"
                                         and n.args[1].target in buffers)
                                        or _large_depthwise(n, depthwise_above)
                                        or (n.target == torch.ops.aten.add.Tensor and in_split_depthwise(n)
                                            and all(getattr(a, "name", None) in kept for a in n.args[:2]))):
            kept.add(n.name)
    return kept


def in_split_depthwise(n: torch.fx.Node) -> str | None:
    """The path of the `SplitDepthwise` module that traced ``n``, if any."""
    return next((path for path, cls in (n.meta.get("nn_module_stack") or {}).values()
                 if str(cls).rsplit(".", 1)[-1].rstrip("'>") == "SplitDepthwise"), None)


# whether the int8 quantizer skips XNNPACKQuantizer's conv-batch-norm annotators on a graph with no convolution:
# they build their pattern graphs with 12 strict exports on every call, and cannot match there (an int8-static
# conversion of the demo's mlp-256 shape: 3.4 -> 1.9 s, same .pte bytes; benchmarks/xnnpack_static_annotate.py,
# RESULTS.md "#21, nineteenth session")
SKIP_CONV_BN_WITHOUT_CONVS = True


def _has_conv(gm: torch.fx.GraphModule) -> bool:
    """Whether any node calls an op whose name says conv: every convolution the conv-bn patterns match
    (conv1d / conv2d / conv_transpose, `convolution` itself), and a few that are not convolutions
    (`convert_element_type`), for which the annotators then just run as before."""
    return any(n.op == "call_function" and "conv" in str(getattr(n.target, "__name__", n.target))
               for n in gm.graph.nodes)


def xnnpack_quantizer(scheme: str, exclude, *, qat: bool = False):
    """XNNPACKQuantizer (per-channel symmetric int8) that leaves the `exclude` modules in float.

    XNNPACKQuantizer.set_module_name(name, None) is not supported in this release, so nodes of
    excluded modules are pre-marked as annotated (with no quantization spec) before the
    quantizer's annotators run; annotators skip nodes that are already annotated.
    """
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer, get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantizer import QuantizationAnnotation

    class _Quantizer(XNNPACKQuantizer):
        skip_nodes: set = set()  # node names kept in float (mask-range activations, see pt2e_quantize)
        by_rule: list = []        # modules of the nodes `kept_float_by_rule` left float (last annotate)
        depthwise_note: str | None = None  # which depthwise rule applied (int8-static), for the manifest
        int8_sigmoids: int = 0    # sigmoids (SiLU's included) annotated int8 (`INT8_SIGMOID`), for the manifest

        def transform_for_annotation(self, model):
            model = float_scalars_to_attrs(model)
            if scheme == "int8-static" and INT8_SIGMOID:
                silu_as_sigmoid_product(model)
            return model

        def annotate(self, model):
            above, self.depthwise_note = depthwise_rule() if scheme == "int8-static" else (None, None)
            constants = kept_float_by_rule(model, above)
            self.by_rule = sorted({_module_of(n) for n in model.graph.nodes if n.name in constants})
            for node in model.graph.nodes:
                if node.op == "call_function" and ((exclude and in_modules(node, exclude))
                                                   or node.name in self.skip_nodes or node.name in constants):
                    node.meta["quantization_annotation"] = QuantizationAnnotation(_annotated=True)
            if scheme == "int8-static" and INT8_SIGMOID and self.global_config is not None:
                self.int8_sigmoids = annotate_int8_sigmoids(model, self.global_config)
            return super().annotate(model)

        def _annotate_all_patterns(self, model, quantization_config, filter_fn=None, operator_target=None):
            if not (SKIP_CONV_BN_WITHOUT_CONVS and quantization_config is not None) or _has_conv(model):
                return super()._annotate_all_patterns(model, quantization_config, filter_fn, operator_target)
            bn = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if "_bn" in p.name]
            if (quantization_config.is_qat or not quantization_config.input_activation.is_dynamic) and \
                    (operator_target is None or any(operator_target in p.op_overloads for p in bn)):
                # what the skipped annotators do to the graph before they match (they come first)
                model.graph.eliminate_dead_code()
                model.recompile()
            self.SUPPORTED_PATTERNS = [p for p in XNNPACKQuantizer.SUPPORTED_PATTERNS if p not in bn]
            try:
                return super()._annotate_all_patterns(model, quantization_config, filter_fn, operator_target)
            finally:
                del self.SUPPORTED_PATTERNS

    q = _Quantizer()
    q.set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=scheme == "int8-dynamic",
                                                   is_qat=qat))
    return q


def dynamic_linears(module: torch.nn.Module, exclude, bits: int = 4,
                    group: int | None = 32) -> tuple[torch.nn.Module, list[str]]:
    """Every eligible Linear with 8-bit per-token dynamic activations and ``bits``-bit symmetric weights
    (torchao): in groups of ``group`` input channels, or per output channel with ``group=None``.
    -> (quantized copy, names of the layers quantized)."""
    import copy

    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerAxis, PerGroup
    m = copy.deepcopy(module)
    done = []

    def eligible(mod, fqn):
        ok = isinstance(mod, torch.nn.Linear) and fqn not in exclude and (not group or mod.in_features % group == 0)
        if ok:
            done.append(fqn)
        return ok
    config = Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4 if bits == 4 else torch.int8,
                                                   weight_granularity=PerGroup(group) if group else PerAxis(0))
    quantize_(m, config, filter_fn=eligible)
    return m, done


def conv1d_as_linear(module: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """Hugging Face's ``Conv1D`` (GPT-2's projections: ``addmm(bias, x, weight)``, weight stored (in, out)) as
    the ``nn.Linear`` it computes, on a copy. -> (module, names swapped).

    ExecuTorch's quantizers see ``nn.Linear`` / ``aten.linear`` only (XNNPACKQuantizer's patterns, torchao's
    ``quantize_`` filter), so GPT-2's matrix products stayed fp32 in every int8 scheme: gpt2-tiny
    int8-dynamic measured 1.01-1.04x fp32 p50 with its fully connected kernels still F32 (0.72-0.77x swapped),
    where ONNX Runtime and LiteRT, which quantize the same MatMuls by graph, measured 0.57x and 0.40x
    (`benchmarks/int8_ceiling.py`, RESULTS.md "#17, thirteenth session")."""
    def as_linear(old):
        new = torch.nn.Linear(old.weight.shape[0], old.nf, bias=old.bias is not None,
                              device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(old.weight.t())
            if old.bias is not None:
                new.bias.copy_(old.bias)
        return new
    return swap_modules(module, lambda m: type(m).__name__ == "Conv1D" and getattr(m, "weight", None) is not None
                        and m.weight.dim() == 2 and m.weight.shape[1] == getattr(m, "nf", None), as_linear)


def swap_modules(module: torch.nn.Module, take, make) -> tuple[torch.nn.Module, list[str]]:
    """Every submodule ``take(m)`` accepts replaced by ``make(m)``, on a copy (``module`` itself untouched)
    -> (module, names swapped); ``module`` as it is when none is taken."""
    import copy

    names = [n for n, m in module.named_modules() if take(m)]
    if not names:
        return module, []
    module = copy.deepcopy(module)
    if names == [""]:  # the model is the module taken
        return make(module), names
    for name in names:
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent), child, make(module.get_submodule(name)))
    return module, names


# the most taps of a depthwise kernel that ExecuTorch's XNNPACK build runs as a depthwise convolution; a 7x7 or 9x9
# one ran as a grouped IGEMM, and split into pieces within it (`SplitDepthwise`) at 0.29x / 0.26x its p50 (1 x 40 x
# 56 x 56, fp32; stride 2: 0.38x; benchmarks/xnnpack_large_depthwise.py, RESULTS.md "#17, thirtieth session")
DWCONV_MAX_TAPS = 25


class SplitDepthwise(torch.nn.Module):
    """A same-padded depthwise convolution (odd kernel, padding half of it, any stride) whose kernel has more than
    `DWCONV_MAX_TAPS` taps, as a sum of depthwise convolutions within it: the middle rows as one, and each pair of
    rows equally far from the middle as a 2-row kernel dilated to reach them. Each piece is centred, so it reads
    the input at the same positions as the rows it takes over, and the sum is the convolution (up to float
    summation order). Not with a depth multiplier: XNNPACK ran those pieces as IGEMMs too (FastViT's 7x7
    stride-2 48 -> 96 convolution, split / whole 1.11x, 0.91-1.49; benchmarks/xnnpack_large_depthwise.py)."""

    def __init__(self, conv: torch.nn.Conv2d):
        super().__init__()
        (kh, kw), (ph, pw), ch = conv.kernel_size, conv.padding, conv.in_channels
        c = min(ph, (DWCONV_MAX_TAPS // kw - 1) // 2)   # the middle 2c+1 rows fit one kernel
        w = conv.weight.detach()

        def piece(rows, dilation, pad, bias):
            m = torch.nn.Conv2d(ch, ch, (len(rows), kw), conv.stride, (pad, pw), (dilation, 1), ch, bias is not None,
                                device=w.device, dtype=w.dtype)
            with torch.no_grad():
                m.weight.copy_(w[:, :, rows])
                if bias is not None:
                    m.bias.copy_(bias)
            return m
        self.middle = piece(list(range(ph - c, ph + c + 1)), 1, c, conv.bias)
        self.pairs = torch.nn.ModuleList(piece([ph - d, ph + d], 2 * d, d, None) for d in range(c + 1, ph + 1))

    def forward(self, x):
        y = self.middle(x)
        for p in self.pairs:
            y = y + p(x)
        return y


def _splittable_depthwise(m: torch.nn.Module) -> bool:
    if type(m) is not torch.nn.Conv2d or m.padding_mode != "zeros" or isinstance(m.padding, str):
        return False
    (kh, kw), ch = m.kernel_size, m.in_channels
    return (m.groups == ch == m.out_channels > 1 and m.dilation == (1, 1) and kh % 2 == 1 and kw % 2 == 1
            and tuple(m.padding) == (kh // 2, kw // 2) and kh * kw > DWCONV_MAX_TAPS and 2 * kw <= DWCONV_MAX_TAPS)


def split_large_depthwise(module: torch.nn.Module) -> tuple[torch.nn.Module, list[str]]:
    """Every ``nn.Conv2d`` that `SplitDepthwise` can take, swapped for it, on a copy -> (module, names swapped).
    ConvNeXt's, FastViT's and EdgeNeXt's 7x7 and 9x9 depthwise convolutions ran as grouped IGEMMs: with them
    split, fp32 p50 0.68x / 0.70x / 0.90x and int8-static 1.10x -> 0.63x, 1.07x -> 0.65x, 0.92x -> 0.81x of the
    new fp32 (`int8_ceiling.py`, RESULTS.md "#17, thirtieth session"; `SPLIT_LARGE_DEPTHWISE`)."""
    return swap_modules(module, _splittable_depthwise, SplitDepthwise)


# whether the XNNPACK export runs `split_large_depthwise` (benchmarks/xnnpack_views.py --rewrite depthwise-split
# times it off / on)
SPLIT_LARGE_DEPTHWISE = True


def int4_weight(module: torch.nn.Module, exclude, group: int = 32) -> tuple[torch.nn.Module, list[str]]:
    """8-bit dynamic activations, 4-bit grouped weights on every eligible Linear (torchao)."""
    return dynamic_linears(module, exclude, 4, group)


# A tied head reads the embedding's int8 rows only for a table of at most this many elements (V x D). The row
# head dequantizes and packs the whole table on every call: one token through a 4096 x 256 head took 406 us
# against 40 us in fp32 and 18 us as an int8-dynamic linear with its own weights (10.1x / 0.44x; 1024 x 128:
# 5.7x / 0.76x; the students' 260 x 128: 2.8x / 0.90x; benchmarks/xnnpack_tied_head.py), and GPT-2-tiny
# int8-dynamic measured 0.545x fp32 p50 with it against 0.370x with the head's own int8 weights
# (benchmarks/int8_ceiling.py, RESULTS.md "#17, twenty-seventh session"). Up to this size the row head's price
# is small beside its fp32 activations, which kept the trained students' greedy tokens (below); above it the
# head is quantized as the scheme's other linears, with its own int8 copy of the table (V x D more bytes), and
# the accuracy gate judges it.
ROW_HEAD_MAX_ELEMENTS = 65536


def int8_tables(prog, exclude):
    """Embeddings read int8 rows (`converters.embedding_rows`); a head tied to a small one reads the same rows.

    The tied head (`embedding_rows.Int8RowHead`) is weight-only int8: the table is stored once, in int8
    with one scale per row, and the head's activations stay fp32 (the delegate dequantizes the table and
    runs the matmul: ~V x D elements and multiply-adds per token). Why not the quantizer's int8-dynamic head: on the encdec student
    every int8-dynamic greedy divergence from fp32 (73.9% agreement) sat at one fp32 near-tie (top two
    logits 0.0128 nats apart) that every prompt passes through, and the dynamic head flipped it; with
    the head reading int8 rows and fp32 activations the greedy agreement is 100% (encdec) and 96.3%
    (Mamba; 94.4% with the head in fp32, whose file was 0.33x fp32 for it). A head on a table of more than
    `ROW_HEAD_MAX_ELEMENTS` is quantized with the other linears instead (its own int8 weights). -> (program
    with the swapped modules, {"embedding_int8_rows": [...], "tied_heads_int8_rows": [...],
    "tied_heads_kept_float": [...], "tied_heads_own_int8": [...]}); "tied_heads" names the heads to leave out
    of the quantizer (the row heads and those kept float)."""
    import dataclasses
    heads = [h for h in tied_heads(prog.module) if not any(h == e or h.startswith(e + ".") for e in exclude)]
    large = [h for h in heads if prog.module.get_submodule(h).weight.numel() > ROW_HEAD_MAX_ELEMENTS]
    heads = [h for h in heads if h not in large]
    module, rows = int8_rows(prog.module, list(exclude) + large, heads="int8-rows")
    shared = [r["module"] for r in rows if "head" in r]
    return dataclasses.replace(prog, module=module), {
        "embedding_int8_rows": [r for r in rows if "lookup" in r], "tied_heads_int8_rows": shared,
        **({"tied_heads_own_int8": large} if large else {}),
        "tied_heads_kept_float": [h for h in heads if h not in shared], "tied_heads": heads}


def _attention_scores(q, k, scale=None):
    """``q @ k^T * scale`` (SDPA's default scale ``1 / sqrt(head dim)`` when None)."""
    return torch.matmul(q, k.transpose(-2, -1)) * (scale if scale is not None else q.shape[-1] ** -0.5)


def unmasked_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` without a mask as ``softmax(q @ k^T * scale) @ v``, which XNNPACK takes
    whole; with a mask, causal, dropout or grouped heads it is left to ExecuTorch (NotImplemented).

    ExecuTorch decomposes SDPA through ``_safe_softmax``, whose guard for fully masked rows (``eq``, ``any``,
    ``logical_not``, ``full_like``, ``where`` over every score) XNNPACK has no kernels for, so it ran on the
    portable kernels: 60% of the Whisper-tiny encoder's fp32 p50 (1500 tokens). Without a mask no row of
    finite scores is fully masked, so plain softmax gives the same values."""
    if attn_mask is not None or is_causal or dropout_p or enable_gqa:
        return NotImplemented
    return torch.softmax(_attention_scores(q, k, scale), dim=-1).matmul(v)


def bool_masked_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` with a boolean mask (True = attend) with the guard for fully masked rows
    moved from the scores to the mask, so that every op on scores runs in XNNPACK; anything else NotImplemented.

    Hugging Face encoders and decoders pass a boolean (B, 1, L, S) mask (padding, and causality for decoders),
    and ExecuTorch's ``_safe_softmax`` ran ``eq`` / ``any`` / ``where`` over all B x H x L x S scores on the
    portable kernels. Here the mask becomes an additive bias of 0 or the most negative finite float (a masked
    score's exponent is then 0, as with -inf), and a row with nothing to attend to is zeroed after ``@ v``, from
    ``any`` over the mask alone (B x 1 x L x S): the values of ``_safe_softmax``, fully masked rows included."""
    if attn_mask is None or attn_mask.dtype != torch.bool or is_causal or dropout_p or enable_gqa:
        return NotImplemented
    bias = (attn_mask.to(q.dtype) - 1.0) * torch.finfo(q.dtype).max
    rows = attn_mask.any(dim=-1, keepdim=True).to(q.dtype)
    return torch.softmax(_attention_scores(q, k, scale) + bias, dim=-1).matmul(v) * rows


def float_masked_attention(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """``scaled_dot_product_attention`` with an additive float mask (a relative position bias, ALiBi, a padding
    mask of 0 / -inf) with the guard for fully masked rows moved from the scores to the mask, as
    `bool_masked_attention` does for a boolean one; anything else NotImplemented.

    T5 passes its position bias plus padding as a float (B, H, L, S) mask, and ExecuTorch's ``_safe_softmax``
    ran ``eq`` / ``any`` / ``where`` over every score on the portable kernels. Here the masked scores are
    clamped at the most negative finite float (XNNPACK's clamp: a -inf score's exponent is 0 either way, and a
    row of -inf no longer gives 0 / 0), and a row whose mask is -inf everywhere, which ``_safe_softmax``
    zeroes, is zeroed after ``@ v`` from ``amax`` over the mask alone. Same values as ``_safe_softmax`` but
    where adding a finite mask to a finite score overflows to -inf (|values| near 3.4e38)."""
    if attn_mask is None or not attn_mask.dtype.is_floating_point or is_causal or dropout_p or enable_gqa:
        return NotImplemented
    rows = (attn_mask.amax(dim=-1, keepdim=True) > float("-inf")).to(q.dtype)
    scores = torch.clamp(_attention_scores(q, k, scale) + attn_mask, min=torch.finfo(q.dtype).min)
    return torch.softmax(scores, dim=-1).matmul(v) * rows


UNMASKED_ATTENTION = True  # benchmarks/xnnpack_views.py --rewrite attention converts with it off, for the baseline
BOOL_MASKED_ATTENTION = True  # benchmarks/xnnpack_views.py --rewrite masked-attention converts with it off
FLOAT_MASKED_ATTENTION = True  # benchmarks/xnnpack_views.py --rewrite float-masked-attention converts with it off


def attention_in_delegate(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """`unmasked_attention`, `bool_masked_attention` or `float_masked_attention`, as their switches allow;
    else ExecuTorch's own."""
    if attn_mask is None:
        rewrite = unmasked_attention if UNMASKED_ATTENTION else None
    elif attn_mask.dtype == torch.bool:
        rewrite = bool_masked_attention if BOOL_MASKED_ATTENTION else None
    else:
        rewrite = float_masked_attention if FLOAT_MASKED_ATTENTION else None
    return NotImplemented if rewrite is None else rewrite(q, k, v, attn_mask, dropout_p, is_causal, scale, enable_gqa)


def softplus_in_delegate(x, beta=1.0, threshold=20.0):
    """``softplus`` as ``(relu(b x) + log1p(exp(-|b x|))) / b``: the same function in ops XNNPACK takes.

    ExecuTorch decomposes softplus into ``log1p``, ``gt`` and ``where``, none of which the XNNPACK partitioner
    has, so each ran on the portable kernels and split the delegated graph (Hugging Face Mamba's time step:
    ~0.36 ms of mamba-tiny's ~3.8 ms int8-dynamic p50). The form here never overflows, and above the threshold,
    where softplus is ``x``, it differs by ``log(1 + exp(-b x)) / b < exp(-threshold) / b``: below float32's
    resolution of ``x`` there only for a threshold of at least 16 (the default is 20); a smaller one is left
    to ExecuTorch (NotImplemented)."""
    if threshold < SOFTPLUS_MIN_THRESHOLD:
        return NotImplemented
    y = x * beta if beta != 1 else x
    e = torch.exp(-torch.abs(y))                      # in (0, 1]
    u = e + 1.0                                       # float scalars: an int one becomes an int64 constant and a cast
    # log1p(e) as log(u) less u's rounding error over u (first order): exact to the float for tiny e, where
    # log(u) alone is 0 (softplus of x < -17 would be 0 instead of exp(x))
    out = torch.relu(y) + (torch.log(u) - ((u - 1.0) - e) / u)
    return out / beta if beta != 1 else out


# exp(-16) = 1.1e-7 of x >= 16 is below float32's relative resolution (1.2e-7): the smallest softplus threshold
# at which `softplus_in_delegate` equals softplus's linear branch to the float
SOFTPLUS_MIN_THRESHOLD = 16.0


def xnnpack_decompositions() -> dict:
    """{aten op: function} applied before lowering to XNNPACK."""
    return {torch.ops.aten.layer_norm.default: layer_norm_as_mean,
            torch.ops.aten.scaled_dot_product_attention.default: attention_in_delegate,
            torch.ops.aten.softplus.default: softplus_in_delegate}


@register_target
class ExecuTorchXnnpack(Converter):
    name = "executorch-xnnpack"
    device = "cpu"
    format = "pte"
    backend = "executorch"
    description = "ExecuTorch with the XNNPACK delegate (mobile/embedded CPU)"
    convert_packages = ("executorch",)
    run_packages = ("executorch",)
    install_hint = "pip install executorch==1.5.1"
    quantization = ("fp32", "int8-static", "int8-dynamic", "int4-weight", "int8-qat")
    recommended = "int8-static"
    # generation students (benchmarks/generation_quant.py, 100 held-out prompts, 2026-12-02 15:54): int8-dynamic
    # meets the bar for both (encdec 100% / 0.28x, Mamba 97.6% / 0.30x, faster than fp32); 8da4w loses Mamba (79.6%)
    recommended_multi_program = "int8-dynamic"
    # transformers: on the zoo (random weights, benchmarks/zoo.py, 2026-12-02) int8-dynamic passed the default
    # gate on 12 of 12 converted models, int8-static on 6 of 13 (Llama, Qwen2, GPT-2, Phi, OPT, ALBERT, MiniLM
    # below it); p50 int8-dynamic/fp32 (2 threads, 14:11 run) 0.39-0.95 on the 16 transformers that convert
    recommended_by_kind = {"transformer": "int8-dynamic"}
    # inverted-residual CNNs on a CPU without int8 dot-product instructions: int8-static measured slower (recipes.py)
    fp32_for_inverted_residuals_without_int8_dot = (
        "an inverted-residual CNN (MobileNetV2-style blocks) on a deployment CPU without int8 dot-product instructions "
        "(x86 without VNNI or AMX; this machine's unless EDGESDK_CPU_INT8_DOT=1 says the deployment CPU has them): "
        "XNNPACK's int8 1x1 convolutions run no faster than fp32 there and its int8 depthwise ones 2.2-3.0x slower; "
        "int8-static measured 1.02-1.15x fp32 p50 on MobileNetV2, MNASNet, MobileNetV3-small and EfficientNet-B0 "
        "even with every depthwise convolution float (benchmarks/xnnpack_depthwise.py, RESULTS.md \"#17, eleventh "
        "session\")")
    calibrated = ("int8-static",)
    dynamic_shapes = True

    def placement(self, extra: dict) -> dict | None:
        """The delegate's share of each method's nodes, from the partition report."""
        return from_partition(extra.get("partition"))

    def export(self, programs, workdir, *, quantize, options):
        import dataclasses

        details, split = {}, {}
        if SPLIT_LARGE_DEPTHWISE and quantize != "int8-qat":
            for name, prog in programs.items():
                module, names = split_large_depthwise(prog.module)
                if names:
                    programs = {**programs, name: dataclasses.replace(prog, module=module)}
                    split[name] = len(names)
        if quantize != "fp32":
            quantized = {}
            for name, prog in programs.items():
                exclude = list(for_program(options.get("exclude"), name) or [])
                if quantize != "int8-qat":
                    swapped_module, swapped = conv1d_as_linear(prog.module)
                    prog = dataclasses.replace(prog, module=swapped_module)
                    prog, kept = int8_tables(prog, exclude)
                    exclude += kept.pop("tied_heads")
                    if swapped:
                        kept["conv1d_as_linear"] = len(swapped)
                if quantize == "int8-qat":
                    if not is_quantized_graph(prog.module):
                        raise ConfigError("int8-qat expects the output of converters.qat.convert_qat(); "
                                          "this module has no quantize/dequantize ops")
                    module = prog.module
                    details[name] = {"tool": "torchao pt2e QAT (XNNPACKQuantizer, is_qat=True)",
                                     "weights": "int8 per-channel", "activations": "int8 per-tensor (learned)"}
                elif quantize == "int4-weight":
                    module, layers = int4_weight(prog.module, exclude)
                    details[name] = {"tool": "torchao Int8DynamicActivationIntxWeightConfig(int4, PerGroup(32))",
                                     "layers_quantized": layers}
                elif quantize == "int8-dynamic" and len(programs) > 1:
                    # generation models: per-token activation scales (one per row, where XNNPACKQuantizer's
                    # dynamic scheme has one per tensor). Mamba student, 100 held-out prompts: greedy
                    # agreement 94.2% -> 97.6%, same int8 weights' size (encdec: 100% either way)
                    module, layers = dynamic_linears(prog.module, exclude, 8, None)
                    details[name] = {"tool": "torchao Int8DynamicActivationIntxWeightConfig(int8, PerAxis(0))",
                                     "weights": "int8 per-channel", "activations": "int8 per-token dynamic",
                                     "layers_quantized": layers}
                else:
                    masks = [] if quantize == "int8-static" else None
                    quantizer = xnnpack_quantizer(quantize, exclude)
                    module = pt2e_quantize(prog, quantizer, for_program(options.get("calibration"), name), masks)
                    details[name] = {"tool": "torchao pt2e + XNNPACKQuantizer", "weights": "int8 per-channel",
                                     "activations": "int8 per-tensor " + ("dynamic" if quantize == "int8-dynamic"
                                                                          else "static (min-max observers)"),
                                     **({"mask_nodes_kept_float": masks} if masks else {}),
                                     **({"kept_float_by_rule": quantizer.by_rule} if quantizer.by_rule else {}),
                                     **({"depthwise_convs": quantizer.depthwise_note} if quantizer.depthwise_note
                                        else {}),
                                     **({"sigmoids_int8": quantizer.int8_sigmoids} if quantizer.int8_sigmoids else {})}
                if quantize != "int8-qat":
                    details[name].update(kept)
                quantized[name] = dataclasses.replace(prog, module=module)
            programs = quantized
        # several programs (prefill + step): the step's caches stay where the runtime keeps them
        shared = len(programs) > 1
        buffer, report, partitioning = _lower_xnnpack(programs, quantize, shared)
        (workdir / "model.pte").write_bytes(buffer)
        extra = {"partition": report, **({"partitioning": partitioning} if partitioning else {})}
        if shared:
            extra["executorch_inputs"] = "caller-owned"
        if details:
            extra["quantization_details"] = details
        if split:
            extra["depthwise_split"] = split
        return {"files": ["model.pte"], "programs": {n: ("model.pte", n) for n in programs}, "extra": extra}
