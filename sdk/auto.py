"""`target="auto"` and `quantize="auto"`: the fastest artifact that keeps the model's quality.

`edgesdk.convert(model, x, target="auto")` converts the model to every target that runs on this
machine's own hardware (or to the targets of one ``device`` class: ``"cpu"``, ``"npu"``,
``"gpu"``, which also ranks simulated NPUs and software GPUs among themselves, labelled so), with
each target's schemes; every candidate goes through the usual verification (fp32) or accuracy gate
(quantized), is profiled in an isolated child process at its best thread count, and the
fastest one that passed is published at ``out_dir/name``. ``quantize="auto"`` does the same
within one target. The rules, applied by `choose` (the pipeline's recommendation uses them too):

- only candidates that passed the gate count (fp32 artifacts are verified against PyTorch);
- a quantized candidate competes only if it is shown faster than the same model's fp32 on its
  target: re-timed side by side with it (interleaved rounds), faster in enough paired rounds
  that a coin would do as well at most 5% of the time (7 of 8; one-sided sign test) with a
  median paired ratio below 1; without side-by-side rounds (the pipeline's profiles), faster
  by more than the 3% noise band. Otherwise fp32 wins on that target: a scheme whose gain
  is inside the noise is never worth the risk of being slower;
- the lowest latency wins; candidates within 3% of it tie, and ties go to the smaller artifact
  (every quantized one among them was shown faster than its target's fp32, so the pick never
  is slower than that fp32).

Latency is the p50 of a run, or for generation artifacts the p50 time to first token plus the
new tokens at the p50 time per token (a whole generation). Candidates within 15% of the fastest
(and the fp32 baselines of their targets) are then re-timed side by side, interleaved in one
process (`runtime.profile.interleaved`), so a burst of load during one profile cannot decide.
Where a comparison the rule makes is still a close call after those 8 rounds (median paired
ratio within 5% of 1 and no sign test decides either way), the pick, the candidates within 5%
of it and their targets' fp32 get more head-to-head rounds (8 at a time, at most 32 in all) and
the decision is made on all of them (`auto_measure.settle`). The rule lives in
`edgesdk.auto_rule`, the measuring in `edgesdk.auto_measure`.

Every candidate, with its size, latency, quality and why it lost, is written to
``out_dir/<name>.candidates/candidates.{json,md}`` (the candidate artifacts stay there unless
``keep_candidates=False``) and summarised in the winner's manifest under ``auto``.

Example::

    import torch, edgesdk
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10)).eval()
    x = torch.randn(1, 64)
    calib = [(torch.randn(1, 64),) for _ in range(32)]
    art = edgesdk.convert(model, (x,), target="auto", device="cpu", calibration=calib, max_drop=0.01,
                      out_dir="out", name="mlp")
    print(art.target, art.manifest.quantization["scheme"], art.selection["pick"])
    print(art.selection["table_md"])
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.converters import Artifact, convert as _convert, get_converter
from edgesdk.converters.artifact import new_workdir, publish, write_manifest
from edgesdk.converters.convert import default_name
from edgesdk.runtime.errors import ConfigError, SdkError, TargetUnavailableError, ToleranceError
from edgesdk.auto_measure import CONFIRM_ROUNDS, CONFIRM_WITHIN, confirm, measure_and_choose, settle  # noqa: F401
from edgesdk.auto_rule import AUTO_MAX_DROP, FASTER_P, TIE, choose, gate_verdict, latency_ms, sign_test_p  # noqa: F401

DEVICES = ("cpu", "npu", "gpu")
_UNSET = object()


@dataclass
class AutoArtifact(Artifact):
    """The picked artifact plus the selection: ``selection["candidates"]`` (every candidate with
    size, latency, quality and why it lost), ``selection["pick"]``, ``selection["table_md"]``."""

    selection: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- candidates

def _plan(target: str, quantize, device, calibration, multi_program: bool, model) -> tuple[list, list]:
    """(candidates to convert, candidates skipped with why)."""
    from edgesdk.converters import targets
    all_t = {t.name: t for t in targets()}
    if device is not None and device not in DEVICES:
        raise ConfigError(f"device {device!r} is not one of {', '.join(DEVICES)} (or None for every device class)")
    if target == "auto":
        pool = [t for t in all_t.values() if device is None or t.device == device]
        if not pool:
            raise ConfigError(f"no registered target has device {device!r}")
    else:
        if target not in all_t:
            raise ConfigError(f"Unknown target {target!r}. Available: auto, {', '.join(sorted(all_t))}")
        if device is not None and all_t[target].device != device:
            raise ConfigError(f"target {target!r} is a {all_t[target].device} target, not {device!r}; drop device= "
                              "or use target='auto'")
        pool = [all_t[target]]
    todo, skipped = [], []
    for t in pool:
        if not t.runs_here:
            skipped.append(_row(t, "-", "skipped", f"cannot run here, so nothing can be measured: {t.why_not}"))
            continue
        if t.runs != "yes" and device is None and target == "auto":
            skipped.append(_row(t, "-", "skipped", f"runs here only as {t.runs}: its latency is not a device's, so it "
                                                   f"does not compete with real hardware (device={t.device!r} ranks "
                                                   f"{t.device} targets among themselves)"))
            continue
        schemes = list(t.quantization) if quantize in (None, "auto") else [quantize]
        conv = get_converter(t.name)
        for s in schemes:
            why = None
            if s not in t.quantization:
                why = f"{t.name} has no scheme {s!r} (offers {', '.join(t.quantization)})"
            elif s == "int8-qat":
                from edgesdk.converters.qat import is_quantized_graph
                if not is_quantized_graph(model):
                    why = "needs a quantization-aware trained model (converters.qat.convert_qat)"
            elif s in conv.calibrated and calibration is None:
                why = f"needs calibration data (calibration=...) for {s}"
            elif s in conv.calibrated and multi_program and not hasattr(model, "edge_generation"):
                why = (f"{s}: calibrated quantization of a model with several programs needs a generation "
                       "model (edge_generation) and calibration prompts")
            (skipped if why else todo).append(_row(t, s, "skipped" if why else "pending", why or ""))
    if not todo:
        raise TargetUnavailableError(
            "target='auto' has no candidate that can be converted and measured here: "
            + "; ".join(f"{c['target']} {c['scheme']}: {c['why']}" for c in skipped))
    return todo, skipped


def _row(t, scheme: str, status: str, why: str) -> dict:
    return {"target": t.name, "device": t.device, "runs": t.runs, "scheme": scheme, "status": status, "why": why,
            "picked": False, "path": None, "size_bytes": None, "latency_ms": None, "p50_ms": None, "threads": None,
            "quality": None}


def convert_auto(model, example_inputs, target: str = "auto", *, quantize=None, device: str | None = None,
                 out_dir="edgesdk-out", name: str | None = None, calibration=None, max_drop=_UNSET,
                 iters: int = 100, threads="auto", isolate: bool = True, keep_candidates: bool = True,
                 progress=None, **options) -> AutoArtifact:
    """Convert to every candidate target x scheme, gate, profile, publish the fastest that
    passed (see the module docstring). ``edgesdk.convert(..., target="auto")`` and
    ``edgesdk.convert(..., quantize="auto")`` call this."""
    say = progress or (lambda msg: None)
    name = name or default_name(model, "auto" if target == "auto" else target, "fp32")
    out_dir = Path(out_dir)
    cand_dir = out_dir / f"{name}.candidates"
    cands = convert_candidates(model, example_inputs, target, quantize=quantize, device=device, cand_dir=cand_dir,
                               calibration=calibration, max_drop=max_drop, progress=say, **options)
    pick = measure_and_choose(cands, iters=iters, threads=threads, isolate=isolate, progress=say)
    if pick is None:
        _write_table(cand_dir, name, cands, None)
        raise TargetUnavailableError(
            "target='auto': no candidate passed its gate and profiled here: "
            + "; ".join(f"{c['target']} {c['scheme']}: {c['why']}" for c in cands) + f". Table: {cand_dir}")
    selection = _write_table(cand_dir, name, cands, pick)
    final = _publish(Path(pick["path"]), out_dir, name, selection)
    if not keep_candidates:
        shutil.rmtree(cand_dir, ignore_errors=True)
        selection["table"] = None
    say(f"picked {pick['target']} {pick['scheme']}: {pick['why']}")
    opened = Artifact.open(final)
    return AutoArtifact(opened.path, opened.manifest, "", selection)


def convert_candidates(model, example_inputs, target: str = "auto", *, quantize=None, device: str | None = None,
                       cand_dir, calibration=None, max_drop=_UNSET, progress=None, **options) -> list[dict]:
    """Convert every candidate into ``cand_dir/<target>-<scheme>`` through `converters.convert`
    (verification and accuracy gate included). Candidates that passed have status
    ``"converted"``; the others ``"rejected"``, ``"failed"`` or ``"skipped"`` with ``why``."""
    say = progress or (lambda msg: None)
    multi = example_inputs is None and hasattr(model, "edge_programs") and len(model.edge_programs()) > 1
    todo, skipped = _plan(target, quantize, device, calibration, multi, model)
    for i, c in enumerate(todo, 1):
        tag = f"[{i}/{len(todo)}] {c['target']} {c['scheme']}"
        kw = dict(options)
        if c["scheme"] != "fp32":
            if max_drop is not _UNSET:
                kw["max_drop"] = max_drop
            if calibration is not None and c["scheme"] in get_converter(c["target"]).calibrated:
                kw["calibration"] = calibration
        try:
            say(f"{tag}: converting")
            art = _convert(model, example_inputs, c["target"], quantize=c["scheme"], out_dir=Path(cand_dir),
                           name=f"{c['target']}-{c['scheme']}", progress=lambda m, tag=tag: say(f"{tag}: {m}"), **kw)
        except ToleranceError as e:
            rep = getattr(e, "report", None) or {}
            if "drop" in rep:
                # the gate's reason, as converters.convert words it ("<target> <scheme>: <reason> (...")
                reason = str(e).split(": ", 1)[-1].split(f" ({rep.get('drop_basis')}", 1)[0]
                c.update(status="rejected", why=f"failed the accuracy gate: {' '.join(reason.split())[:200]}; drop "
                                                f"{rep['drop']:.4f} ({rep.get('drop_basis', '')}; min cosine "
                                                f"{rep.get('min_cosine', 0):.4f})")
            else:
                c.update(status="rejected", why="failed verification: " + " ".join(str(e).split())[:240])
            continue
        except SdkError as e:
            c.update(status="failed", why=f"{type(e).__name__}: {' '.join(str(e).split())[:300]}")
            continue
        passed, quality = gate_verdict(art.manifest, None if max_drop is _UNSET else max_drop)
        c.update(path=str(art.path), size_bytes=art.size_bytes, quality=quality)
        if not passed:
            c.update(status="rejected", why=("failed the accuracy gate: " if passed is False else "") + quality)
        else:
            c["status"] = "converted"
    return todo + skipped


def _summary(c: dict) -> dict:
    keys = ("target", "device", "scheme", "status", "why", "picked", "size_bytes", "latency_ms", "p50_ms", "threads",
            "quality", "cv", "settled", "memory_mb", "gflops_per_s", "confirmed", "settled_rounds",
            "profile_latency_ms", "rounds_ms", "vs_fp32")
    return {k: c.get(k) for k in keys}


def table_md(cands: list[dict]) -> str:
    """The candidate table (markdown), fastest first."""
    rows = sorted(cands, key=lambda c: (not c.get("picked"), c.get("latency_ms") is None, c.get("latency_ms") or 0))
    lines = ["| | target | scheme | size KiB | latency ms | threads | quality | why |", "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        lat = c.get("latency_ms")
        lines.append("| " + " | ".join([
            "★" if c.get("picked") else "",
            c["target"] + (f" ({c['runs']})" if c.get("runs") not in (None, "yes", "convert-only") else ""), c["scheme"],
            "–" if c.get("size_bytes") is None else f"{c['size_bytes'] / 1024:.1f}",
            "–" if lat is None else f"{lat:.4g}", str(c.get("threads") or "–"),
            (c.get("quality") or "–").replace("|", "/"), (c.get("why") or c["status"]).replace("|", "/")]) + " |")
    return "\n".join(lines) + "\n"


def _write_table(cand_dir: Path, name: str, cands: list[dict], pick: dict | None) -> dict:
    from edgesdk.runtime.profile import json_safe as _json_safe
    cand_dir.mkdir(parents=True, exist_ok=True)
    selection = {"rule": f"fastest that passed the gate; a quantized scheme only where shown faster than fp32 on its "
                         f"target (side by side: sign test p <= {FASTER_P:g}); within {TIE:.0%} the smaller artifact",
                 "pick": None if pick is None else
                 {"target": pick["target"], "scheme": pick["scheme"], "latency_ms": pick["latency_ms"],
                  "threads": pick["threads"], "why": pick["why"]},
                 "candidates": [_summary(c) for c in cands], "table": str(cand_dir / "candidates.md")}
    md = f"# {name}: auto selection\n\n{selection['rule']}\n\n" + table_md(cands)
    selection["table_md"] = md
    for fname, text in (("candidates.json", json.dumps(_json_safe(selection), indent=1) + "\n"), ("candidates.md", md)):
        tmp = cand_dir / f".{fname}.tmp-{os.getpid()}"
        tmp.write_text(text)
        os.replace(tmp, cand_dir / fname)
    return selection


def _publish(src: Path, out_dir: Path, name: str, selection: dict) -> Path:
    """Copy the picked candidate to ``out_dir/name`` atomically, its manifest noting the selection."""
    work = new_workdir(out_dir, name)
    try:
        shutil.rmtree(work)
        shutil.copytree(src, work)
        art = Artifact.open(work)
        art.manifest.name = name
        art.manifest.extra["auto"] = {k: v for k, v in selection.items() if k != "table_md"}
        write_manifest(work, art.manifest)
        final = out_dir / name
        publish(work, final)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return final


# ----------------------------------------------------------------------------- the pipeline's recommendation

def recommend(rows: list[dict]) -> list[dict]:
    """The pipeline's recommendation, by the same rule: per model, the pick over every profiled
    target x scheme and the pick per target. Marks rows ``recommended`` / ``target_pick`` and
    returns one entry per model with every candidate and why it lost."""
    out = []
    groups: dict = {}
    for r in rows:
        groups.setdefault((r["family"], r["model"]), []).append(r)
    for (fam, model), mine in groups.items():
        def cands_of(rs):
            cs = []
            for r in rs:
                g = r.get("gate") or {}
                ok = r.get("status") == "ok" and r.get("p50_ms") is not None and g.get("passed", True) is not False
                c = {"key": r.get("key") or f"{fam}/{model}/{r['target']}/{r['scheme']}", "target": r["target"],
                     "scheme": r["scheme"], "size_bytes": r.get("size_bytes"),
                     "latency_ms": latency_ms(r) if ok else None, "status": "measured" if ok else r.get("status"),
                     "why": "" if ok else (r.get("message") or r.get("status") or ""), "row": r}
                if ok and g and g.get("passed") is None:
                    c.update(status="not scored", why="the gate could not score it", latency_ms=None)
                cs.append(c)
            return cs
        per_target = {}
        for t in sorted({r["target"] for r in mine}):
            cs = cands_of([r for r in mine if r["target"] == t])
            p = choose(cs)
            if p:
                p["row"].update(target_pick=True)  # a Row or a results.json dict
                per_target[t] = p["scheme"]
        cs = cands_of(mine)
        pick = choose(cs)
        if pick:
            pick["row"].update(recommended=True)
        for c in cs:
            c.pop("row")
        out.append({"family": fam, "model": model, "pick": None if pick is None else
                    {"target": pick["target"], "scheme": pick["scheme"], "latency_ms": pick["latency_ms"],
                     "why": pick["why"]}, "per_target": per_target, "candidates": cs})
    return out
