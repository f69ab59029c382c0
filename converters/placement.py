"""The manifest's normalized ``placement`` block: where an artifact's compute runs, the same
shape for every target, so nothing above the converters reads a backend's own report.

A converter builds it from its export facts (`Converter.placement`, written by
`converters.convert` beside ``backend`` and ``versions``)::

    {"kind": "NPU" | "GPU" | "delegate",    # what "the accelerator" is for this target
     "fraction": 0.97,                       # share of compute nodes on it (lowest over programs); None: unknown
     "on_accelerator": 130, "compute_nodes": 134,  # node counts, None where the tool gives none
     "fully_accelerated": None,              # what the accelerator's compiler said, where it says
     "fallback": [{"program": "forward", "node": "/Gather_3", "op_type": "Gather",
                   "why": "ran on ONNX Runtime's CPU provider"}],  # a delegate lists op types, with "count"
     "programs": {"forward": 0.97}}          # fraction per program

Plain-CPU targets write none. `of` reads the block of any manifest; one written before the
block existed gets it from its target's converter, from the same export facts.

Example::

    from edgesdk.converters import Artifact
    from edgesdk.converters.placement import of
    p = of(Artifact.open("out/mlp-qnn-htp").manifest)
    print(p["kind"], p["fraction"], [f["node"] for f in p["fallback"]])
"""

from __future__ import annotations

KINDS = ("NPU", "GPU", "delegate")


def block(kind: str, programs: dict[str, dict], *, fully_accelerated: bool | None = None) -> dict:
    """The normalized block from per-program facts: ``programs`` maps a program name to
    ``{"fraction", "on_accelerator", "compute_nodes", "fallback": [{node, op_type, why}]}``
    (counts may be None)."""
    if kind not in KINDS:
        raise ValueError(f"placement kind {kind!r} is not one of {KINDS}")
    fr = [p.get("fraction") for p in programs.values()]

    def total(key):
        vals = [p.get(key) for p in programs.values()]
        return None if not vals or any(v is None for v in vals) else sum(vals)
    return {"kind": kind, "fraction": None if not fr or any(f is None for f in fr) else min(fr),
            "on_accelerator": total("on_accelerator"), "compute_nodes": total("compute_nodes"),
            "fully_accelerated": fully_accelerated,
            "fallback": [{"program": name, **f} for name, p in programs.items() for f in p.get("fallback", [])],
            "programs": {name: p.get("fraction") for name, p in programs.items()}}


def from_partition(partition: dict) -> dict | None:
    """The block of an ExecuTorch delegate from its per-method partition report (the
    ``delegation_report`` shape: delegated / non-delegated node counts, ops left outside)."""
    progs = {}
    for method, r in (partition or {}).items():
        if not isinstance(r, dict) or not isinstance(r.get("delegated_fraction"), (int, float)):
            continue
        outside = r.get("outside_delegate") or []
        reasons = {row.get("op"): row.get("reason") for row in (r.get("not_delegated") or [])
                   if isinstance(row, dict)}
        progs[method] = {
            "fraction": r["delegated_fraction"], "on_accelerator": r.get("delegated_nodes"),
            "compute_nodes": (None if r.get("delegated_nodes") is None or r.get("non_delegated_nodes") is None
                              else r["delegated_nodes"] + r["non_delegated_nodes"]),
            "fallback": [{"node": o["op"], "op_type": o["op"], "count": o.get("count", 1),
                          "why": reasons.get(o["op"]) or "left on ExecuTorch's portable kernels"} for o in outside]}
    return block("delegate", progs) if progs else None


def of(manifest) -> dict | None:
    """The artifact's placement block: the manifest's own, or for a manifest written before the
    block existed, its target converter's reading of the same export facts (None for plain-CPU
    targets and unknown targets)."""
    if manifest.placement is not None:
        return manifest.placement
    from edgesdk.converters.registry import TARGETS
    if manifest.target not in TARGETS.names():
        return None
    return TARGETS.get(manifest.target)().placement(manifest.extra)
