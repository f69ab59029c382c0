"""LiteRT size classes: a dynamic dimension LiteRT cannot resize, as one signature per size.

litert-torch 0.10 cannot lower symbolic sizes, and a `.tflite` exported at the example size
resizes only where no op bakes a size in. A text encoder bakes the sequence length into its
position-id slice, its mask expansion and its attention reshapes, so resizing ``input_ids``
breaks it ("num_input_elements != num_output_elements"). When the resized model does not match
PyTorch at the range's ends, the converter writes instead one signature per size class (the
range's ends and the powers of two between, e.g. 8, 16, 32, 64, 128 for 8..128) into the same
`.tflite`. The runtime pads an input with zeros along the dynamic dim to the smallest class that
holds it, runs that signature and cuts the outputs back to the input's size; the manifest
records the classes (``extra.litert_classes``). Padding is only right for a model that ignores
the padded positions (a text encoder given ``attention_mask``): the conversion's verification at
the range's ends and a middle point, against PyTorch at the true size, decides.

    # 8..128 tokens on litert-cpu: signatures forward_seq_8 ... forward_seq_128, one file
    art = edgesdk.convert(bert, None, "litert-cpu", example_kwargs={"input_ids": ids, "attention_mask": mask},
                          dynamic_shapes={"input_ids": {1: ("seq", 8, 128)}, "attention_mask": {1: ("seq", 8, 128)}})
    runtime.load(art.path).run([ids[:, :50], mask[:, :50]])   # runs the 64 class, returns 50 positions
"""

from __future__ import annotations

import numpy as np
import torch

from edgesdk.runtime.errors import ConfigError


def sizes(lo: int, hi: int) -> list[int]:
    """The class sizes of a range: its ends and the powers of two between them."""
    out, p = [lo], 1
    while p < hi:
        p *= 2
        if lo < p < hi:
            out.append(p)
    return out + [hi]


def signature(program: str, symbol: str, n: int) -> str:
    return f"{program}_{symbol}_{n}"


def _symbol(prog) -> str:
    syms = list(prog.dynamic.ranges)
    if len(syms) != 1:
        raise ConfigError(f"litert-cpu: this model bakes its dynamic sizes in, so LiteRT needs one signature per "
                          f"size class, which works for one dynamic dimension; got {len(syms)} ({syms}). Make one "
                          "dimension dynamic (e.g. the sequence length) and export one artifact per size of the other")
    return syms[0]


def fit(sample: tuple, prog, n: int) -> tuple:
    """A sample cut or zero-padded to size ``n`` along the program's dynamic dims."""
    sym = _symbol(prog)
    out = []
    for name, t in zip(prog.input_names, sample):
        for d, s in prog.dynamic.inputs.get(name, {}).items():
            if s != sym:
                continue
            if t.shape[d] >= n:
                t = t.narrow(d, 0, n)
            else:
                pad = list(t.shape)
                pad[d] = n - t.shape[d]
                t = torch.cat([t, torch.zeros(pad, dtype=t.dtype)], d)
        out.append(t.contiguous())
    return tuple(out)


def export(program: str, prog, path) -> dict[str, str]:
    """Write one signature per size class of ``prog`` to ``path``; returns program -> the
    largest class's signature (the manifest's method; the classes go to `entry`)."""
    import litert_torch
    sym = _symbol(prog)
    lo, hi = prog.dynamic.ranges[sym]
    conv = None
    for n in sizes(lo, hi):
        conv = (litert_torch if conv is None else conv).signature(
            signature(program, sym, n), prog.module, fit(prog.example_inputs, prog, n))
    conv.convert().export(str(path))
    return {program: signature(program, sym, hi)}


def entry(path, programs: dict) -> dict:
    """``extra.litert_classes`` for the programs written by `export` (empty when none was)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesdk.runtime.manifest import natural_order as _natural
    listed = Interpreter(model_path=str(path)).get_signature_list()
    out = {}
    for name, prog in programs.items():
        if not prog.dynamic or len(prog.dynamic.ranges) != 1:
            continue
        sym = _symbol(prog)
        ns = sizes(*prog.dynamic.ranges[sym])
        sigs = [signature(name, sym, n) for n in ns]
        if not all(s in listed for s in sigs):
            continue
        own = list(prog.output_names)
        out[name] = {"symbol": sym, "sizes": ns, "signatures": sigs, "pad": 0,
                     "io": {s: {"inputs": _natural(listed[s]["inputs"]),
                                "outputs": own if sorted(own) == sorted(listed[s]["outputs"])
                                else _natural(listed[s]["outputs"])} for s in sigs}}
    return out


def matches(path, sig: str, prog, point: dict[str, int]) -> bool:
    """Run the `.tflite` resized to ``point`` and compare with PyTorch (the verification's
    tolerance); False when LiteRT refuses the size or the outputs differ."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesdk import runtime
    from edgesdk.runtime.manifest import natural_order as _natural
    from edgesdk.converters.programs import flatten_outputs
    arrays = runtime.example_inputs(prog.input_specs(), seed=7, dims=point)
    with torch.no_grad():
        ref = [t.numpy() for t in flatten_outputs(prog.module(*[torch.from_numpy(a) for a in arrays]))]
    try:
        it = Interpreter(model_path=str(path))
        io = it.get_signature_list()[sig]
        runner = it.get_signature_runner(sig)
        res = runner(**{n: (a.astype(np.int32) if a.dtype == np.int64 else a)
                        for n, a in zip(_natural(io["inputs"]), arrays)})
        own = list(prog.output_names)
        names = own if sorted(own) == sorted(res) else _natural(res)
        got = [res[n] for n in names]
    except Exception:  # LiteRT refused the size: a size is baked in
        return False
    for r, g in zip(ref, got):
        if r.shape != g.shape:
            return False
        if r.dtype.kind == "f" and float(np.abs(r - g).max(initial=0)) > 1e-4 + 1e-4 * float(np.abs(r).max(initial=0)):
            return False
    return True
