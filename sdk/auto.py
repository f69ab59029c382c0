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
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from edgesdk.converters import Artifact, convert as _convert, get_converter
from edgesdk.converters.artifact import new_workdir, publish, write_manifest
from edgesdk.converters.convert import default_name
from edgesdk.runtime.errors import ConfigError, SdkError, TargetUnavailableError, ToleranceError

DEVICES = ("cpu", "npu", "gpu")
TIE = 0.03             # latencies within 3% of the fastest tie; the smaller artifact wins
CONFIRM_WITHIN = 0.15  # candidates within 15% of the fastest are re-timed side by side before the pick
CONFIRM_ROUNDS = 8
FASTER_P = 0.05        # a quantized candidate beats fp32 when a sign test on the paired rounds says so at this level
AUTO_MAX_DROP = 0.01   # applied when a quantized artifact carries no gate threshold of its own
_UNSET = object()


@dataclass
class AutoArtifact(Artifact):
    """The picked artifact plus the selection: ``selection["candidates"]`` (every candidate with
    size, latency, quality and why it lost), ``selection["pick"]``, ``selection["table_md"]``."""

    selection: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- the rule

def latency_ms(profile: dict) -> float | None:
    """What candidates are ranked by: p50 per run, or a whole generation's p50 time."""
    gen = profile.get("generation")
    if gen:
        tp = (gen.get("tpot_ms") or {}).get("p50") or 0.0
        return gen["ttft_ms"]["p50"] + tp * max(gen.get("new_tokens", 1) - 1, 0)
    return profile.get("p50_ms")


def choose(cands: list[dict], tie: float = TIE) -> dict | None:
    """Pick among candidates (dicts with ``target``, ``scheme``, ``status``, ``latency_ms``,
    ``size_bytes``, and ``rounds_ms`` when `confirm` re-timed them side by side); only
    ``status == "measured"`` ones compete. Sets ``picked`` and ``why`` on every competing
    candidate and returns the pick (None when none competes)."""
    measured = [c for c in cands if c.get("status") == "measured" and c.get("latency_ms") is not None]
    fp32 = {c["target"]: c for c in measured if c["scheme"] == "fp32"}
    eligible = []
    for c in measured:
        c["picked"] = False
        base = fp32.get(c["target"])
        why = None if c["scheme"] == "fp32" or base is None else _not_faster_than(c, base, tie)
        if why:
            c["why"] = why
        else:
            eligible.append(c)
    if not eligible:
        return None
    best = min(c["latency_ms"] for c in eligible)
    tied = [c for c in eligible if c["latency_ms"] <= best * (1 + tie)]
    pick = min(tied, key=lambda c: (c.get("size_bytes") or math.inf, c["latency_ms"]))
    for c in eligible:
        if c is pick:
            continue
        if c in tied:
            c["why"] = (f"ties with the pick (within {tie:.0%}: {c['latency_ms']:.4g} vs {pick['latency_ms']:.4g} ms) "
                        f"but is larger ({_kib(c.get('size_bytes'))} vs {_kib(pick.get('size_bytes'))})")
        else:
            c["why"] = f"slower: {c['latency_ms']:.4g} ms, {c['latency_ms'] / pick['latency_ms']:.2f}x the pick"
    pick["picked"] = True
    pick["why"] = ("fastest that passed the gate" if len(tied) == 1 else
                   f"smallest of the {len(tied)} within {tie:.0%} of the fastest that passed the gate")
    if pick["scheme"] != "fp32" and pick["target"] in fp32:
        pick["why"] += f"; {pick['latency_ms'] / fp32[pick['target']]['latency_ms']:.2f}x fp32 on {pick['target']}"
        if pick.get("vs_fp32"):
            pick["why"] += f" ({pick['vs_fp32']})"
    return pick


def sign_test_p(wins: int, n: int) -> float:
    """One-sided sign test: the chance of at least ``wins`` of ``n`` paired rounds going one way
    when neither side is faster (each round a fair coin)."""
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


def _not_faster_than(c: dict, base: dict, tie: float) -> str | None:
    """Why a quantized candidate ``c`` may not compete against ``base`` (its target's fp32), or None
    when it was shown faster: paired side-by-side rounds when both have them (same run of
    `confirm`), else a lead larger than the noise band ``tie``. Records the evidence in
    ``c["vs_fp32"]``."""
    t, lat, ref = c["target"], c["latency_ms"], base["latency_ms"]
    a, b = c.get("rounds_ms"), base.get("rounds_ms")
    if a and b and len(a) == len(b):
        ratios = sorted(x / y for x, y in zip(a, b))
        wins, n = sum(r < 1 for r in ratios), len(ratios)
        p, med = sign_test_p(wins, n), ratios[n // 2] if n % 2 else (ratios[n // 2 - 1] + ratios[n // 2]) / 2
        c["vs_fp32"] = f"faster in {wins}/{n} side-by-side rounds, median ratio {med:.3f}, sign test p={p:.3f}"
        if p <= FASTER_P and med < 1:
            return None
        return (f"not shown faster than fp32 on {t} side by side: {c['vs_fp32']} (needs p <= {FASTER_P:g}); "
                f"fp32 keeps the target")
    if lat > ref:
        return f"slower than fp32 on {t} ({lat:.4g} vs {ref:.4g} ms, {lat / ref:.2f}x)"
    if lat > ref * (1 - tie):
        return (f"within the {tie:.0%} noise band of fp32 on {t} ({lat:.4g} vs {ref:.4g} ms, {lat / ref:.2f}x) and "
                f"not re-timed side by side: fp32 keeps the target")
    c["vs_fp32"] = f"{lat / ref:.2f}x fp32 in separate profiles"
    return None


def _kib(b) -> str:
    return "?" if b is None else f"{b / 1024:.1f} KiB"


def gate_verdict(manifest, max_drop=None) -> tuple[bool | None, str]:
    """(passed, quality text) of a converted artifact, from the gate the conversion ran: fp32
    artifacts passed verification; a quantized one passed its accuracy gate (the default
    thresholds per kind of output, or a numeric ``max_drop``). Only an artifact converted with
    the gate off (``max_drop=None``, or by a converter that records no threshold) is held here
    to AUTO_MAX_DROP: auto never picks an artifact whose quality nobody checked."""
    q = manifest.quantization or {}
    v = manifest.verification or {}
    g = q.get("gate")
    if g is None:
        err = v.get("max_abs_err")
        return bool(v.get("passed", True)), ("verified vs PyTorch" + (f" (max abs diff {err:.2g})" if err is not None else ""))
    basis = f" ({g['drop_basis']})" if g.get("drop_basis") else ""
    drop = "" if g.get("drop") is None else f"drop {g['drop']:.4f}"
    if g.get("mode") == "off" or (g.get("mode") is None and g.get("max_drop") is None):
        if g.get("drop") is None:
            return None, f"not scored: {g.get('drop_basis') or 'the gate could not score its outputs'}"
        thr = AUTO_MAX_DROP if max_drop in (None, "default") else max_drop
        return g["drop"] <= thr, f"{drop} vs max_drop {thr:g} (gate off at conversion; applied by auto){basis}"
    if g.get("passed") is None:
        why = "; ".join(f"{n['output']}: {n['why']}" for n in g.get("not_scorable") or []) or g.get("drop_basis")
        return None, f"not scored: {why or 'the gate could not score its outputs'}"
    if g.get("mode") == "default":
        th = g.get("thresholds") or {}
        rule = (f"default gate (top-1 >= {th.get('min_top1_agreement', 0.99):.0%}, min cosine >= "
                f"{th.get('min_cosine', 0.99):g})")
        if g.get("failing"):
            return False, f"{rule} failed: {'; '.join(g['failing'])}"
        return bool(g["passed"]), f"{drop}{basis}, {rule} passed" if drop else f"{rule} passed"
    return bool(g["passed"]), f"{drop} vs max_drop {g['max_drop']:g}{basis}"


# ----------------------------------------------------------------------------- candidates

def _plan(target: str, quantize, device, calibration, multi_program: bool, model) -> tuple[list, list]:
    """(candidates to convert, candidates skipped with why)."""
    import edgesdk
    all_t = {t.name: t for t in edgesdk.targets()}
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


def measure_and_choose(cands: list[dict], *, iters: int = 100, threads="auto", isolate: bool = True,
                       progress=None) -> dict | None:
    """Profile every converted candidate (isolated, ``threads``: ``"auto"`` sweeps the counts) and
    `choose`; candidates that competed and did not win get status ``"lost"``."""
    from edgesdk import runtime
    say = progress or (lambda msg: None)
    todo = [c for c in cands if c["status"] == "converted"]
    for i, c in enumerate(todo, 1):
        try:
            say(f"[{i}/{len(todo)}] {c['target']} {c['scheme']}: profiling (isolated={isolate}, threads {threads})")
            rep = runtime.profile(c["path"], iters=iters, threads=threads, isolate=isolate, per_op=False)
        except SdkError as e:
            c.update(status="failed", why=f"profiling: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
            continue
        prof = {"p50_ms": rep.p50_ms, "generation": rep.extra.get("generation")}
        c.update(status="measured", p50_ms=rep.p50_ms, latency_ms=latency_ms(prof), threads=rep.threads,
                 cv=rep.cv, settled=rep.settled, memory_mb=rep.memory.get("run_peak_mb"),
                 gflops_per_s=rep.gflops_per_s)
    confirm(cands, progress=say)
    pick = choose(cands)
    for c in cands:
        if c["status"] == "measured" and not c.get("picked"):
            c["status"] = "lost"
    return pick


def confirm(cands: list[dict], within: float = CONFIRM_WITHIN, rounds: int = CONFIRM_ROUNDS, progress=None) -> None:
    """Re-time the close contenders side by side (`runtime.profile.interleaved`) so a burst of load
    from other processes during one candidate's profile cannot decide the pick: every measured
    candidate within ``within`` of the fastest, and the fp32 candidate of each of their targets
    (the "never slower than fp32" baseline), again with any candidate that comes within reach once
    they are re-timed. Their ``latency_ms`` becomes the median of the interleaved blocks; the
    profile's figure stays in ``profile_latency_ms``."""
    from edgesdk.runtime.profile import interleaved
    from edgesdk.runtime.stats import median
    measured = [c for c in cands if c.get("status") == "measured" and c.get("latency_ms") is not None]
    if len(measured) < 2:
        return
    timed: set[int] = set()
    # A candidate whose isolated profile was flattered by a quiet moment loses its lead once re-timed;
    # then others come within reach of the new fastest, so repeat until the close set was all timed
    # together (a few rounds at most: each adds at least one candidate).
    for _ in range(len(measured)):
        best = min(c["latency_ms"] for c in measured)
        close = [c for c in measured if c["latency_ms"] <= best * (1 + within)]
        targets = {c["target"] for c in close}
        close += [c for c in measured if c["scheme"] == "fp32" and c["target"] in targets and c not in close]
        close += [c for c in measured if id(c) in timed and c not in close]  # all the figures from one run
        if len(close) < 2 or all(id(c) in timed for c in close):
            return
        if progress:
            progress(f"confirming {len(close)} close candidates side by side ({rounds} rounds)")
        blocks = interleaved([(c["path"], c["threads"]) for c in close], rounds=rounds)
        for c, b in zip(close, blocks):
            c.setdefault("profile_latency_ms", c["latency_ms"])
            c.update(latency_ms=median(b), rounds_ms=list(b), confirmed=True)
            timed.add(id(c))


def _summary(c: dict) -> dict:
    keys = ("target", "device", "scheme", "status", "why", "picked", "size_bytes", "latency_ms", "p50_ms", "threads",
            "quality", "cv", "settled", "memory_mb", "gflops_per_s", "confirmed", "profile_latency_ms", "rounds_ms",
            "vs_fp32")
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
