"""Accuracy gate and per-layer sensitivity for quantized conversions.

The gate compares the quantized artifact (run through `runtime`) with the fp32 PyTorch
module on held-out inputs. Per output it records cosine similarity, max/mean absolute error
and, for classifier-like outputs (float, rank >= 2, last dim >= 2, not named as features such as
``last_hidden_state`` or ``pooler_output``), top-1 agreement.

Default gate (``max_drop="default"``): every scorable output must keep top-1 agreement >= 99%
(classifier-like outputs) or a min cosine >= 0.99 (anything else). An output whose fp32 values are
all below ``NOT_SCORABLE_BELOW`` in magnitude (as with random-init BatchNorm stacks, whose logits
are ~1e-9) cannot be compared meaningfully: it is reported as not scorable instead of scored, unless
the quantized output collapsed to a constant (all zeros, say) where fp32 varies, which fails the gate.

Two refinements keep top-1 agreement meaningful:
- Embeddings are not class scores: an output whose every row has unit L2 norm (a normalised
  sentence or image embedding, such as all-MiniLM-L6-v2's) is judged by cosine, whatever its name.
- A near tie is no decision: top-1 agreement counts only the positions where fp32's top-1 margin
  (best minus second-best score) is at least one int8 step of that output's fp32 range
  (``(max - min) / 255``, the finest difference an int8 tensor over that range can hold). When no
  position clears it (the flat logits of a random-weight classifier: RepViT's margins are ~0.8
  step on every input), the output is reported as not scorable, with the figures, never as passed.

``drop`` is what a numeric ``max_drop=`` bounds:
- with a user ``metric(outputs, inputs) -> float`` (higher is better; ``outputs`` is a list
  with one list of numpy arrays per sample): ``metric(fp32) - metric(quantized)``;
- otherwise the worst output's ``1 - top-1 agreement`` (classifier-like) or ``1 - mean cosine``.

Sensitivity: forward hooks on every Linear/Conv layer of the fp32 module capture its inputs and
outputs on calibration data; each layer is then re-run alone with the scheme's quantization
simulated (per-channel symmetric weights, per-tensor activations: calibrated ranges for static
schemes, per-sample ranges for dynamic ones) and ranked by its relative output error, averaged
over output channels (a few huge channels cannot hide the small ones that quantization crushes). The same
ranking drives automatic fallback: the most sensitive layers are kept in float one at a time.
"""

from __future__ import annotations

import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgesdk.converters.programs import flatten_outputs

LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d)
NOT_SCORABLE_BELOW = 1e-6   # fp32 |output| below this everywhere: too small to compare (random weights)
DEFAULT_MIN_TOP1 = 0.99     # default gate, classifier-like outputs
DEFAULT_MIN_COSINE = 0.99   # default gate, other float outputs
DEFAULT_METRIC_DROP = 0.01  # default gate with a user metric: metric(fp32) - metric(quantized)
INT8_STEPS = 255            # an output's fp32 range over this: the finest difference int8 can keep
UNIT_NORM_TOL = 1e-3        # every row's L2 norm within this of 1: a normalised embedding
GATE_MODES = ("default", "max_drop", "off")


# outputs named like these are features, not class scores: their argmax means nothing
# (and carried generation state: "cross_k_1", "new_v_0", "kv_3" are keys and values, not scores)
_NOT_SCORES = re.compile(r"hidden|pooler|embed|feature|attention|state|past|cache|key|value"
                         r"|(^|[_.])(k|v|kv)([_.]?\d*)$|(^|[_.])(k|v|kv)_", re.I)


def _classifier_like(a: np.ndarray, name: str = "") -> bool:
    """Class scores: float, last dim >= 2, and not named as features (``last_hidden_state``,
    ``pooler_output``, ``*_embeds``...), so top-1 agreement is what matters for it."""
    return a.dtype.kind == "f" and a.ndim >= 2 and a.shape[-1] >= 2 and not _NOT_SCORES.search(name)


def _unit_norm_rows(arrays: list[np.ndarray]) -> bool:
    """Every row (last dim) of every sample has L2 norm 1: a normalised embedding. Probability
    rows (non-negative, summing to 1) are excluded: a confident softmax is nearly one-hot."""
    for a in arrays:
        if a.dtype.kind != "f" or a.ndim < 1 or a.shape[-1] < 2 or not a.size:
            return False
        a64 = a.astype(np.float64)
        if not np.all(np.abs(np.linalg.norm(a64, axis=-1) - 1.0) <= UNIT_NORM_TOL):
            return False
        if a64.min() >= 0 and np.all(np.abs(a64.sum(-1) - 1.0) <= UNIT_NORM_TOL):
            return False
    return True


def _top1_margins(a: np.ndarray) -> np.ndarray:
    """fp32 best minus second-best score at each position (all dims but the last). (N,)"""
    part = np.partition(a.astype(np.float64).reshape(-1, a.shape[-1]), -2, axis=-1)
    return part[:, -1] - part[:, -2]


def cosine(a64: np.ndarray, b64: np.ndarray) -> float:
    """Cosine similarity of two flat float64 arrays (1.0 when both are zero, 0.0 when one is).

    The sums run in numpy's own pairwise loop, not BLAS: OpenBLAS splits a dot product's sum by its
    thread count, which Ray sets to 1 in a one-CPU task (OMP_NUM_THREADS), so the last digits of a
    cosine depended on the executor that converted the artifact (4 of the demo's 48 rows differed
    between the serial and ray executors, by 1-3 units in the 16th digit)."""
    na, nb = float(np.sqrt(np.sum(a64 * a64))), float(np.sqrt(np.sum(b64 * b64)))
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.sum(a64 * b64)) / (na * nb)


def evaluate(module: nn.Module, binding, samples, metric=None) -> dict:
    """Run every sample through PyTorch and the artifact; return the gate's numbers."""
    names = [s.name for s in binding.spec.outputs]
    ref_all, got_all, inputs_all = [], [], []
    for sample in samples:
        with torch.no_grad():
            ref = [t.detach().cpu().numpy() for t in flatten_outputs(module(*sample))]
        arrays = [t.detach().cpu().contiguous().numpy() for t in sample]
        got = binding.run(arrays)
        ref_all.append(ref)
        got_all.append(got)
        inputs_all.append(arrays)
    outputs = []
    for i, name in enumerate(names):
        r = [s[i] for s in ref_all]
        g = [s[i] for s in got_all]
        cos, maxe, meane, refm, gotm = [], 0.0, [], 0.0, 0.0
        agree = total = positions = 0
        scores = bool(r) and _classifier_like(r[0], name) and not _unit_norm_rows(r)
        # one int8 step of this output's fp32 range: margins below it are near ties, not decisions
        step = (max(float(a.max()) for a in r) - min(float(a.min()) for a in r)) / INT8_STEPS if scores else 0.0
        for a, b in zip(r, g):
            a64, b64 = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
            cos.append(cosine(a64, b64))
            d = np.abs(a64 - b64)
            maxe = max(maxe, float(d.max()) if d.size else 0.0)
            refm = max(refm, float(np.abs(a64).max()) if a64.size else 0.0)
            gotm = max(gotm, float(np.abs(b64).max()) if b64.size else 0.0)
            meane.append(float(d.mean()) if d.size else 0.0)
            if scores:
                keep = _top1_margins(a) >= step  # (positions,)
                same = a.reshape(-1, a.shape[-1]).argmax(-1) == b.reshape(-1, b.shape[-1]).argmax(-1)
                agree += int(same[keep].sum())
                total += int(keep.sum())
                positions += int(keep.size)
        row = {"name": name, "cosine_mean": float(np.mean(cos)), "cosine_min": float(np.min(cos)),
               "max_abs_err": maxe, "mean_abs_err": float(np.mean(meane)), "ref_max_abs": refm, "got_max_abs": gotm}
        if scores:
            row.update(kind="class scores", top1_positions=positions, top1_near_ties=positions - total,
                       int8_step=step)
        elif r and _unit_norm_rows(r):
            row["kind"] = "embedding (unit-norm rows): judged by cosine"
        if total:
            row["top1_agreement"] = agree / total
            row["drop"] = 1.0 - row["top1_agreement"]
        else:
            row["drop"] = 1.0 - row["cosine_mean"]
        row["scorable"] = not (r and r[0].dtype.kind == "f" and refm < NOT_SCORABLE_BELOW)
        if not row["scorable"]:
            row["not_scorable"] = (f"fp32 |values| <= {refm:.2g} everywhere (< {NOT_SCORABLE_BELOW:g}): too small "
                                   "to compare, as with random weights; judge it on trained weights or real inputs")
        elif scores and not total:
            row["scorable"] = False
            row["not_scorable"] = (f"fp32 top-1 margin below one int8 step ({step:.2g} = range / {INT8_STEPS}) at "
                                   f"all {positions} positions: near ties, no decision an int8 output can keep (flat "
                                   "logits, as with random weights); judge it on trained weights or real inputs")
        # a quantized output that is constant (e.g. all zeros) where fp32 varies has lost the
        # output whatever its scale: the gate fails it even when it cannot score it finely
        row["collapsed"] = bool(all(np.ptp(b) == 0 for b in g if b.size) and any(np.ptp(a) > 0 for a in r if a.size))
        outputs.append(row)
    result = {"samples": len(ref_all), "outputs": outputs}
    if metric is not None:
        fp32 = float(metric(ref_all, inputs_all))
        quant = float(metric(got_all, inputs_all))
        result.update(metric_fp32=fp32, metric_quantized=quant, drop=fp32 - quant, drop_basis="metric")
    else:
        result.update(worst_drop(outputs))
    result["min_cosine"] = min(r["cosine_min"] for r in outputs)
    return result


def worst_drop(outputs: list[dict]) -> dict:
    """``drop`` and its basis: the worst scorable output (all outputs when none is scorable)."""
    pool = [r for r in outputs if r.get("scorable", True)] or outputs
    worst = max(pool, key=lambda r: r["drop"])
    return {"drop": worst["drop"], "drop_basis": (f"1 - top-1 agreement of {worst['name']!r}"
                                                  if "top1_agreement" in worst else
                                                  f"1 - mean cosine of {worst['name']!r}")}


def judge(acc: dict, max_drop, metric: bool) -> dict:
    """The gate's verdict on `evaluate`'s numbers.

    ``max_drop``: ``"default"`` (per-output-kind thresholds, see the module doc), a number
    (``drop <= max_drop``) or None (off). ``passed`` is True/False, or None when the gate is off
    or no output is scorable (``not_scorable`` lists them with why).
    """
    outs = acc["outputs"]
    skipped = [{"output": r["name"], "why": r["not_scorable"]} for r in outs if not r.get("scorable", True)]
    collapsed = [f"{r['name']}: the quantized output is constant (max |value| {r.get('got_max_abs', 0):.2g}) where "
                 "fp32 varies: the artifact lost this output" for r in outs if r.get("collapsed")]
    scorable = metric or len(skipped) < len(outs)
    gate = {"mode": "off" if max_drop is None else "default" if max_drop == "default" else "max_drop",
            "max_drop": None if max_drop in (None, "default") else max_drop, "drop": acc["drop"],
            "drop_basis": acc["drop_basis"], "metric": "user" if metric else "default", "not_scorable": skipped}
    if max_drop is None:
        gate["passed"] = None
        return gate
    if collapsed and not metric:
        gate.update(passed=False, failing=collapsed)
        return gate
    if not scorable:
        gate["passed"] = None
        return gate
    if max_drop == "default" and not metric:
        failing = []
        for r in outs:
            if not r.get("scorable", True):
                continue
            if "top1_agreement" in r:
                ok = r["top1_agreement"] >= DEFAULT_MIN_TOP1
                need = f"top-1 agreement {r['top1_agreement'] * 100:.1f}% < {DEFAULT_MIN_TOP1 * 100:g}%"
            else:
                ok = r["cosine_min"] >= DEFAULT_MIN_COSINE
                need = f"min cosine {r['cosine_min']:.4f} < {DEFAULT_MIN_COSINE:g}"
            if not ok:
                failing.append(f"{r['name']}: {need}")
        gate.update(thresholds={"min_top1_agreement": DEFAULT_MIN_TOP1, "min_cosine": DEFAULT_MIN_COSINE},
                    passed=not failing, failing=failing)
        return gate
    bound = DEFAULT_METRIC_DROP if max_drop == "default" else max_drop
    gate.update(max_drop=bound, passed=acc["drop"] <= bound)
    return gate


# ------------------------------------------------------------------------------ sensitivity

def _fq_tensor(x: torch.Tensor, lo: float, hi: float, bits: int = 8) -> torch.Tensor:
    """Asymmetric per-tensor fake quantization over [lo, hi] (range always includes 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    qmax = 2 ** bits - 1
    scale = (hi - lo) / qmax if hi > lo else 1.0
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, qmax) - zero) * scale


def _fq_weight(w: torch.Tensor, bits: int, group: int | None) -> torch.Tensor:
    """Symmetric per-output-channel (or per-group along the input dim) weight fake quantization."""
    qmax = 2 ** (bits - 1) - 1
    if group:
        flat = w.reshape(w.shape[0], -1)
        pad = (-flat.shape[1]) % group
        g = F.pad(flat, (0, pad)).reshape(w.shape[0], -1, group)
        scale = g.abs().amax(-1, keepdim=True).clamp(min=1e-12) / qmax
        q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax) * scale
        return q.reshape(w.shape[0], -1)[:, : flat.shape[1]].reshape(w.shape)
    dims = tuple(range(1, w.ndim))
    scale = w.abs().amax(dim=dims, keepdim=True).clamp(min=1e-12) / qmax
    return torch.clamp(torch.round(w / scale), -qmax - 1, qmax) * scale


SCHEME_SIM = {
    # scheme: (weight bits, weight group, activation mode)
    "int8-static": (8, None, "static"),
    "int8-dynamic": (8, None, "dynamic"),
    "int4-weight": (4, 32, "dynamic"),
    "fp16": (16, None, "fp16"),
    "uint8-static": (8, None, "static"),
    "uint16-static": (8, None, "static16"),
    "int8-weight": (8, None, "weight-only"),   # Core ML weight compression: activations stay float
    "palettize4": (4, None, "weight-only"),     # approximated as 4-bit linear weights
}


def _apply(layer: nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.Linear):
        return F.linear(x, w, layer.bias)
    return layer._conv_forward(x, w, layer.bias)


def layer_sensitivity(module: nn.Module, samples, scheme: str, limit: int = 32) -> list[dict]:
    """Rank Linear/Conv layers by simulated quantization error (descending)."""
    bits, group, act = SCHEME_SIM.get(scheme, (8, None, "static"))
    layers = {name: m for name, m in module.named_modules() if isinstance(m, LAYER_TYPES) and name}
    seen: dict[str, list] = {n: [] for n in layers}
    hooks = [m.register_forward_hook(lambda mod, inp, out, n=n: seen[n].append((inp[0].detach(), out.detach())))
             for n, m in layers.items()]
    try:
        with torch.no_grad():
            for sample in list(samples)[:limit]:
                module(*sample)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    with torch.no_grad():
        for name, layer in layers.items():
            pairs = seen[name]
            if not pairs:
                continue  # layer not called through forward (e.g. MultiheadAttention.out_proj)
            if act == "fp16":
                w = layer.weight.half().float()
            else:
                w = _fq_weight(layer.weight, bits, group)
            in_lo = min(float(x.min()) for x, _ in pairs)
            in_hi = max(float(x.max()) for x, _ in pairs)
            out_lo = min(float(y.min()) for _, y in pairs)
            out_hi = max(float(y.max()) for _, y in pairs)
            ch = 1 if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else -1
            err = norm = None
            for x, y in pairs:
                if act == "weight-only":
                    xq = x
                elif act == "fp16":
                    xq = x.half().float()
                elif act == "dynamic":
                    xq = _fq_tensor(x, float(x.min()), float(x.max()))
                else:
                    xq = _fq_tensor(x, in_lo, in_hi, 16 if act == "static16" else 8)
                yq = _apply(layer, xq, w)
                if act in ("static", "static16"):  # static schemes also quantize the layer's output
                    yq = _fq_tensor(yq, out_lo, out_hi, 16 if act == "static16" else 8)
                # per output channel, so that a few huge channels cannot hide crushed small ones
                dims = [d for d in range(y.ndim) if d != (ch % y.ndim)]
                e, n = ((yq - y) ** 2).sum(dim=dims), (y ** 2).sum(dim=dims)
                err, norm = (e, n) if err is None else (err + e, norm + n)
            live = norm > 0
            rel = float(torch.sqrt(err[live] / norm[live]).mean()) if bool(live.any()) else 0.0
            rows.append({"layer": name, "type": type(layer).__name__, "rel_error": rel,
                         "input_range": [in_lo, in_hi], "output_range": [out_lo, out_hi]})
    rows.sort(key=lambda r: -r["rel_error"])
    return rows
