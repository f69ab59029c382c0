"""`convert(model, example_inputs, target) -> Artifact`: export, verify, publish.

Every artifact handed back has been loaded with `runtime` and compared against the
PyTorch module on the example inputs plus a few random inputs of the same spec.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import inspect
import math
import re
import shutil
import time
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from edgesdk import runtime
from edgesdk.converters import shapes
from edgesdk.converters.accuracy import cosine, evaluate, judge, layer_sensitivity
from edgesdk.converters.artifact import Artifact, new_workdir, publish, write_manifest
from edgesdk.converters.calibration import MIN_CALIBRATION_SAMPLES, SampleSet, digest, load_samples, require, split
from edgesdk.converters.capture import captured_output
from edgesdk.converters import fp16_compute, gen_calibration
from edgesdk.converters.export_memo import remembered
from edgesdk.converters.flops import METHOD as FLOPS_METHOD, count as count_flops
from edgesdk.converters.programs import Program, collect, flatten_outputs, set_mode
from edgesdk.converters.provenance import shared_provenance
from edgesdk.converters.registry import get_converter
from edgesdk.runtime.errors import ConfigError, ConversionError, SdkError, ToleranceError
from edgesdk.runtime.generate import KEY as GENERATION_KEY
from edgesdk.runtime.manifest import Manifest, ProgramSpec, file_entry

DEFAULT_ATOL = DEFAULT_RTOL = 1e-4
DEFAULT_GATE = "default"  # max_drop's default: thresholds per kind of output (converters.accuracy)
# keyword options every target accepts besides convert()'s own parameters
COMMON_OPTIONS = {"capture": "capture the exporters' stdout/stderr into Artifact.log (default True)"}




class GateWarning(UserWarning):
    """A quantized artifact was handed back without a passed accuracy gate (gate off, or outputs
    too small to score)."""


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
VERSION_PACKAGES = ("edge-sdk", "torch", "executorch", "onnx", "onnxscript", "onnxruntime",
                    "litert-torch", "ai-edge-litert", "numpy")


def tool_versions(packages: tuple = ()) -> dict:
    """Versions of the SDK's toolchain plus ``packages`` (a converter's own export and runtime
    packages, by import name), keyed by distribution name; packages not installed are left out."""
    out = {}
    for pkg in VERSION_PACKAGES + tuple(packages):
        try:
            out[metadata.metadata(pkg)["Name"]] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return out


def _torch_to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().contiguous().numpy()


def compare(ref: list[torch.Tensor], got: list[np.ndarray], names: list[str]) -> list[dict]:
    """Per-output max/mean absolute error and cosine similarity (float64)."""
    rows = []
    for name, r, g in zip(names, ref, got):
        r = _torch_to_numpy(r)
        row = {"name": name, "shape_ok": tuple(r.shape) == tuple(g.shape)}
        if not row["shape_ok"]:
            row.update(max_abs_err=math.inf, mean_abs_err=math.inf, cosine=0.0,
                       detail=f"shape {list(g.shape)} vs reference {list(r.shape)}")
            rows.append(row)
            continue
        r64, g64 = r.astype(np.float64).ravel(), g.astype(np.float64).ravel()
        diff = np.abs(r64 - g64)
        cos = cosine(r64, g64)
        row.update(max_abs_err=float(diff.max()) if diff.size else 0.0,
                   mean_abs_err=float(diff.mean()) if diff.size else 0.0,
                   cosine=cos, ref_max_abs=float(np.abs(r64).max()) if r64.size else 0.0,
                   exact=r.dtype.kind in "iub")
        rows.append(row)
    return rows


def _within(row: dict, atol: float, rtol: float) -> bool:
    if not row["shape_ok"]:
        return False
    if row["exact"]:
        return row["max_abs_err"] == 0
    return row["max_abs_err"] <= atol + rtol * row["ref_max_abs"]


def verify(workdir: Path, programs: list[Program], *, atol: float, rtol: float, samples: int,
           seed: int = 0) -> dict:
    """Run the artifact through `runtime` and compare with PyTorch; returns the report."""
    sess = runtime.load(workdir, nan_policy="allow")
    report = {"atol": atol, "rtol": rtol, "inputs_per_program": 1 + samples, "programs": {}}
    worst, ok, min_cos = 0.0, True, 1.0
    for prog in programs:
        binding = sess.program(prog.name)
        sets = [(prog.example_inputs, prog.reference)]
        specs = list(binding.spec.inputs)
        # dynamic shapes: the example size, then each range's ends and a middle point
        sizes = [binding.spec.example_dims()] * samples + (prog.dynamic.points() if prog.dynamic else [])
        checked = []
        for i, dims in enumerate(sizes):
            arrays = runtime.example_inputs(specs, seed=seed + 1 + i, dims=dims)
            tensors = tuple(torch.from_numpy(a.copy()) for a in arrays)
            with torch.no_grad():
                ref = flatten_outputs(prog.module(*tensors))
            if any(t.is_floating_point() and not torch.isfinite(t).all() for t in ref):
                continue  # random inputs drove the reference to inf/nan: not a fair comparison
            sets.append((tensors, ref))
            if dims and dims not in checked:
                checked.append(dims)
        per_output = {n: None for n in prog.output_names}
        for tensors, ref in sets:
            got = binding.run([_torch_to_numpy(t) for t in tensors])
            for row in compare(ref, got, prog.output_names):
                prev = per_output[row["name"]]
                if prev is None or row["max_abs_err"] > prev["max_abs_err"]:
                    per_output[row["name"]] = {**row, "cosine": min(row["cosine"], prev["cosine"]) if prev else row["cosine"]}
                elif row["cosine"] < prev["cosine"]:
                    prev["cosine"] = row["cosine"]
        rows = list(per_output.values())
        for r in rows:
            r["ok"] = _within(r, atol, rtol)
            ok &= r["ok"]
            worst = max(worst, r["max_abs_err"])
            min_cos = min(min_cos, r["cosine"])
        report["programs"][prog.name] = {"inputs_compared": len(sets), "outputs": rows,
                                         **({"dims_checked": checked} if prog.dynamic else {})}
    report.update(passed=ok, max_abs_err=worst, min_cosine=min_cos)
    return report


def _tolerance_message(target: str, report: dict) -> str:
    parts = []
    for pname, p in report["programs"].items():
        for r in p["outputs"]:
            if not r["ok"]:
                parts.append(f"{pname}.{r['name']}: max |diff| {r['max_abs_err']:.3g} "
                             f"(cosine {r['cosine']:.6f}) {r.get('detail', '')}".rstrip())
    return (f"{target}: converted outputs differ from PyTorch beyond atol={report['atol']:g}, "
            f"rtol={report['rtol']:g}: " + "; ".join(parts) +
            ". Loosen atol/rtol if this precision is acceptable, or pick another target.")


def default_name(model: torch.nn.Module, target: str, quantize: str) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", type(model).__name__.lower()).strip("-") or "model"
    return f"{base}-{target}" + ("" if quantize == "fp32" else f"-{quantize}")


_CONFIG_KEYS = ("calibration", "eval_data", "max_drop", "metric", "auto_fallback", "max_fallback_layers",
                "min_calibration")


def _convert_config(args: dict) -> Artifact:
    """`convert` with ``quantize`` a typed config (`converters.quant_configs`): its scheme, and its
    options as keywords (an option also passed by keyword is a ConfigError)."""
    from edgesdk.converters.quant_configs import resolve
    defaults = {k: p.default for k, p in inspect.signature(convert).parameters.items()}
    passed = {**{k: args.pop(k) for k in _CONFIG_KEYS}, **args.pop("options")}
    given = {k for k, v in passed.items() if k not in defaults or v is not defaults[k]}
    scheme, opts = resolve(args.pop("quantize"), given)
    return convert(args.pop("model"), args.pop("example_inputs"), args.pop("target"), quantize=scheme, **args,
                   **{**passed, **opts})


def _build(conv, programs: list[Program], workdir: Path, *, name: str, quantize: str, options: dict, log) -> Manifest:
    """Export into workdir and write its manifest (verification still empty)."""
    t0 = time.perf_counter()
    with captured_output(options.get("capture", True)) as captured, shared_provenance():
        try:
            result = conv.export({p.name: p for p in programs}, workdir, quantize=quantize,
                                 options={k: v for k, v in options.items() if k != "capture"})
        except SdkError:
            raise
        except Exception as e:
            raise ConversionError(f"{conv.name}: export failed: {type(e).__name__}: {e}") from e
    log.append(captured.text)
    specs = {p.name: ProgramSpec(p.name, result["programs"][p.name][0], result["programs"][p.name][1],
                                 p.input_specs(), p.output_specs(),
                                 p.dynamic.manifest_dims() if p.dynamic else None, p.structure) for p in programs}
    extra = dict(result.get("extra", {}))
    details = extra.pop("quantization_details", None)
    with shared_provenance():
        flops = remembered("flops", f"{torch.__version__}|{FLOPS_METHOD}", {p.name: p for p in programs},
                           lambda: count_flops(programs))
    manifest = Manifest(
        name=name, target=conv.name, backend=conv.backend, device=conv.device, format=conv.format, programs=specs,
        placement=conv.placement(extra),
        files=[file_entry(workdir, f) for f in result["files"]],
        quantization={"scheme": quantize, **({"details": details} if details else {})},
        versions=tool_versions(conv.convert_packages + conv.run_packages),
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        extra={**extra, "conversion_s": round(time.perf_counter() - t0, 3), "flops": flops,
               **({GENERATION_KEY: programs.generation} if getattr(programs, "generation", None) else {})},
    )
    write_manifest(workdir, manifest)
    return manifest


def _gate_reason(gate: dict) -> str:
    if gate.get("failing"):
        return "; ".join(gate["failing"]) + (" (default gate)" if gate["mode"] == "default" else "")
    return f"accuracy drop {gate['drop']:.4f} exceeds max_drop {gate['max_drop']:g}"


def _gate_message(target: str, quantize: str, gate: dict, acc: dict, sens: list, kept: list) -> str:
    top = ", ".join((f"{r['program']}." if "program" in r else "") + f"{r['layer']} ({r['rel_error']:.3g})"
                    for r in sens[:3]) or "n/a"
    tried = f" after keeping {', '.join(kept)} in float" if kept else ""
    return (f"{target} {quantize}: {_gate_reason(gate)}{tried} "
            f"({acc['drop_basis']} = {acc['drop']:.4f}; min cosine {acc['min_cosine']:.4f} on {acc['samples']} "
            f"held-out inputs). Most sensitive layers (simulated relative error): {top}. Fix: auto_fallback=True "
            f"(--auto-fallback), more representative calibration data, another scheme, or max_drop=<number> "
            f"to accept a larger drop (None turns the gate off).")


def _warn(say, message: str) -> None:
    """A gate warning: where the user looks (progress line) and as a Python warning."""
    say(f"warning: {message}")
    warnings.warn(message, GateWarning, stacklevel=4)


def _with_points(ev: SampleSet, prog: Program) -> SampleSet:
    specs = list(prog.input_specs())
    extra = [tuple(torch.from_numpy(a) for a in runtime.example_inputs(specs, seed=200 + i, dims=p))
             for i, p in enumerate(prog.dynamic.points())]
    return SampleSet(list(ev.samples) + extra, f"{ev.source}; plus one input at each dynamic-shape point "
                     f"{prog.dynamic.points()}", digest(list(ev.samples) + extra))


def convert(model: torch.nn.Module, example_inputs, target: str, *, quantize: str = "fp32",
            calibration=None, eval_data=None, out_dir="edgesdk-out", name: str | None = None,
            atol: float | None = None, rtol: float | None = None, verify_samples: int = 3,
            max_drop: float | str | dict | None = DEFAULT_GATE,
            metric=None, auto_fallback: bool | dict = False, max_fallback_layers: int = 4,
            min_calibration: int = MIN_CALIBRATION_SAMPLES, progress=None, example_kwargs: dict | None = None,
            dynamic_shapes: dict | None = None, prompt_lengths=None, **options) -> Artifact:
    """Convert a PyTorch module for a target, verify it against PyTorch, and publish it.

    Example::

        import torch, edgesdk
        from edgesdk import runtime
        model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
        x = torch.randn(1, 16)
        art = edgesdk.convert(model, (x,), target="executorch-xnnpack", out_dir="out")
        print(art.path, art.verification["max_abs_err"])
        y = runtime.load(art.path).run([x.numpy()])

        calib = [(torch.randn(1, 16),) for _ in range(64)]
        q = edgesdk.convert(model, (x,), "onnx-cpu", quantize="int8-static", calibration=calib,
                        max_drop=0.01, auto_fallback=True, out_dir="out")
        print(q.manifest.quantization["gate"], q.manifest.quantization["kept_float"])

    ``example_inputs`` is a tuple of tensors, or None when the model implements
    ``edge_programs()``; ``example_kwargs`` adds keyword inputs (``{"attention_mask": mask}``),
    which become named inputs of the artifact after the positional ones. Output names follow
    what the model returns (dict / ``ModelOutput`` keys, ``output_0``... for tuples), and
    ``runtime.load(path).run(x, structured=True)`` gives back the same structure.

    Shapes are fixed to the example inputs unless ``dynamic_shapes`` says otherwise, e.g.
    ``{"x": {0: (1, 32)}}`` or ``{"ids": {1: ("seq", 8, 512)}, "mask": {1: ("seq", 8, 512)}}``
    (see `converters.shapes`; onnx-cpu, executorch-xnnpack and litert-cpu). The artifact is
    then verified at each range's ends and a middle point too, and the runtime checks sizes
    against the ranges the manifest records.

    ``prompt_lengths`` (generation models, e.g. ``[64, 256, 1024, 2048]``): one prefill program
    per prompt capacity in the one artifact; the runtime runs the smallest that holds the prompt
    (default: the model config's).

    fp32: the artifact lands at ``out_dir/name`` only after it loaded in `runtime` and matched
    PyTorch within ``atol + rtol * max|reference|`` (default 1e-4 each, or the target's own
    default where the device computes at lower precision) on the example inputs plus
    ``verify_samples`` random inputs; otherwise ``ToleranceError`` lists the worst difference
    per output and nothing is written.
    On a device that computes float graphs at fp16 (qnn-htp), a generation model that misses
    the default tolerance is judged by the tokens it generates instead (greedy and teacher-forced
    agreement with fp32 on ``eval_data`` prompts; `converters.fp16_compute`), with the
    element-wise error kept in the manifest; explicit ``atol``/``rtol`` keep the element-wise check.

    Quantized schemes (``edgesdk.targets()`` lists each target's): ``calibration`` (iterable of
    input tuples, callable, or ``.npz``; at least ``min_calibration`` samples) is required by
    static schemes. The accuracy gate runs the artifact against the fp32 module on
    ``eval_data`` (default: a held-out quarter of the calibration data, else the example input
    plus random inputs) and records cosine, max/mean error, top-1 agreement and ``drop`` in the
    manifest. ``max_drop`` makes a larger drop a ``ToleranceError``; ``metric(outputs, inputs)``
    replaces the default drop with your own score. ``auto_fallback`` keeps the most sensitive
    layers in float, one at a time (up to ``max_fallback_layers``), until the gate passes.

    Generation models (``edge_programs`` + ``edge_generation``): ``calibration`` and ``eval_data``
    take *prompts* (token id lists, or text for byte-tokenizer models); each program is calibrated
    on the inputs it meets while the fp32 programs generate from them, and the gate compares greedy
    and teacher-forced tokens with fp32 on held-out prompts (`converters.gen_calibration`).

    Models with several programs may take ``max_drop`` and ``auto_fallback`` per program:
    ``max_drop={"step": 0.02, "tokens": "default"}`` bounds each named program's own outputs on
    the inputs it met (``"tokens"``: a generation model's token gate), and
    ``auto_fallback={"step": True}`` lets the fallback keep layers in float in those programs only
    (a failing program's layers first). ``quantization["float_per_program"]`` in the manifest
    lists per program what stayed in float (fallback layers and the target recipe's own).

    The gate is on by default (``max_drop="default"``): every output must keep top-1 agreement
    >= 99% (classifier-like) or min cosine >= 0.99 (otherwise), else ``ToleranceError`` names
    the most sensitive layers. ``max_drop=None`` turns it off (with a `GateWarning`); outputs too
    small to compare (random weights) are reported as not scorable, also with a warning.

    Other keyword options are target-specific (e.g. ``soc_model=`` for qnn-htp); an unknown one
    is a ``ConfigError`` listing the valid ones.

    ``quantize`` may also be a typed config (`converters.quant_configs`, e.g.
    ``Int8Static(calibration=calib, max_drop=0.01)``): its scheme, with its options.
    """
    if not isinstance(quantize, str):  # a typed config: its scheme and options, as keywords
        return _convert_config(dict(locals()))
    conv = get_converter(target)
    explicit_tolerance = atol is not None or rtol is not None
    atol, rtol = _check_arguments(conv, quantize, calibration, atol, rtol, options, max_drop, auto_fallback,
                                  dynamic_shapes)
    name = name or default_name(model, target, quantize)
    if not _NAME_RE.match(name):
        raise ConfigError(f"artifact name {name!r}: use letters, digits, '.', '_' or '-' (max 128)")
    say = progress or (lambda stage: None)
    out_dir = Path(out_dir)
    log: list[str] = []

    was_training = getattr(model, "training", False)
    set_mode(model, False)
    t0 = time.perf_counter()
    try:
        programs = collect(model, example_inputs, example_kwargs, dynamic_shapes, prompt_lengths)
        conv.check_model({p.name: p for p in programs})  # UnsupportedModelError before any export
        gen_calibration.check_per_program(max_drop, auto_fallback, programs)
        if quantize == "fp32":
            manifest, final = _convert_fp32(conv, programs, out_dir, name, options, log, say,
                                            atol=atol, rtol=rtol, verify_samples=verify_samples,
                                            eval_data=eval_data, explicit_tolerance=explicit_tolerance)
        else:
            manifest, final = _convert_quantized(
                conv, programs, out_dir, name, quantize, options, log, say, calibration=calibration,
                eval_data=eval_data, max_drop=max_drop, metric=metric, auto_fallback=auto_fallback,
                max_fallback_layers=max_fallback_layers, min_calibration=min_calibration,
                tolerance=(atol, rtol) if quantize in conv.default_tolerance else None)
    finally:
        set_mode(model, was_training)
    art = Artifact(final, manifest, "".join(log))
    for line in art.summary():
        say(f"note: {line}")
    say(f"done in {time.perf_counter() - t0:.1f}s")
    return art


def _check_arguments(conv, quantize: str, calibration, atol, rtol, options: dict, max_drop, auto_fallback,
                     dynamic_shapes) -> tuple[float, float]:
    """`convert`'s arguments checked at the boundary (ConfigError saying what is valid) before any
    work; returns ``(atol, rtol)`` with the target's defaults filled in."""
    d_atol, d_rtol = conv.default_tolerance.get(quantize, (DEFAULT_ATOL, DEFAULT_RTOL))
    atol = d_atol if atol is None else atol
    rtol = d_rtol if rtol is None else rtol
    if quantize not in conv.quantization:
        raise ConfigError(f"target {conv.name!r} has no quantization scheme {quantize!r}. "
                          f"Available for {conv.name}: {', '.join(conv.quantization)}")
    if calibration is not None and quantize == "fp32":
        raise ConfigError("calibration data is only used by quantized schemes; drop it or pick "
                          f"one of {', '.join(conv.quantization[1:]) or '(none for this target)'}")
    if not (isinstance(atol, (int, float)) and atol >= 0 and isinstance(rtol, (int, float)) and rtol >= 0):
        raise ConfigError(f"atol and rtol must be non-negative numbers, got atol={atol!r}, rtol={rtol!r}")
    _check_options(conv, options)
    for drop in (max_drop.values() if isinstance(max_drop, dict) else (max_drop,)):
        if drop is not None and drop != DEFAULT_GATE and not (
                isinstance(drop, (int, float)) and not isinstance(drop, bool) and drop >= 0):
            raise ConfigError(f"max_drop must be a non-negative number, {DEFAULT_GATE!r} (thresholds per kind of "
                              f"output), None (gate off) or, for models with several programs, a dict of those "
                              f"per program ({{'step': 0.02}}), got {max_drop!r}")
    if not (isinstance(auto_fallback, bool) or isinstance(auto_fallback, dict)
            and all(isinstance(v, bool) for v in auto_fallback.values())):
        raise ConfigError(f"auto_fallback must be True/False or, for models with several programs, a dict "
                          f"{{program: True/False}}, got {auto_fallback!r}")
    if dynamic_shapes and not conv.dynamic_shapes:
        raise shapes.unsupported(conv.name, conv.device)
    why = conv.convert_unavailable()
    if why:
        raise runtime.TargetUnavailableError(f"cannot convert for {conv.name}: {why}")
    return atol, rtol


def _check_options(conv, options: dict) -> None:
    """Unknown keyword options are typos until proven otherwise (``max_dorp=0.01`` must not
    silently turn the gate off): refuse them, listing what this target accepts."""
    valid = {**COMMON_OPTIONS, **conv.options}
    unknown = [k for k in options if k not in valid]
    if not unknown:
        return
    own = [p for p in inspect.signature(convert).parameters if p not in ("model", "example_inputs", "target",
                                                                          "options")]
    hints = [f"{k!r} (did you mean {m[0]!r}?)" if (m := difflib.get_close_matches(k, own + list(valid), 1))
             else repr(k) for k in unknown]
    raise ConfigError(f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(hints)} for {conv.name}; "
                      f"valid options: {', '.join(own)}"
                      + (f"; {conv.name} also takes {', '.join(sorted(valid))}" if valid else ""))


def _convert_fp32(conv, programs, out_dir, name, options, log, say, *, atol, rtol, verify_samples,
                  eval_data=None, explicit_tolerance=False):
    """Export and verify; a target with several export paths tries the next one when an export
    fails or does not verify (the manifest records which one made the artifact)."""
    paths = list(conv.exporters) or [None]
    failures = []
    for i, exporter in enumerate(paths):
        opts = options if exporter is None else {**options, "exporter": exporter}
        workdir = new_workdir(out_dir, name)
        try:
            say(f"exporting for {conv.name}" + (f" ({exporter} exporter)" if exporter and i else ""))
            manifest = _build(conv, programs, workdir, name=name, quantize="fp32", options=opts, log=log)
            cannot_run = conv.run_unavailable()
            if cannot_run:
                say(f"validating structure ({conv.name} cannot run here)")
                report = _structural(conv, workdir, programs, manifest, cannot_run)
            else:
                say(f"verifying against PyTorch ({_input_sets(programs, verify_samples)} input sets)")
                report = verify(workdir, programs, atol=atol, rtol=rtol, samples=verify_samples)
                if fp16_compute.applies(conv, programs, report, explicit_tolerance):
                    say(f"outputs differ beyond atol={atol:g}, rtol={rtol:g} ({conv.name} computes float graphs "
                        f"at fp16): judging the tokens generated against fp32 PyTorch instead")
                    report = fp16_compute.verify_by_tokens(workdir, programs, report, eval_data)
                    say(f"note: {report['why']}")
                    manifest.extra["verified_by_tokens"] = report["why"]
            manifest.verification = report
            if failures:
                manifest.extra["exporter_fallback"] = failures
            write_manifest(workdir, manifest)
            if not report["passed"]:
                raise ToleranceError(fp16_compute.message(conv.name, report) if "element_wise" in report
                                     else _tolerance_message(conv.name, report), report)
            final = out_dir / name
            publish(workdir, final)
            return manifest, final
        except (ConversionError, ToleranceError) as e:
            shutil.rmtree(workdir, ignore_errors=True)
            if i == len(paths) - 1:
                raise
            failures.append({"exporter": exporter, "error": f"{type(e).__name__}: {' '.join(str(e).split())[:400]}"})
            say(f"{exporter} export did not work ({type(e).__name__}); trying {paths[i + 1]}")
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
    raise AssertionError("unreachable")


def _input_sets(programs, verify_samples: int) -> int:
    return 1 + verify_samples + max((len(p.dynamic.points()) for p in programs if p.dynamic), default=0)


def _structural(conv, workdir: Path, programs, manifest: Manifest, why: str) -> dict:
    report = conv.validate(workdir, {p.name: p for p in programs}, manifest)
    return {"kind": f"structural only: cannot run here ({why})", "passed": True,
            "max_abs_err": None, "min_cosine": None, **report}


def _evaluate_programs(programs, sess, ev: SampleSet, metric) -> dict:
    """The gate's numbers: one program on ``ev``; several each on their own generated inputs,
    the worst program deciding (outputs named ``program.output``)."""
    if len(programs) == 1:
        return evaluate(programs[0].module, sess.program(programs[0].name), ev.samples, metric)
    per = {p.name: evaluate(p.module, sess.program(p.name), _generated_eval(p).samples) for p in programs}
    worst, res = max(per.items(), key=lambda kv: kv[1]["drop"])
    return {"samples": sum(r["samples"] for r in per.values()),
            "outputs": [{**o, "name": f"{n}.{o['name']}"} for n, r in per.items() for o in r["outputs"]],
            "drop": res["drop"], "drop_basis": f"program {worst!r}: {res['drop_basis']}",
            "min_cosine": min(r["min_cosine"] for r in per.values()),
            "programs": {n: {"drop": r["drop"], "drop_basis": r["drop_basis"], "min_cosine": r["min_cosine"],
                             "outputs": r["outputs"]} for n, r in per.items()}}


def _generated_eval(prog: Program, n: int = 15) -> SampleSet:
    specs = list(prog.input_specs())
    samples = [prog.example_inputs]
    for i in range(n):
        samples.append(tuple(torch.from_numpy(a) for a in runtime.example_inputs(
            specs, seed=100 + i, dims=prog.dynamic.example if prog.dynamic else None)))
    return SampleSet(samples, f"generated: example input + {n} random inputs (no eval_data or calibration given)",
                     digest(samples))


def _convert_quantized(conv, programs, out_dir, name, quantize, options, log, say, *, calibration, eval_data,
                       max_drop, metric, auto_fallback, max_fallback_layers, min_calibration, tolerance=None):
    gen = None  # a generation model calibrated / gated on prompts (converters.gen_calibration)
    needs_data = quantize in conv.calibrated or calibration is not None or eval_data is not None or metric is not None
    if len(programs) != 1 and needs_data and getattr(programs, "generation", None):
        gen = _generation_data(conv, programs, quantize, calibration, eval_data, min_calibration, say)
        cal, ev = gen["calibration"], gen["eval"]
    elif len(programs) != 1 and needs_data:
        uncalibrated = [q for q in conv.quantization if q not in conv.calibrated and q not in ("fp32", "int8-qat")]
        raise ConfigError(f"{conv.name} {quantize}: calibration, eval data and custom metrics are not supported yet "
                          f"for models with several programs ({', '.join(p.name for p in programs)}) unless they "
                          f"declare edge_generation() (then calibration= takes prompts); use an uncalibrated scheme "
                          f"({', '.join(uncalibrated) or 'none on this target'}), whose gate checks every program on "
                          f"generated inputs, or convert each program's module separately")
    else:
        cal, ev = _single_program_data(conv, programs[0], quantize, calibration, eval_data, min_calibration)
    # a per-program max_drop ({program: bound}) judges each program on its own outputs; a generation
    # model's token gate takes its "tokens" entry (default thresholds when absent)
    threshold = gen_calibration.token_threshold(max_drop, DEFAULT_GATE if gen is not None else None)
    bounds = gen_calibration.program_bounds(max_drop, programs, None if gen is not None else DEFAULT_GATE)
    if max_drop is None:
        _warn(say, f"{conv.name} {quantize}: accuracy gate off (max_drop=None): the artifact is handed back "
                   "whatever its accuracy; the figures are still recorded in the manifest")
    ranked: list = []  # the sensitivity ranking, made on first use (a gate that fails, or no gate here)

    def ranking() -> list[dict]:
        """Layers by simulated quantization error, computed once; only a failed gate (its message
        and auto-fallback) or a target that cannot run the gate here needs it."""
        if not ranked:
            if gen is not None:  # per program, on its own recorded inputs; the fallback may pick from any
                say(f"ranking layer sensitivity for {quantize} per program on the recorded inputs")
                ranked.append(sorted(({**r, "program": n} for n, s in gen["record"]().items()
                                      for r in layer_sensitivity(next(p for p in programs if p.name == n).module,
                                                                 s.samples, quantize)),
                                     key=lambda r: -r["rel_error"]))
            elif len(programs) == 1:
                say(f"ranking layer sensitivity for {quantize} on {len(cal or ev)} samples")
                ranked.append(layer_sensitivity(programs[0].module, (cal or ev).samples, quantize))
            else:  # several programs without prompts: no per-layer fallback; the gate checks each program
                ranked.append([])
        return ranked[0]

    def candidates() -> list[dict]:
        return [r for r in ranking() if r["rel_error"] > 0 and gen_calibration.fallback_enabled(auto_fallback,
                                                                                                r.get("program"))]

    def top(rows: list[dict]) -> list[dict]:
        return [{k: r[k] for k in ("program", "layer", "type", "rel_error") if k in r} for r in rows[:10]]
    kept: list[dict] = []
    attempts = []
    while True:
        workdir = new_workdir(out_dir, name)
        try:
            say(f"exporting for {conv.name} ({quantize}" + (f", {len(kept)} layers kept in float)" if kept else ")"))
            if gen is not None:  # per program: its own recorded inputs, its own layers kept in float
                calibrated = gen["record"]() if quantize in conv.calibrated else {}
                opts = {**options, "calibration": {n: c.samples for n, c in calibrated.items()} or None,
                        # only programs with layers kept: an empty exclude means none (targets that cannot
                        # keep layers in float refuse any non-empty one)
                        "exclude": {p.name: ls for p in programs
                                    if (ls := [k["layer"] for k in kept if k["program"] == p.name])}}
            else:
                opts = {**options, "calibration": cal.samples if cal else None,
                        "exclude": [k["layer"] for k in kept]}
            manifest = _build(conv, programs, workdir, name=name, quantize=quantize, options=opts, log=log)
            cannot_run = conv.run_unavailable()
            if cannot_run:  # convert-only target: no numbers can be measured here, say so
                say(f"validating structure ({conv.name} cannot run here)")
                return _publish_unmeasured(conv, programs, manifest, workdir, out_dir / name, cannot_run,
                                           cal, threshold, top(ranking()))
            sess = runtime.load(workdir, nan_policy="allow")
            if gen is not None:
                say(f"accuracy gate: generating from {len(gen['eval_prompts'])} held-out prompts (fp32 and {quantize})")
                acc = gen_calibration.evaluate_generation(programs, sess, gen["eval_prompts"], metric)
            else:
                say(f"accuracy gate on {len(ev)} held-out inputs")
                acc = _evaluate_programs(programs, sess, ev, metric)
                acc["max_abs_err"] = max(r["max_abs_err"] for r in acc["outputs"])
            if tolerance is not None:  # a precision scheme (e.g. GPU fp16) also has an element-wise bound
                _check_tolerance(conv, quantize, acc, tolerance)
            gate = (gen_calibration.judge_generation if gen is not None else judge)(acc, threshold, metric is not None)
            gate = gen_calibration.judge_programs(gate, acc.get("programs") or {}, bounds)
            passed = gate["passed"] is not False
            attempts.append({"kept_float": [(f"{k['program']}." if "program" in k else "") + k["layer"] for k in kept],
                             "drop": acc["drop"], "passed": gate["passed"],
                             **({"programs": {n: v["passed"] for n, v in gate["programs"].items()}}
                                if "programs" in gate else {})})
            nxt = None if passed or len(kept) >= max_fallback_layers else \
                gen_calibration.next_fallback(candidates(), kept, gate)
            if nxt is None:
                manifest.quantization.update({
                    "calibration": cal.describe() if cal else None, "eval": ev.describe(), "gate": gate,
                    "kept_float": kept, "attempts": attempts,
                    # ranked only when some gate failed: a first-try pass never needed it (null)
                    "sensitivity": top(ranked[0]) if ranked else None,
                    **({"float_per_program": gen_calibration.float_per_program(
                        manifest.quantization.get("details"), kept, programs)} if len(programs) > 1 else {}),
                })
                manifest.verification = {"kind": "accuracy gate vs fp32 PyTorch", "passed": gate["passed"], **acc}
                write_manifest(workdir, manifest)
                if not passed:
                    raise ToleranceError(_gate_message(conv.name, quantize, gate, acc, ranking(),
                                                       [k["layer"] for k in kept]), acc)
                if gate["not_scorable"] and threshold is not None:
                    _warn(say, f"{conv.name} {quantize}: output(s) {', '.join(n['output'] for n in gate['not_scorable'])}"
                               f" not scored: {gate['not_scorable'][0]['why']}"
                               + ("" if gate["passed"] else "; no output could be scored, so the gate did not pass "
                                  "or fail (manifest: quantization.gate.passed = null)"))
                final = out_dir / name
                publish(workdir, final)
                return manifest, final
            kept.append({**({"program": nxt["program"]} if "program" in nxt else {}),
                         "layer": nxt["layer"], "rel_error": nxt["rel_error"],
                         "reason": f"auto-fallback: {_gate_reason(gate)}; most sensitive "
                                   f"remaining layer (simulated relative error {nxt['rel_error']:.3g})"})
            say(f"gate failed (drop {acc['drop']:.4f}); keeping "
                + (f"{nxt['program']}." if "program" in nxt else "") + f"{nxt['layer']} in float")
            shutil.rmtree(workdir, ignore_errors=True)
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise


def _publish_unmeasured(conv, programs, manifest: Manifest, workdir: Path, final: Path, why: str, cal,
                        threshold, sensitivity: list) -> tuple[Manifest, Path]:
    """A quantized artifact of a target that cannot run here: validated structurally, its gate
    recorded as not run (and why), published."""
    manifest.quantization.update({
        "calibration": cal.describe() if cal else None, "eval": None,
        "gate": {"mode": "not run", "max_drop": threshold, "drop": None, "passed": None,
                 "drop_basis": f"not evaluated: cannot run here ({why})"},
        "kept_float": [], "attempts": [], "sensitivity": sensitivity})
    manifest.verification = _structural(conv, workdir, programs, manifest, why)
    write_manifest(workdir, manifest)
    publish(workdir, final)
    return manifest, final


def _check_tolerance(conv, quantize: str, acc: dict, tolerance: tuple) -> None:
    """A precision scheme's element-wise bound on the gate's outputs (marks each row ``ok``);
    ToleranceError naming the outputs beyond it."""
    t_atol, t_rtol = tolerance
    for r in acc["outputs"]:
        r["ok"] = r["max_abs_err"] <= t_atol + t_rtol * r["ref_max_abs"]
    acc.update(atol=t_atol, rtol=t_rtol, within_tolerance=all(r["ok"] for r in acc["outputs"]))
    if not acc["within_tolerance"]:
        worst = "; ".join(f"{r['name']}: max |diff| {r['max_abs_err']:.3g}" for r in acc["outputs"] if not r["ok"])
        raise ToleranceError(f"{conv.name} {quantize}: outputs differ from PyTorch beyond atol={t_atol:g}, "
                             f"rtol={t_rtol:g}: {worst}", acc)


def _single_program_data(conv, prog, quantize, calibration, eval_data, min_calibration):
    """Calibration and held-out sets of a one-program model (sample tuples)."""
    cal = load_samples(calibration, prog.input_names, prog.example_inputs, dynamic=prog.dynamic) \
        if calibration is not None else None
    ev = load_samples(eval_data, prog.input_names, prog.example_inputs, "eval", prog.dynamic) \
        if eval_data is not None else None
    if quantize in conv.calibrated:
        if cal is None:
            raise ConfigError(f"{quantize} needs calibration data: calibration=[(x,), ...], a callable, or a "
                              f".npz file (CLI: --calib data.npz) with at least {min_calibration} samples")
        require(cal, min_calibration, quantize)
    if cal is not None and ev is None:
        cal, ev = split(cal)
    if ev is None:
        ev = _generated_eval(prog)
    if prog.dynamic:  # the gate also sees each range's ends and a middle point
        ev = _with_points(ev, prog)
    return cal, ev


def _generation_data(conv, programs, quantize, calibration, eval_data, min_calibration, say) -> dict:
    """A generation model's calibration: prompts, generated through the fp32 programs with each
    program's inputs recorded; held-out prompts (``eval_data``, else a quarter of them) for the gate."""
    if calibration is None and eval_data is None:
        raise ConfigError(f"{quantize} needs calibration prompts for {conv.name}: this model generates "
                          f"({', '.join(p.name for p in programs)}), so calibration= takes prompts (token id lists"
                          f" or strings for byte-tokenizer models), at least {gen_calibration.MIN_PROMPTS}")
    prompts = gen_calibration.load_prompts(calibration, programs) if calibration is not None else []
    held = gen_calibration.load_prompts(eval_data, programs, "eval_data") if eval_data is not None else None
    if held is None:
        if len(prompts) < gen_calibration.MIN_PROMPTS:
            raise ConfigError(f"{quantize}: {len(prompts)} calibration prompts; give at least "
                              f"{gen_calibration.MIN_PROMPTS} (a quarter is held out for the accuracy gate), or "
                              f"pass held-out prompts as eval_data=")
        prompts, held = gen_calibration.split_prompts(prompts)
    if quantize in conv.calibrated and len(prompts) < max(2, min(min_calibration, gen_calibration.MIN_PROMPTS)):
        raise ConfigError(f"{quantize}: {len(prompts)} calibration prompts; give at least "
                          f"{gen_calibration.MIN_PROMPTS}")
    recorded: dict = {}

    def record() -> dict:
        """Each program's inputs met while generating the prompts through fp32, recorded once: at
        once for a calibrated scheme, else only if the fallback's sensitivity ranking asks (an
        uncalibrated scheme's export never reads them; recording costs ~1 s per prompt)."""
        if prompts and not recorded:
            say(f"recording each program's inputs while generating from {len(prompts)} calibration prompts (fp32)")
            recorded.update(gen_calibration.record(programs, prompts))
            if cal is not None:
                cal.describe()["per_program"] = {n: s.describe() for n, s in recorded.items()}
        return recorded
    cal = _Described({"source": f"{len(prompts)} prompts, generated through the fp32 programs",
                      "prompts_sha256": gen_calibration.prompts_digest(prompts)}) if prompts else None
    if quantize in conv.calibrated:
        record()
    ev = _Described({"source": f"{len(held)} held-out prompts" + (" (eval_data)" if eval_data is not None else
                                                                  " (a quarter of the calibration prompts)"),
                     "prompts": len(held), "prompts_sha256": gen_calibration.prompts_digest(held)})
    return {"calibration": cal, "eval": ev, "record": record, "eval_prompts": held}


class _Described:
    """What the manifest says about a generation model's calibration / held-out prompts."""

    def __init__(self, d: dict):
        self._d, self.samples = d, None

    def describe(self) -> dict:
        return self._d

    def __len__(self) -> int:
        return self._d.get("prompts", 0)

    def __bool__(self) -> bool:
        return True
