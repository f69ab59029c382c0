"""Model zoo: public architectures x CPU targets x {fp32, recommended int8}, through `edgesdk.convert`.

Phases (each resumable; results accumulate in ``--out/zoo.json``, one row per model x target x scheme):

    python benchmarks/zoo.py convert [--models resnet18,bert-tiny] [--targets onnx-cpu] [--schemes fp32]
    python benchmarks/zoo.py convert --schemes int8 --budget-s 600   # recommended int8 per model kind
    python benchmarks/zoo.py convert --schemes int8-dynamic --models resnet18  # an extra scheme's rows
    python benchmarks/zoo.py repair             # rows the default gate rejected, again with auto_fallback=True
    python benchmarks/zoo.py dynamic            # dynamic batch / sequence at three shapes per target
    python benchmarks/zoo.py profile --budget-s 780   # p50 of every converted artifact, until the budget
    python benchmarks/zoo.py recommend          # stamp int8 rows with the current recipe's recommendation
    python benchmarks/zoo.py margins --models repvit_m0_9   # fp32 top-1 margins in int8 steps (the gate's near ties)
    python benchmarks/zoo.py report                   # pass-rate table (markdown) and per-row table

``convert`` runs each model in a child process (a crash or a hang costs one model, not the run)
and skips rows already in the JSON unless ``--redo``. A row records: converts or not and the
error class, the verification's max error or the accuracy gate's figures, conversion time,
artifact size (int8 / fp32 ratio), the exporter used, ops left outside the delegate, and for
failures whether the backend's own toolchain (called directly, without the SDK) fails too, so
each failure is attributed to the SDK or to the backend. ``profile`` adds p50 (2 threads).
``int8`` is the target's recommended scheme for the model's kind (`converters/recipes.py`:
transformers get int8-dynamic on onnx-cpu and litert-cpu, the rest int8-static); where the recipe
recommends fp32 (CNNs with HardSwish/SiLU/GELU on onnx-cpu: int8 measured slower) the row measures the
kind's int8 candidate and records ``recommended_scheme: fp32`` with the reason. Other scheme names
add rows that ``report`` weighs as candidates for the best int8 scheme.
Models and configurations: `benchmarks/zoo_models.py` (random weights; MiniLM is the real one).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGETS = ("onnx-cpu", "executorch-xnnpack", "litert-cpu")
CALIBRATION, EVAL = 8, 8  # min_calibration is 8; the gate sees 8 held-out inputs
DEFAULT_OUT = ROOT / "edgesdk-out" / "zoo"


# ------------------------------------------------------------------------------------- results file

def load_results(out: Path) -> dict:
    p = out / "zoo.json"
    return json.loads(p.read_text()) if p.is_file() else {"rows": {}, "dynamic": {}}


def save_results(out: Path, res: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"zoo.json.{os.getpid()}.tmp"  # one per writer: phases may run side by side
    tmp.write_text(json.dumps(res, indent=1, sort_keys=True, default=str))
    os.replace(tmp, out / "zoo.json")


def update_results(out: Path, change) -> dict:
    """Read, ``change(res)`` and write the results file under an exclusive lock, so phases that
    run side by side (convert, repair, profile) never drop each other's rows."""
    import fcntl
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "zoo.json.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        res = load_results(out)
        change(res)
        save_results(out, res)
    return res


def row_key(model: str, target: str, scheme: str) -> str:
    return f"{model}|{target}|{scheme}"


def recommended_int8(target: str, model=None) -> tuple[str, dict]:
    """The int8 scheme the zoo measures for this model on this target, and what the recipe
    recommends (``edgesdk.converters.recipes.recommendation``, as a deploy config's ``recommended``
    picks it). Where the recipe recommends fp32 (int8 measured slower on such models), the zoo still
    measures the target's int8 candidate for the kind, so the row keeps its int8/fp32 figures."""
    from edgesdk.converters.recipes import model_kind, recommendation
    from edgesdk.converters.registry import get_converter
    rec, why = recommendation(target, model)
    info = {"recommended_scheme": rec, "recommendation": why}
    if rec == "fp32":
        conv = get_converter(target)
        return conv.recommended_by_kind.get(model_kind(model)) or conv.recommended, info
    return rec, info


def _int8_done(rows: dict, model: str, target: str) -> bool:
    """The recommended int8 row of this model and target exists (other schemes are extra rows)."""
    return any(k.startswith(f"{model}|{target}|") and r.get("recommended") for k, r in rows.items())


# ------------------------------------------------------------------------------------- sample data

def samples_like(example: tuple, n: int, seed: int) -> list[tuple]:
    """Random inputs shaped like the example: normal floats, ints in the example's range, same masks."""
    import torch
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        s = []
        for t in example:
            if t.is_floating_point():
                s.append(torch.randn(t.shape, generator=g, dtype=t.dtype))
            elif t.dtype == torch.bool or int(t.min()) == int(t.max()):
                s.append(t.clone())
            else:
                s.append(torch.randint(int(t.min()), int(t.max()) + 1, t.shape, generator=g, dtype=t.dtype))
        out.append(tuple(s))
    return out


# ------------------------------------------------------------------------------------- one model (child)

def _short(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:600]


_BUILT: dict = {}


def _build_once(name: str):
    """One model object per child process: its targets share it, so what the SDK memoises per module
    (the FLOP count's torch.export) is done once per model, not once per row, as for a user
    converting one model to several targets."""
    from benchmarks.zoo_models import build
    if name not in _BUILT:
        _BUILT[name] = build(name)
    model, example, kw = _BUILT[name]
    return model, example, dict(kw)


def convert_row(name: str, target: str, scheme: str, out: Path) -> dict:
    import edgesdk
    from benchmarks.zoo_models import ZOO
    from edgesdk.converters.programs import collect
    model, example, kw = _build_once(name)
    recommended = scheme == "int8"
    if recommended:
        scheme, rec_info = recommended_int8(target, model)
    programs = collect(model, example or None, kw.get("example_kwargs"))
    ex = programs[0].example_inputs
    row = {"model": name, "family": ZOO[name].family, "source": ZOO[name].source, "target": target,
           "scheme": scheme, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}
    if recommended:
        row["recommended"] = True  # the zoo's int8 row: the recipe's scheme (or its int8 candidate)
        row.update(rec_info)
    opts = _convert_options(kw, ex, scheme, row)
    if scheme != "fp32":
        # the gate's figures are measured with the gate off and judged below with the default
        # thresholds (the same `judge` edgesdk.convert applies): a rejected artifact is kept so
        # that its p50 is still measured for the int8/fp32 baseline, and its row says rejected
        opts["max_drop"] = None
    t0 = time.perf_counter()
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            art = edgesdk.convert(model, example or None, target, quantize=scheme, out_dir=out / "artifacts",
                              name=f"{name}-{target}-{scheme}", **opts)
        except Exception as e:
            row.update(status="failed", error_class=type(e).__name__, error=_short(e),
                       wall_s=round(time.perf_counter() - t0, 1))
            if type(e).__name__ == "ToleranceError" and scheme != "fp32":
                row["status"] = "gate-failed"
                row["gate"] = _gate_from_error(e)
            return row
    m = art.manifest
    v = m.verification
    row.update(status="ok", wall_s=round(time.perf_counter() - t0, 1), conversion_s=m.extra.get("conversion_s"),
               path=str(art.path), size_bytes=art.size_bytes, outputs=[s.name for s in m.default_program.outputs],
               exporter=(m.extra.get("onnx_exporter") or {}).get("forward", {}).get("exporter"),
               exporter_fallback=m.extra.get("exporter_fallback"),
               warnings=[str(w.message)[:300] for w in caught if "Gate" in type(w.message).__name__])
    part = (m.extra.get("partition") or {}).get("forward")
    if part:
        row.update(delegated_fraction=part["delegated_fraction"], outside_delegate=part["outside_delegate"][:8])
    if scheme == "fp32":
        row.update(max_abs_err=v.get("max_abs_err"), min_cosine=v.get("min_cosine"))
    else:
        from edgesdk.converters.accuracy import judge
        g = judge(v, "default", False)  # what edgesdk.convert's default gate decides on these figures
        row["gate"] = {k: g.get(k) for k in ("mode", "passed", "drop", "drop_basis", "not_scorable", "failing")}
        row["gate"]["min_cosine"] = v.get("min_cosine")
        # per output, so that a report can re-judge the figures if the gate's rules change
        row["gate"]["outputs"] = [{k: o.get(k) for k in ("name", "kind", "cosine_min", "top1_agreement",
                                                         "top1_positions", "top1_near_ties", "ref_max_abs",
                                                         "got_max_abs", "not_scorable", "collapsed")}
                                  for o in v.get("outputs", [])]
        top1 = [o["top1_agreement"] for o in v.get("outputs", []) if "top1_agreement" in o]
        row["gate"]["top1_agreement"] = min(top1) if top1 else None
        row["status"] = {True: "ok", None: "not-scorable", False: "gate-failed"}[g.get("passed")]
        if row["status"] == "gate-failed":
            row["error_class"] = "ToleranceError"
            row["error"] = "rejected by the default gate (edgesdk.convert raises ToleranceError): " + \
                "; ".join(g.get("failing") or [])[:500]
    return row


def _convert_options(kw: dict, ex, scheme: str, row: dict) -> dict:
    """edgesdk.convert's options for a zoo row: a model with real data (MiniLM) is calibrated and
    gated on it, the others on seeded random inputs shaped like the example."""
    real = kw.pop("samples", None)
    opts = dict(kw, verify_samples=1)  # the example + 1 random input set (the zoo runs ~200 conversions)
    if scheme != "fp32":
        # in the artifact's input order (keyword inputs after the positional ones)
        if real:
            opts.update(calibration=real[:16], eval_data=real[16:])
            row["data"] = f"real text: {len(real[:16])} calibration, {len(real[16:])} held-out sentences"
        else:
            opts.update(calibration=samples_like(ex, CALIBRATION, 10), eval_data=samples_like(ex, EVAL, 20))
    return opts


def zoo_options(model, example, kw: dict, scheme: str) -> dict:
    """edgesdk.convert's options for a built zoo model (`zoo_models.build`) at ``scheme``, as a zoo row gets
    them (`_convert_options`); ``kw`` is left as it is."""
    from edgesdk.converters.programs import collect
    ex = collect(model, example or None, kw.get("example_kwargs"))[0].example_inputs
    return _convert_options(dict(kw), ex, scheme, {})


def repair_row(name: str, target: str, scheme: str, out: Path) -> dict:
    """What a user gets with ``auto_fallback=True`` for a row the default gate rejected: the same
    conversion under the default gate, keeping the most sensitive layers in float (up to 4, the
    SDK's default) until it passes. Returns the row's ``repair`` record."""
    import edgesdk
    model, example, kw = _build_once(name)
    opts = zoo_options(model, example, kw, scheme)
    t0 = time.perf_counter()
    try:
        art = edgesdk.convert(model, example or None, target, quantize=scheme, out_dir=out / "artifacts",
                              name=f"{name}-{target}-{scheme}-fallback", auto_fallback=True, **opts)
    except Exception as e:
        return {"status": "gate-failed" if type(e).__name__ == "ToleranceError" else "failed",
                "error_class": type(e).__name__, "error": _short(e), "wall_s": round(time.perf_counter() - t0, 1)}
    q = art.manifest.quantization or {}
    gate = q.get("gate") or {}
    kept = [k.get("layer", k) if isinstance(k, dict) else k for k in q.get("kept_float", [])]
    return {"status": "ok" if gate.get("passed") else "not-scorable", "kept_float": kept,
            "drop": gate.get("drop"), "min_cosine": (art.manifest.verification or {}).get("min_cosine"),
            "path": str(art.path), "size_bytes": art.size_bytes, "wall_s": round(time.perf_counter() - t0, 1)}


def _gate_from_error(e) -> dict:
    rep = getattr(e, "report", None) or (e.args[1] if len(e.args) > 1 else None) or {}
    outs = rep.get("outputs", []) if isinstance(rep, dict) else []
    top1 = [o["top1_agreement"] for o in outs if "top1_agreement" in o]
    return {"passed": False, "drop": rep.get("drop") if isinstance(rep, dict) else None,
            "min_cosine": rep.get("min_cosine") if isinstance(rep, dict) else None,
            "top1_agreement": min(top1) if top1 else None}


# ------------------------------------------------------------------------------------- raw toolchains

def raw_toolchain(name: str, target: str, scheme: str, work: Path) -> dict:
    """The backend's own export (and quantization) path, without the SDK: does it work?"""
    import torch
    from benchmarks.zoo_models import build
    from edgesdk.converters.programs import collect
    model, example, kw = build(name)
    prog = collect(model, example or None, kw.get("example_kwargs"))[0]
    module, args = prog.module, prog.example_inputs
    calib = samples_like(args, 8, 10)
    work.mkdir(parents=True, exist_ok=True)
    tried = []
    try:
        if target == "onnx-cpu":
            import onnxruntime as ort
            errs = []
            for dynamo in (True, False):  # either exporter counts: the backend offers both
                try:
                    path = work / f"raw-{dynamo}.onnx"
                    torch.onnx.export(module, args, str(path), dynamo=dynamo, input_names=prog.input_names)
                    tried.append(f"torch.onnx.export(dynamo={dynamo})")
                    if scheme != "fp32":
                        from onnxruntime.quantization import QuantFormat, quantize_static
                        from onnxruntime.quantization.calibrate import CalibrationDataReader

                        class R(CalibrationDataReader):
                            def __init__(self):
                                self.it = iter([{n: t.numpy() for n, t in zip(prog.input_names, s)} for s in calib])

                            def get_next(self):
                                return next(self.it, None)
                        q = work / f"raw-{dynamo}.int8.onnx"
                        quantize_static(str(path), str(q), R(), quant_format=QuantFormat.QDQ)
                        tried.append("onnxruntime.quantization.quantize_static")
                        path = q
                    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                    got = s.run(None, {i.name: t.numpy() for i, t in zip(s.get_inputs(), args)})
                    return _raw_result(prog, got, scheme, tried)
                except Exception as e:
                    errs.append(_short(e))
            return {"raw_ok": False, "raw_error": " | ".join(errs)}
        if target == "executorch-xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            ep_module = module
            if scheme != "fp32":
                from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
                    XNNPACKQuantizer, get_symmetric_quantization_config)
                from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
                dynamic = scheme == "int8-dynamic"
                q = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True,
                                                                                    is_dynamic=dynamic))
                prepared = prepare_pt2e(torch.export.export(module, args).module(), q)
                for s in calib:
                    prepared(*s)
                ep_module = convert_pt2e(prepared)
                tried.append("pt2e XNNPACKQuantizer" + (" (dynamic)" if dynamic else ""))
            ep = torch.export.export(ep_module, args)
            pte = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
            from executorch.runtime import Runtime
            method = Runtime.get().load_program(pte.buffer).load_method("forward")
            got = [o.numpy() for o in method.execute(list(args))]
            tried.append("torch.export + to_edge_transform_and_lower(XnnpackPartitioner)")
            return _raw_result(prog, got, scheme, tried)
        if target == "litert-cpu":
            import litert_torch
            from ai_edge_litert.interpreter import Interpreter
            path = work / "raw.tflite"
            litert_torch.convert(module, args).export(str(path))
            tried.append("litert_torch.convert")
            if scheme != "fp32":
                from ai_edge_quantizer import quantizer, recipe
                qt = quantizer.Quantizer(str(path), recipe.static_wi8_ai8())
                it = Interpreter(model_path=str(path))
                names = sorted(it.get_signature_list()["serving_default"]["inputs"])
                data = {"serving_default": [{n: (t.numpy().astype("int32") if t.dtype == torch.int64 else t.numpy())
                                             for n, t in zip(names, s)} for s in calib]}
                qpath = work / "raw.int8.tflite"
                qt.quantize(qt.calibrate(data)).export_model(str(qpath), overwrite=True)
                tried.append("ai-edge-quantizer static_wi8_ai8")
                path = qpath
            it = Interpreter(model_path=str(path))
            runner = it.get_signature_runner("serving_default")
            io = it.get_signature_list()["serving_default"]
            names = sorted(io["inputs"], key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
            res = runner(**{n: (t.numpy().astype("int32") if t.dtype == torch.int64 else t.numpy())
                            for n, t in zip(names, args)})
            outs = sorted(io["outputs"], key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
            return _raw_result(prog, [res[n] for n in outs], scheme, tried)
    except Exception as e:
        return {"raw_ok": False, "raw_error": _short(e), "raw_path": " + ".join(tried)}
    return {"raw_ok": None}


def _raw_result(prog, got, scheme: str, tried: list) -> dict:
    """The raw toolchain ran: for fp32 also whether its outputs match PyTorch (same tolerance as
    the SDK's verification), so a ToleranceError is attributed too."""
    import numpy as np
    out = {"raw_ok": True, "raw_path": " + ".join(tried)}
    if scheme == "fp32":
        errs = [float(np.abs(np.asarray(g, np.float64) - r.numpy()).max()) - 1e-4 * float(r.abs().max())
                for g, r in zip(got, prog.reference) if r.is_floating_point()]
        worst = max(errs, default=0.0)
        out.update(raw_ok=worst <= 1e-4, raw_excess_err=worst)
        if worst > 1e-4:
            out["raw_error"] = f"the backend's own conversion differs from PyTorch too (excess error {worst:.3g})"
    return out


def child(args) -> int:
    """Convert one model for the requested target:scheme pairs; print one JSON row per line."""
    import shutil
    import tempfile

    from benchmarks.zoo_models import enable_zoo_packages
    from edgesdk.converters.export_memo import shared_exports
    enable_zoo_packages()
    out = Path(args.out)
    # a model's fp32 and int8 rows on litert-cpu export the same fp32 .tflite: made once per child
    # (the int8 row quantizes a copy), as the pipeline shares it; the folder lives as long as the child
    memo = Path(tempfile.mkdtemp(prefix=f"zoo-exports-{args.model}-"))
    try:
        with shared_exports(memo):
            _child_rows(args, out)
    finally:
        shutil.rmtree(memo, ignore_errors=True)
    return 0


def _child_rows(args, out: Path) -> None:
    if args.repair:
        for pair in args.pairs:
            target, scheme = pair.split(":")
            try:
                rep = repair_row(args.model, target, scheme, out)
            except Exception as e:  # the model itself failed to build
                rep = {"status": "failed", "error_class": type(e).__name__, "error": _short(e)}
            print("ZOOREPAIR " + json.dumps({"key": row_key(args.model, target, scheme), "repair": rep},
                                            default=str), flush=True)
        return
    exported = set()  # targets whose fp32 row ran in this child
    for pair in args.pairs:
        target, scheme = pair.split(":")
        try:
            row = convert_row(args.model, target, scheme, out)
            if scheme == "fp32":
                exported.add(target)
            elif target == "litert-cpu" and target in exported:
                row["fp32_export_shared"] = True  # conversion_s excludes the fp32 export (its fp32 row has it)
        except Exception as e:  # the model itself failed to build: a zoo problem, not a conversion one
            row = {"model": args.model, "target": target, "scheme": scheme, "status": "failed",
                   "error_class": type(e).__name__, "error": _short(e), "trace": traceback.format_exc()[-800:]}
        if row["status"] == "failed":
            scheme = row["scheme"]
            row.update(raw_toolchain(args.model, target, scheme, out / "raw" / f"{args.model}-{target}-{scheme}"))
        print("ZOOROW " + json.dumps(row, default=str), flush=True)


def run_convert(args) -> int:
    from benchmarks.zoo_models import ZOO
    out = Path(args.out)
    (out / "locks").mkdir(parents=True, exist_ok=True)
    t_end = time.monotonic() + args.budget_s if args.budget_s else None
    for name in args.models or list(ZOO):
        if t_end and time.monotonic() > t_end:
            print(f"convert: --budget-s {args.budget_s:g} spent; the rest runs next time", flush=True)
            break
        res = load_results(out)  # several workers may share the results file
        # "int8" is resolved per model kind in the child (it builds the model)
        pairs = [f"{t}:{s}" for t in args.targets for s in args.schemes]
        pairs = [p for p in pairs if args.redo or not (
            _int8_done(res["rows"], name, p.split(":")[0]) if p.endswith(":int8") else row_key(name, *p.split(":"))
            in res["rows"])]
        if not pairs:
            continue
        lock = out / "locks" / name
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # another worker has this model
        except FileExistsError:
            continue
        os.close(fd)
        try:
            _convert_model(name, pairs, out, args)
        finally:
            lock.unlink(missing_ok=True)
    return 0


def run_repair(args) -> int:
    """Convert every row the default gate rejected again with ``auto_fallback=True`` (the repair a
    user can ask for) and record the outcome under the row's ``repair``; one child per model."""
    out = Path(args.out)
    rows = load_results(out)["rows"]
    todo: dict[str, list[str]] = {}
    for r in rows.values():
        if r["status"] == "gate-failed" and r["scheme"] != "fp32" and (args.redo or "repair" not in r) and \
                (not args.models or r["model"] in args.models) and r["target"] in args.targets:
            todo.setdefault(r["model"], []).append(f"{r['target']}:{r['scheme']}")
    for name, pairs in sorted(todo.items()):
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, "_child", "--repair", "--model", name, "--pairs", ",".join(pairs),
               "--out", str(out)]
        env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout * len(pairs))
            lines, err = proc.stdout.splitlines(), proc.stderr
        except subprocess.TimeoutExpired as e:
            lines, err = (e.stdout or b"").decode(errors="replace").splitlines(), "Timeout"
        got = set()
        for line in lines:
            if line.startswith("ZOOREPAIR "):
                rec = json.loads(line[10:])
                got.add(rec["key"])
                update_results(out, lambda res: res["rows"][rec["key"]].__setitem__("repair", rec["repair"]))
                print(f"{rec['key']:<60} repair: {rec['repair']['status']} kept float: "
                      f"{rec['repair'].get('kept_float')}", flush=True)
        for p in pairs:
            key = row_key(name, *p.split(":"))
            if key not in got:
                crash = {"status": "failed", "error_class": "crash", "error": err[-600:]}
                update_results(out, lambda res: res["rows"][key].__setitem__("repair", crash))
        print(f"  {name}: {time.perf_counter() - t0:.0f}s", flush=True)
    return 0


def _convert_model(name: str, pairs: list[str], out: Path, args) -> None:
    """One child process per model; each row is saved as soon as the child reports it."""
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "_child", "--model", name, "--pairs", ",".join(pairs), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    got = set()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as proc:
        import threading
        err: list[str] = []
        threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # keep the pipe drained
        timer = threading.Timer(args.timeout * len(pairs), proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                if line.startswith("ZOOROW "):
                    r = json.loads(line[7:])
                    got.add((r["target"], "fp32" if r["scheme"] == "fp32" else "int8"))
                    _save_row(out, r)
        finally:
            timer.cancel()
        proc.wait()
    for p in pairs:  # the first row the child never reported: it crashed or hung there
        t, s = p.split(":")
        if (t, "fp32" if s == "fp32" else "int8") not in got:
            why = "Timeout" if proc.returncode == -9 else f"exit {proc.returncode}"
            _save_row(out, {"model": name, "target": t, "scheme": s, "status": "failed", "error_class": why,
                            "error": "".join(err)[-600:]})
            break  # later pairs were not reached; they are retried on the next run
    print(f"  {name}: {time.perf_counter() - t0:.0f}s", flush=True)


def _save_row(out: Path, r: dict) -> None:
    r.setdefault("run", time.strftime("%Y-%m-%d %H:xx UTC", time.gmtime()))  # provenance in reports
    def put(res):  # a row converted again (--redo) stays the zoo's int8 row if it was
        old = res["rows"].get(row_key(r["model"], r["target"], r["scheme"]), {})
        if old.get("recommended"):
            r.update({k: old[k] for k in ("recommended", "recommended_scheme", "recommendation") if k in old})
        res["rows"][row_key(r["model"], r["target"], r["scheme"])] = r
    update_results(out, put)
    print(f"{r['model']:24s} {r['target']:20s} {r['scheme']:12s} {r['status']:13s} {r.get('error_class', '')}",
          flush=True)


DYNAMIC_MODELS = ("resnet18", "bert-tiny")


def dynamic_child(args) -> int:
    """One dynamic-shape model on one target: convert, then run at three shapes vs PyTorch."""
    import numpy as np
    import torch

    from edgesdk import runtime
    import edgesdk
    from benchmarks.zoo_models import ZOO, build, enable_zoo_packages
    enable_zoo_packages()
    name, target = args.model, args.targets[0]
    model, example, kw = build(name)
    dyn = ZOO[name].dynamic
    row = {"model": name, "target": target, "dynamic_shapes": {k: {str(d): list(r) for d, r in v.items()}
                                                               for k, v in dyn.items()}}
    try:
        art = edgesdk.convert(model, example or None, target, out_dir=Path(args.out) / "dynamic",
                          name=f"{name}-{target}-dynamic", dynamic_shapes=dyn, **kw)
        sess = runtime.load(art.path)
        spec = sess.manifest.default_program
        sym = next(iter(spec.dims))
        lo, hi = spec.dims[sym]["min"], spec.dims[sym]["max"]
        checks = []
        for n in (lo, (lo + hi) // 2, hi):
            arrays = runtime.example_inputs(sess.inputs, seed=n, dims={s: n for s in spec.dims})
            got = sess.run(arrays)
            with torch.no_grad():
                kwargs = kw.get("example_kwargs")
                ts = [torch.from_numpy(a) for a in arrays]
                ref = model(**dict(zip(kwargs, ts))) if kwargs else model(*ts)
            from edgesdk.converters.programs import flatten_outputs
            ref = [t.numpy() for t in flatten_outputs(ref)]
            err = max(float(np.abs(a - b).max()) for a, b in zip(ref, got))
            scale = max(float(np.abs(a).max()) for a in ref)
            checks.append({"size": n, "shapes": [list(a.shape) for a in arrays][:2], "max_abs_err": err,
                           "ok": err <= 1e-4 + 1e-4 * scale})
        row.update(status="ok" if all(c["ok"] for c in checks) else "mismatch", symbol=sym, checks=checks,
                   verification_dims=art.verification["programs"]["forward"].get("dims_checked"))
    except Exception as e:
        row.update(status="failed", error_class=type(e).__name__, error=_short(e))
    if row["status"] != "ok":
        row.update(_raw_dynamic(model, example, kw, dyn, target))
    print("ZOOROW " + json.dumps(row, default=str), flush=True)
    return 0


def _raw_dynamic(model, example, kw, dyn, target) -> dict:
    """The backend's own exporter with the same symbolic dims (torch.export.Dim), no SDK."""
    import torch
    from edgesdk.converters import shapes
    from edgesdk.converters.programs import collect
    prog = collect(model, example or None, kw.get("example_kwargs"))[0]
    ds = shapes.parse(dyn, prog.input_names, prog.example_inputs)
    args = shapes.traceable(ds, prog.input_names, prog.example_inputs)
    spec = ds.torch_shapes(prog.input_names, prog.module)
    try:
        if target == "litert-cpu":
            import litert_torch
            litert_torch.convert(prog.module, args, dynamic_shapes=spec)
            return {"raw_ok": True, "raw_path": "litert_torch.convert(dynamic_shapes=...)"}
        if target == "executorch-xnnpack":
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
            ep = torch.export.export(prog.module, args, dynamic_shapes=spec)
            to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()
            return {"raw_ok": True, "raw_path": "torch.export(dynamic_shapes) + XNNPACK lowering"}
        torch.onnx.export(prog.module, args, "/tmp/raw-dynamic.onnx", dynamo=True, dynamic_shapes=spec)
        return {"raw_ok": True, "raw_path": "torch.onnx.export(dynamo=True, dynamic_shapes=...)"}
    except Exception as e:
        return {"raw_ok": False, "raw_error": _short(e)}


def run_dynamic(args) -> int:
    out = Path(args.out)
    for name in args.models or DYNAMIC_MODELS:
        for target in args.targets:
            res = load_results(out)
            key = f"{name}|{target}"
            if key in res["dynamic"] and not args.redo:
                continue
            cmd = [sys.executable, __file__, "_dynamic", "--model", name, "--targets", target, "--out", str(out)]
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                                  env={**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"})
            rows = [json.loads(ln[7:]) for ln in proc.stdout.splitlines() if ln.startswith("ZOOROW ")]
            row = rows[0] if rows else {"model": name, "target": target, "status": "failed",
                                        "error_class": f"exit {proc.returncode}", "error": proc.stderr[-600:]}
            update_results(out, lambda res: res["dynamic"].__setitem__(key, row))
            print(f"{name:12s} {target:20s} {row['status']} "
                  + " ".join(f"{c['size']}:{c['max_abs_err']:.1e}" for c in row.get("checks", [])), flush=True)
    return 0


# ------------------------------------------------------------------------------------- latency

def run_profile(args) -> int:
    """p50 of every converted artifact without one, until ``--budget-s`` is spent (resumable)."""
    from edgesdk import runtime
    out = Path(args.out)
    t_end = time.monotonic() + (args.budget_s or 780)
    run_id = args.run_id or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    res = load_results(out)
    quant = {k.rsplit("|", 1)[0] for k, r in res["rows"].items() if r["scheme"] != "fp32" and r.get("path")}
    todo = [k for k, r in sorted(res["rows"].items())
            if r.get("path") and Path(r["path"]).is_dir() and (
                args.redo or "p50_ms" not in r
                # --refresh-fp32: an fp32 row timed in an earlier run is timed again beside its int8 rows
                or (args.refresh_fp32 and k.rsplit("|", 1)[0] in quant and r.get("p50_run") != run_id))]
    # fp32 and int8 of one model and target back to back (sorted keys), pairs first: their
    # int8/fp32 ratio is the figure that matters, and a budget cut then leaves whole pairs
    pair = {k.rsplit("|", 1)[0] for k in todo if not k.endswith("|fp32")}
    todo.sort(key=lambda k: (k.rsplit("|", 1)[0] not in pair, k))
    done = 0
    for k in todo:
        if time.monotonic() > t_end:
            break
        r = res["rows"][k]
        try:
            rep = runtime.profile(r["path"], warmup=args.warmup, iters=args.iters, threads=args.threads, per_op=False)
            r.update(p50_ms=rep.p50_ms, cv=rep.cv, profile_threads=rep.threads, profile_iters=args.iters,
                     p50_run=run_id)
        except Exception as e:
            r.update(p50_ms=None, profile_error=_short(e))
        done += 1
        print(f"{k:60s} p50 {r.get('p50_ms') or float('nan'):9.3f} ms", flush=True)
        update_results(out, lambda cur: cur["rows"].__setitem__(k, r))
    print(f"profiled {done} of {len(todo)} pending artifacts", flush=True)
    return 0


# ------------------------------------------------------------------------------------- recommend

def run_recommend(args) -> int:
    """Stamp every int8 row with what the current recipe recommends for its model and target
    (`converters.recipes.recommendation`): rows converted before a recipe change get its verdict
    without converting again (only the models are built)."""
    from benchmarks.zoo_models import enable_zoo_packages
    enable_zoo_packages()
    out = Path(args.out)
    res = load_results(out)
    rows = [r for r in res["rows"].values() if r.get("recommended")]
    for name in sorted({r["model"] for r in rows} & set(args.models or [r["model"] for r in rows])):
        model = _build_once(name)[0]
        for r in rows:
            if r["model"] == name:
                r.update(recommended_int8(r["target"], model)[1])
                print(f"{name:24s} {r['target']:20s} measured {r['scheme']:13s} recommended {r['recommended_scheme']}",
                      flush=True)
    def stamp(cur):  # other workers may have added rows meanwhile
        for k, r in res["rows"].items():
            if not (r.get("recommended") and k in cur["rows"]):
                continue
            info = {x: r[x] for x in ("recommended_scheme", "recommendation") if x in r}
            new = row_key(r["model"], r["target"], r.get("recommended_scheme") or "")
            if r.get("recommended_scheme") not in (None, "fp32", r["scheme"]):
                if new in cur["rows"]:  # the recipe moved to a scheme the zoo already measured: that row is the int8 row
                    cur["rows"][k].pop("recommended", None)
                    cur["rows"][new].update(recommended=True, **info)
                    print(f"{r['model']:24s} {r['target']:20s} the int8 row is now {r['recommended_scheme']}")
                    continue
                print(f"{r['model']:24s} {r['target']:20s} recommended {r['recommended_scheme']} has no row: "
                      f"convert --schemes {r['recommended_scheme']} --models {r['model']} --targets {r['target']}")
            cur["rows"][k].update(info)
    update_results(out, stamp)
    return 0


# ------------------------------------------------------------------------------------- margins

def run_margins(args) -> int:
    """fp32 top-1 margins in int8 steps of each classifier output's range, on the zoo's held-out
    inputs: the figure behind the gate's near-tie rule (margin < 1 step: not scored)."""
    import numpy as np
    import torch
    from benchmarks.zoo_models import ZOO, build, enable_zoo_packages
    from edgesdk.converters.accuracy import INT8_STEPS, _top1_margins
    from edgesdk.converters.programs import collect, flatten_outputs
    enable_zoo_packages()
    print("| model | fp32 top-1 margin / int8 step, per input | near ties | input-dependent share of the logits |")
    print("|---|---|---|---|")
    for name in args.models or [n for n, z in ZOO.items() if z.family.startswith("vision")]:
        model, example, kw = build(name)
        ex = collect(model, example or None, kw.get("example_kwargs"))[0].example_inputs
        with torch.no_grad():
            ref = np.concatenate([flatten_outputs(model(*s))[0].numpy() for s in samples_like(ex, EVAL, 20)])
        step = (ref.max() - ref.min()) / INT8_STEPS
        m = _top1_margins(ref) / step  # (samples,)
        share = np.linalg.norm(ref - ref.mean(0)) / np.linalg.norm(ref)  # how much the logits move with the input
        print(f"| {name} | {' '.join(f'{v:.2f}' for v in m)} | {int((m < 1).sum())} of {m.size} | {share:.4f} |",
              flush=True)
    return 0


# ------------------------------------------------------------------------------------- report

def _fmt(v, spec=".3g"):
    return "" if v is None else format(v, spec)


def report(args) -> int:
    res = load_results(Path(args.out))
    rows = list(res["rows"].values())
    models = sorted({r["model"] for r in rows})
    lines = []
    from benchmarks.zoo_models import ZOO
    lines.append(f"{len(models)} of {len(ZOO)} registered models have rows; rows: {len(rows)} of "
                 f"{len(ZOO) * len(TARGETS) * 2} (models x CPU targets x {{fp32, int8}})")
    lines.append("")
    lines.append("| target | scheme | converts | verified / passes gate | not scorable | gate failed "
                 "(of which auto_fallback repairs) | failed: SDK only | failed: backend too |")
    lines.append("|---|---|---|---|---|---|---|---|")
    for target in TARGETS:
        for kind in ("fp32", "int8"):
            rs = [r for r in rows if r["target"] == target and (r["scheme"] == "fp32" if kind == "fp32"
                                                                 else r.get("recommended"))]
            if not rs:
                continue
            n = len(rs)
            conv = [r for r in rs if r["status"] in ("ok", "not-scorable", "gate-failed")]
            ok = [r for r in rs if r["status"] == "ok"]
            ns = [r for r in rs if r["status"] == "not-scorable"]
            gf = [r for r in rs if r["status"] == "gate-failed"]
            fixed = [r for r in gf if (r.get("repair") or {}).get("status") in ("ok", "not-scorable")]
            tried = [r for r in gf if r.get("repair")]
            fail = [r for r in rs if r["status"] == "failed"]
            ours = [r for r in fail if r.get("raw_ok")]
            theirs = [r for r in fail if r.get("raw_ok") is False]
            schemes = sorted({r["scheme"] for r in rs if r["scheme"] != "int8"})
            keep_fp32 = sum(r.get("recommended_scheme") == "fp32" for r in rs)
            scheme = "fp32" if kind == "fp32" else "recommended: " + ", ".join(
                f"{x} ×{sum(r['scheme'] == x for r in rs)}" for x in schemes) + (
                f" (of which the recipe deploys fp32 for {keep_fp32}: int8 measured slower)" if keep_fp32 else "")
            lines.append(f"| {target} | {scheme} | {len(conv)}/{n} ({100 * len(conv) / n:.0f}%) | {len(ok)} | "
                         f"{len(ns)} | {len(gf)}" + (f" ({len(fixed)} of {len(tried)} tried)" if tried else "") +
                         f" | {len(ours)} | {len(theirs)} |")
    lines.append("")
    lines.append("| model | family | target | scheme | status | max err / gate | conv s | size ratio | p50 ms | "
                 "int8/fp32 p50 | note |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    by = {(r["model"], r["target"], r["scheme"]): r for r in rows}
    for r in sorted(rows, key=lambda r: (r.get("family", ""), r["model"], TARGETS.index(r["target"])
                                         if r["target"] in TARGETS else 9, r["scheme"] != "fp32")):
        fp = by.get((r["model"], r["target"], "fp32"), {})
        ratio = (r["size_bytes"] / fp["size_bytes"]) if r["scheme"] != "fp32" and r.get("size_bytes") and \
            fp.get("size_bytes") else None
        pr = (r["p50_ms"] / fp["p50_ms"]) if r["scheme"] != "fp32" and r.get("p50_ms") and fp.get("p50_ms") else None
        if r["scheme"] == "fp32":
            figure = f"max err {_fmt(r.get('max_abs_err'), '.1e')}" if r.get("max_abs_err") is not None else ""
        else:
            g = r.get("gate") or {}
            figure = " ".join(x for x in (
                f"top-1 {g['top1_agreement'] * 100:.0f}%" if g.get("top1_agreement") is not None else "",
                f"min cos {g['min_cosine']:.3f}" if g.get("min_cosine") is not None else "") if x)
        note = ""
        rep = r.get("repair")
        if rep:
            note = (f"auto_fallback: {rep['status']}, {len(rep.get('kept_float') or [])} layer(s) kept float"
                    + (f", size {rep['size_bytes'] / fp['size_bytes']:.2f}" if rep.get("size_bytes")
                       and fp.get("size_bytes") else "") + "; ")
        if r["status"] == "failed":
            note += f"{r.get('error_class')}: " + ("backend toolchain fails too" if r.get("raw_ok") is False else
                                                   "backend toolchain works: SDK bug" if r.get("raw_ok") else "")
        elif r.get("exporter_fallback"):
            note += "TorchScript exporter (dynamo failed)"
        elif r.get("delegated_fraction") is not None and r["delegated_fraction"] < 0.9 and r.get("outside_delegate"):
            note += "outside XNNPACK: " + ", ".join(f"{o['op'].split('.')[-1]}×{o['count']}"
                                                   for o in r["outside_delegate"][:3])
        lines.append(f"| {r['model']} | {r.get('family', '')} | {r['target']} | {r['scheme']} | {r['status']} | "
                     f"{figure} | {_fmt(r.get('conversion_s'), '.1f')} | {_fmt(ratio, '.2f')} | "
                     f"{_fmt(r.get('p50_ms'), '.2f')} | {_fmt(pr, '.2f')} | {note} |")
    # model x target pairs with an int8 row: their ratio is the figure that matters
    timed = sorted({(r["model"], r["target"]) for r in rows if r["scheme"] != "fp32"})
    if timed:
        lines.append("")
        runs_p50 = sorted({r["p50_run"] for r in rows if r.get("p50_run")})
        lines.append(f"p50 ({rows[0].get('profile_threads') or 2} threads; fp32 and int8 of a model timed back to "
                     f"back in one process; timing runs: {', '.join(runs_p50) or 'unlabelled'}):")
        lines.append("")
        lines.append("int8/fp32 = p50 of the int8 artifact over p50 of the fp32 artifact of the same model and "
                     "target, same process, same threads. *best int8* = the fastest converted int8 row measured "
                     "(only the schemes the zoo ran for that model: usually the recommended one alone).")
        lines.append("")
        lines.append("| model | target | fp32 p50 ms | recommended | rec. p50 ms | rec./fp32 | rec. gate | "
                     "rec. slower than fp32 | best int8 | best/fp32 | best gate |")
        lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
        for m, t in timed:
            fp = by.get((m, t, "fp32"), {})
            qs = [r for r in rows if r["model"] == m and r["target"] == t and r["scheme"] != "fp32"]
            rec = next((r for r in qs if r.get("recommended")), {})
            timed_q = [r for r in qs if r.get("p50_ms")]
            best = min(timed_q, key=lambda r: r["p50_ms"]) if timed_q else {}

            def ratio(r):  # only from one timing run: never across runs
                return r["p50_ms"] / fp["p50_ms"] if r.get("p50_ms") and fp.get("p50_ms") and \
                    r.get("p50_run") == fp.get("p50_run") else None
            rr = ratio(rec)
            if rec.get("recommended_scheme") == "fp32":  # the recipe deploys fp32 here: its ratio is 1
                rec, rr = {"scheme": "fp32 (recipe)", "p50_ms": fp.get("p50_ms"), "status": "verified"}, 1.0
            lines.append(f"| {m} | {t} | {_fmt(fp.get('p50_ms'), '.2f')} | {rec.get('scheme', 'not run')} | "
                         f"{_fmt(rec.get('p50_ms'), '.2f')} | {_fmt(rr, '.2f')} | {rec.get('status', '')} | "
                         f"{'' if rr is None else 'YES' if rr > 1 else 'no'} | {best.get('scheme', '')} | "
                         f"{_fmt(ratio(best), '.2f')} | {best.get('status', '')} |")
        ratios = {t: [by[(m, t, "fp32")] for m, tt in timed if tt == t and (m, t, "fp32") in by] for t in TARGETS}
        lines.append("")
        lines.append("| target | models with fp32 and int8 p50 | best int8 ≤ 0.7× fp32 | same, among rows that pass "
                     "the default gate | recommended slower than fp32 |")
        lines.append("|---|---|---|---|---|")
        for t in TARGETS:
            pairs = []
            for fp in ratios[t]:
                qs = [r for r in rows if r["model"] == fp["model"] and r["target"] == t and r["scheme"] != "fp32"
                      and r.get("p50_ms")]
                qs = [r for r in qs if r.get("p50_run") == fp.get("p50_run")]
                if qs and fp.get("p50_ms"):
                    rec = next((r for r in qs if r.get("recommended")), None)
                    passing = [r["p50_ms"] for r in qs if r["status"] == "ok"]
                    pairs.append((min(r["p50_ms"] for r in qs) / fp["p50_ms"],
                                  min(passing) / fp["p50_ms"] if passing else None,
                                  1.0 if rec and rec.get("recommended_scheme") == "fp32" else
                                  rec["p50_ms"] / fp["p50_ms"] if rec else None))
            if pairs:
                fast = sum(b <= 0.7 for b, _, _ in pairs)
                fast_ok = sum(1 for _, b, _ in pairs if b is not None and b <= 0.7)
                slow = sum(1 for _, _, r in pairs if r is not None and r > 1)
                lines.append(f"| {t} | {len(pairs)} | {fast} ({100 * fast / len(pairs):.0f}%) | "
                             f"{fast_ok} ({100 * fast_ok / len(pairs):.0f}%) | {slow} |")
    runs = sorted({r.get("run", "this run") for r in rows})
    if len(runs) > 1:
        lines.append("")
        lines.append("Rows by run: " + "; ".join(f"{sum(r.get('run', 'this run') == x for r in rows)} from {x}"
                                                 for x in runs))
    dyn = res.get("dynamic", {})
    if dyn:
        lines.append("")
        lines.append("| dynamic model | target | status | sizes checked: max abs err vs PyTorch |")
        lines.append("|---|---|---|---|")
        for k, r in sorted(dyn.items()):
            checks = ", ".join(f"{r.get('symbol')}={c['size']}: {c['max_abs_err']:.1e}" for c in r.get("checks", []))
            lines.append(f"| {r['model']} | {r['target']} | {r['status']} | {checks or r.get('error', '')[:120]} |")
    fails = [r for r in rows if r["status"] in ("failed", "gate-failed")]
    if fails:
        lines.append("")
        lines.append("Failures:")
        for r in sorted(fails, key=lambda r: (r["model"], r["target"])):
            raw = ("" if "raw_ok" not in r else
                   f" [raw toolchain: {'works' if r['raw_ok'] else 'fails: ' + (r.get('raw_error') or '')[:200]}]")
            lines.append(f"- {r['model']} / {r['target']} / {r['scheme']}: {(r.get('error') or '')[:300]}{raw}")
    print("\n".join(lines))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("phase", choices=["convert", "repair", "dynamic", "profile", "recommend", "margins", "report",
                                     "_child", "_dynamic"])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--models", type=lambda s: s.split(","), default=None)
    p.add_argument("--model")
    p.add_argument("--targets", type=lambda s: s.split(","), default=list(TARGETS))
    p.add_argument("--schemes", type=lambda s: s.split(","), default=["fp32", "int8"],
                   help="fp32 and/or int8 (= each target's recommended int8 scheme)")
    p.add_argument("--redo", action="store_true", help="convert / profile rows already in the results again")
    p.add_argument("--timeout", type=int, default=900, help="seconds per model and target (child process)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="profile: stop after this many seconds (default 780); convert: start no new model after it")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--refresh-fp32", action="store_true",
                   help="profile: time the fp32 row of every model x target with int8 rows again, beside them")
    p.add_argument("--run-id", default=None,
                   help="profile: label of this timing run (default: its start time); --refresh-fp32 re-times fp32 rows "
                        "from other runs only, so a run cut by its budget resumes where it stopped")
    p.add_argument("--pairs", type=lambda s: s.split(","), default=[], help=argparse.SUPPRESS)
    p.add_argument("--repair", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    return {"convert": run_convert, "repair": run_repair, "dynamic": run_dynamic, "profile": run_profile,
            "recommend": run_recommend, "margins": run_margins,
            "report": report,
            "_child": child, "_dynamic": dynamic_child}[a.phase](a)


if __name__ == "__main__":
    sys.exit(main())
