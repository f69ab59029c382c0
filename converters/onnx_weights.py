"""ONNX graph passes before quantizing and shipping: the tied embedding / output head in int8, weights read
without a Transpose, spatial means as global pools, no per-node metadata.

A language model's token embedding and its output head often share one table (V, D). ONNX Runtime's
quantizers leave a shared initializer in float (the head reads it through a Transpose, or shares it with
the embedding's Gather), so the largest single tensor of a small generator stayed fp32. `quantize_tied_table`
gives each reader its own copy before quantization:

- the head gets its own (D, V) weight, which the int8 quantizer then quantizes per output channel;
- the embedding's Gather (also an untied ``nn.Embedding``'s) reads an int8 table with one scale per row:
  ``Gather(Wq, ids) -> Cast(float) * Gather(scale, ids)`` (only the gathered rows are dequantized).

`strip_node_metadata` drops the exporter's per-node debugging metadata (stack traces, FX node names,
scopes): about 9% of a small model's file, and nothing in the runtime reads it. It also stores each
byte-identical initializer once (the exporter writes one ``zeros`` state and one causal mask per layer)
and drops the intermediate shape annotations (``value_info``), which ONNX Runtime infers again at load.

    >>> import onnx
    >>> m = onnx.load("decode_step.fp32.onnx")      # doctest: +SKIP
    >>> quantize_tied_table(m)                      # doctest: +SKIP
    [{'table': 'model.lm_head.weight', 'shape': [260, 128], 'gather': 'int8 per-row', 'head': 'own copy'}]
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

MIN_TABLE_ELEMENTS = 1024  # below this a table is too small to matter


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for n in graph.node:
        for x in n.input:
            out.setdefault(x, []).append(n)
    return out


def _attr(node, name, default=None):
    from onnx import helper
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _is_embedding(node) -> bool:
    return any(p.key == "pkg.torch.onnx.class_hierarchy" and "aten.embedding" in p.value for p in node.metadata_props)


def quantize_tied_table(model, *, skip_nodes: set[str] = frozenset()) -> list[dict]:
    """Rewrite ``model`` (an ``onnx.ModelProto``, fp32) in place so that a table read by an embedding
    Gather (and by a head: MatMul through a Transpose, or Gemm with transB) no longer stays float:
    the Gather reads int8 rows with per-row scales and the head its own copy for the quantizer. A table
    with no head is taken only where the exporter's metadata says the Gather is an ``nn.Embedding``.
    Nodes in ``skip_nodes`` (layers the user keeps in float) are left alone. Returns what was done."""
    from onnx import TensorProto, helper, numpy_helper
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    users = _consumers(graph)
    done = []
    for name, init in list(inits.items()):
        if init.data_type != TensorProto.FLOAT or len(init.dims) != 2 or np.prod(init.dims) < MIN_TABLE_ELEMENTS:
            continue
        readers = users.get(name, [])
        gathers = [n for n in readers if n.op_type == "Gather" and n.input[0] == name and _attr(n, "axis", 0) == 0]
        heads = [n for n in readers if n not in gathers]
        if not gathers or any(n.name in skip_nodes for n in readers):
            continue
        # untied: only an embedding lookup (the exporter's metadata names aten.embedding), never a lookup
        # table such as RoPE's sin/cos (index_select)
        if not heads and not all(_is_embedding(n) for n in gathers):
            continue
        w = numpy_helper.to_array(init).astype(np.float32)                            # (V, D)
        # the head: its own transposed copy, read by a plain MatMul / Gemm(transB=0)
        head_ok = True
        for n in heads:
            if n.op_type == "Transpose" and list(_attr(n, "perm", [1, 0])) == [1, 0]:
                continue
            if n.op_type == "Gemm" and n.input[1] == name and _attr(n, "transB", 0) == 1 and n.input[0] != name:
                continue
            head_ok = False
        if not head_ok:
            continue
        head_name = name + "_head_t"
        head_nodes = []  # the nodes that now read the head's copy
        if heads:
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(w.T), head_name))  # (D, V)
        for n in heads:
            if n.op_type == "Transpose":  # its output becomes the copy; the node goes
                for c in users.get(n.output[0], []):
                    for i, x in enumerate(c.input):
                        if x == n.output[0]:
                            c.input[i] = head_name
                            head_nodes.append(c.name)
                for i, o in enumerate(graph.output):
                    if o.name == n.output[0]:
                        raise ValueError(f"{name}: its transpose is a graph output")
                graph.node.remove(n)
            else:
                n.input[1] = head_name
                head_nodes.append(n.name)
                for a in n.attribute:
                    if a.name == "transB":
                        a.i = 0
        # the embedding: int8 rows, symmetric, one scale per row
        amax = np.abs(w).max(axis=1, keepdims=True)                                   # (V, 1)
        scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
        wq = np.clip(np.rint(w / scale), -127, 127).astype(np.int8)
        q_name, s_name = name + "_int8_rows", name + "_row_scale"
        graph.initializer.extend([numpy_helper.from_array(wq, q_name), numpy_helper.from_array(scale, s_name)])
        for k, n in enumerate(gathers):
            out = n.output[0]
            ids = n.input[1]
            pre = f"{n.name or out}_int8_{k}"
            new = [helper.make_node("Gather", [q_name, ids], [pre + "_q"], name=pre + "_gather", axis=0),
                   helper.make_node("Cast", [pre + "_q"], [pre + "_f"], name=pre + "_cast", to=TensorProto.FLOAT),
                   helper.make_node("Gather", [s_name, ids], [pre + "_s"], name=pre + "_scale", axis=0),
                   helper.make_node("Mul", [pre + "_f", pre + "_s"], [out], name=pre + "_mul")]
            at = list(graph.node).index(n)
            graph.node.remove(n)
            for j, node in enumerate(new):
                graph.node.insert(at + j, node)
        graph.initializer.remove(init)
        done.append({"table": name, "shape": list(init.dims), "gather": "int8 per-row (symmetric)",
                     "head": "own copy" if heads else None, "head_nodes": head_nodes})
    return done


def fold_weight_transposes(graph) -> int:
    """``Transpose(initializer)`` becomes a transposed initializer, once per (initializer, perm), so that a
    MatMul reads its weight directly; returns the Transposes removed. Exact (a copy of the same values).

    ONNX Runtime's quantizers quantize a MatMul only when its weight is an initializer. The exporter leaves
    a large weight that several nodes read behind a Transpose (ALBERT reuses one layer at every depth), so
    int8-dynamic quantized 2 of ALBERT-base's 18 MatMuls and ran at 0.99-1.01x fp32 p50; folded, 14 and
    0.33-0.35x (`benchmarks/int8_ceiling.py`, RESULTS.md "#17, thirteenth session"). Shared stays shared: one
    transposed copy per weight, read by every layer that read it."""
    from onnx import TensorProto, numpy_helper
    inits = {i.name: i for i in graph.initializer if i.data_location != TensorProto.EXTERNAL}
    graph_io = {x.name for x in list(graph.input) + list(graph.output)}
    made: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    folded = [n for n in graph.node if n.op_type == "Transpose" and n.input[0] in inits
              and n.input[0] not in graph_io and n.output[0] not in graph_io]
    for n in folded:
        perm = _attr(n, "perm")
        key = (n.input[0], tuple(perm) if perm is not None else None)
        if key in made:
            rename[n.output[0]] = made[key]
            continue
        arr = numpy_helper.to_array(inits[n.input[0]])
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(np.transpose(arr, perm)), n.output[0]))
        made[key] = n.output[0]
    for n in folded:
        graph.node.remove(n)
    for n in graph.node:  # top level only, as dedupe_initializers
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    read = {x for n in graph.node for x in n.input}
    for name in {n.input[0] for n in folded} - read:   # a weight read only through its Transpose
        graph.initializer.remove(inits[name])
    return len(folded)


def _rank4(model) -> set[str]:
    """Names of the tensors that ONNX shape inference gives rank 4."""
    import onnx
    g = onnx.shape_inference.infer_shapes(model).graph
    return {v.name for v in list(g.value_info) + list(g.input) + list(g.output)
            if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")
            and len(v.type.tensor_type.shape.dim) == 4}


def _axes(node, graph) -> list[int] | None:
    """A ReduceMean's axes, from its attribute (opset < 18) or a constant second input; None if unknown."""
    from onnx import numpy_helper
    if len(node.input) < 2 or not node.input[1]:
        return _attr(node, "axes")
    name = node.input[1]
    for i in graph.initializer:
        if i.name == name:
            return [int(a) for a in numpy_helper.to_array(i).ravel()]
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name and _attr(n, "value") is not None:
            return [int(a) for a in numpy_helper.to_array(_attr(n, "value")).ravel()]
    return None


def global_average_pools(model) -> int:
    """``ReduceMean(x, axes=(2, 3), keepdims=1)`` on a rank-4 ``x`` (NCHW) becomes ``GlobalAveragePool(x)``,
    the same op; returns how many. Exact up to float summation order.

    torch exports a CNN's spatial means (``mean((2, 3), keepdim=True)``, ``AdaptiveAvgPool2d(1)``) as
    ReduceMean, which ONNX Runtime has no int8 kernel for: in an int8-static file each one (every
    squeeze-excite block and the final pool) ran float between a DequantizeLinear and a QuantizeLinear.
    GlobalAveragePool has one (QLinearGlobalAveragePool). With `onnx_cpu.CNN_STATIC_OPS` RegNetY-400MF
    int8-static went from 0.72x to 0.67x fp32 p50 (RESULTS.md "#17, fourteenth session"); the fp32 file is
    not rewritten."""
    from onnx import helper
    graph = model.graph
    rank4 = _rank4(model)
    done = 0
    for idx, n in enumerate(list(graph.node)):
        if n.op_type != "ReduceMean" or n.input[0] not in rank4 or _attr(n, "keepdims", 1) != 1:
            continue
        axes = _axes(n, graph)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            continue
        pool = helper.make_node("GlobalAveragePool", [n.input[0]], list(n.output), name=n.name)
        graph.node.remove(n)
        graph.node.insert(idx, pool)
        done += 1
    return done


def dedupe_initializers(graph) -> int:
    """Keep one copy of byte-identical initializers (same dtype, shape and bytes; external data left
    alone) and point every reader at it; returns the bytes saved."""
    import hashlib

    from onnx import TensorProto, numpy_helper
    first: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    graph_io = {x.name for x in list(graph.input) + list(graph.output)}
    for init in list(graph.initializer):
        if init.data_location == TensorProto.EXTERNAL or init.name in graph_io:
            continue
        key = (init.data_type, tuple(init.dims), hashlib.sha256(numpy_helper.to_array(init).tobytes()).digest())
        if key in first:
            rename[init.name] = first[key]
        else:
            first[key] = init.name
    if not rename:
        return 0
    saved = 0
    for init in list(graph.initializer):
        if init.name in rename:
            saved += init.ByteSize()
            graph.initializer.remove(init)
    for n in graph.node:  # subgraphs (If / Loop bodies) keep their own names: top level only
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    return saved


def strip_node_metadata(path: Path, metadata_only: bool = False) -> int:
    """Drop every node's metadata_props and doc_string, the intermediate ``value_info`` and duplicate
    initializers in the ONNX file at ``path`` (rewritten in place, atomically); returns the bytes saved.
    ``metadata_only``: the node metadata only (shapes and initializers as the exporter wrote them)."""
    import onnx
    before = path.stat().st_size
    m = onnx.load(str(path), load_external_data=False)
    for n in m.graph.node:
        del n.metadata_props[:]
        n.doc_string = ""
    if not metadata_only:
        del m.graph.value_info[:]  # shapes of inner tensors: ONNX Runtime infers them again
        dedupe_initializers(m.graph)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save(m, str(tmp))
    tmp.replace(path)
    return before - path.stat().st_size
