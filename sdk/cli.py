"""`edgesdk`: targets, convert, run, profile, distill, demo, deploy, diff, worker.

Exit codes: 0 success, 2 a clear error (one line on stderr), 1 an unexpected failure,
130 interrupted. `--debug` shows tracebacks; `--json` prints machine-readable output.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from edgesdk.runtime import logs
from edgesdk.runtime.errors import ConfigError, SdkError
from edgesdk.loaders import load_model_spec, load_object  # noqa: F401  (the CLI's MODEL / MODULE:FUNCTION arguments)
from edgesdk.progress import Progress

log = logging.getLogger("edgesdk.cli")


# ----------------------------------------------------------------------------- helpers

def _emit_json(obj) -> None:
    from edgesdk.runtime.profile import _json_safe
    print(json.dumps(_json_safe(obj), indent=2))


def _load_inputs(paths: list[str] | None, sess):
    import numpy as np

    if not paths:
        return None
    if len(paths) == 1 and paths[0].endswith(".npz"):
        with np.load(paths[0], allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
        names = [s.name for s in sess.inputs]
        if set(d) == set(names):
            return d
        if all(k.startswith("arr_") for k in d):  # np.savez(*arrays): positional
            return [d[f"arr_{i}"] for i in range(len(d))]
        raise ConfigError(f"{paths[0]}: arrays {sorted(d)} do not match the inputs {names}")
    arrays = []
    for p in paths:
        if not p.endswith(".npy"):
            raise ConfigError(f"{p}: inputs are .npy files (one per input, in order) or one .npz")
        arrays.append(np.load(p, allow_pickle=False))
    return arrays


# ----------------------------------------------------------------------------- commands

def cmd_targets(args) -> int:
    import edgesdk
    ts = edgesdk.targets()
    if args.json:
        _emit_json([{"name": t.name, "device": t.device, "format": t.format, "quantization": list(t.quantization),
                     "runs_here": t.runs_here, "runs": t.runs, "why_not": t.why_not, "backend": t.backend,
                     "description": t.description} for t in ts])
        return 0
    print(f"{'target':<20} {'device':<7} {'format':<10} {'runs here':<13} {'quantization':<24} notes")
    for t in ts:
        print(f"{t.name:<20} {t.device:<7} {t.format:<10} {t.runs:<13} {', '.join(t.quantization):<24} "
              f"{t.why_not or t.description}")
    return 0


def cmd_convert(args) -> int:
    from edgesdk import converters
    import edgesdk

    prog = Progress(not args.quiet)
    if ("auto" in args.target or args.quantize == "auto") and len(args.target) > 1:
        raise ConfigError(f"--target auto / --quantize auto pick one artifact: give one --target (got {args.target})")
    if args.device and args.target != ["auto"]:
        raise ConfigError("--device selects the candidate targets of --target auto; drop it or use --target auto")
    prog.stage(f"loading model {args.model}")
    model, example, stem = load_model_spec(args.model)
    kwargs = {}
    if isinstance(example, dict):  # the function returned (model, {name: tensor}): keyword inputs
        example, kwargs = None, {"example_kwargs": example}
    elif isinstance(example, tuple) and len(example) == 2 and isinstance(example[1], dict):
        example, kwargs = example[0], {"example_kwargs": example[1]}  # (args, kwargs)
    if args.dynamic:
        kwargs["dynamic_shapes"] = parse_dynamic(args.dynamic)
    options = parse_options(args.option or [])
    if args.target == ["auto"] or args.quantize == "auto":
        return _convert_auto(args, model, example, stem, prog, {**kwargs, **options})
    args.quantize = args.quantize or "fp32"
    targets = converters.target_names() if args.target == ["all"] else args.target
    results = []
    for t in targets:
        name = args.name if args.name and len(targets) == 1 else None
        art = edgesdk.convert(model, example, t, quantize=args.quantize, out_dir=args.out,
                          name=name or f"{stem}-{t}" + ("" if args.quantize == "fp32" else f"-{args.quantize}"),
                          atol=args.atol, rtol=args.rtol, verify_samples=args.verify_samples,
                          calibration=args.calib, eval_data=args.eval, max_drop=args.max_drop,
                          auto_fallback=args.auto_fallback, min_calibration=args.min_calibration,
                          prompt_lengths=args.prompt_lengths,
                          progress=lambda s, t=t: prog.stage(f"{t}: {s}"), **kwargs, **options)
        v, q = art.verification, art.manifest.quantization
        row = {"path": str(art.path), "target": t, "quantize": args.quantize, "size_bytes": art.size_bytes,
               "max_abs_err": v["max_abs_err"], "min_cosine": v["min_cosine"],
               "conversion_s": art.manifest.extra.get("conversion_s"), "programs": list(art.manifest.programs),
               "verification_kind": v.get("kind", "numerical vs PyTorch"), "notes": art.summary(),
               "outside_delegate": art.outside_delegate,
               "dims": {p: s.dims for p, s in art.manifest.programs.items() if s.dims}}
        if "gate" in q:
            row.update(gate=q["gate"], kept_float=[k["layer"] for k in q["kept_float"]],
                       outputs=v["outputs"], calibration=q.get("calibration"), eval=q.get("eval"))
        results.append(row)
    if args.json:
        _emit_json(results if len(results) > 1 else results[0])
    else:
        for r in results:
            if r["max_abs_err"] is None:
                print(f"{r['path']}  ({r['size_bytes'] / 1024:.1f} KiB, {r['quantize']}; {r['verification_kind']})")
            elif "gate" in r:
                g = r["gate"]
                top1 = [o["top1_agreement"] for o in r["outputs"] if "top1_agreement" in o]
                verdict = ("OFF (--max-drop none)" if g.get("mode") == "off" else
                           "NOT SCORED: " + "; ".join(f"{n['output']}: {n['why']}" for n in g["not_scorable"])
                           if g.get("passed") is None else
                           "default thresholds passed" if g.get("mode") == "default" else
                           f"max_drop {g['max_drop']:g} passed")
                print(f"{r['path']}  ({r['size_bytes'] / 1024:.1f} KiB, {r['quantize']}: drop {g['drop']:.4f} "
                      f"[{g['drop_basis']}], min cosine {r['min_cosine']:.4f}"
                      + (f", top-1 agreement {min(top1) * 100:.1f}%" if top1 else "")
                      + f", max |diff| {r['max_abs_err']:.3g} on {r['eval']['samples']} held-out inputs; gate "
                      + verdict + (f"; kept in float: {', '.join(r['kept_float'])}" if r["kept_float"] else "") + ")")
            else:
                print(f"{r['path']}  ({r['size_bytes'] / 1024:.1f} KiB, verified: max |diff| {r['max_abs_err']:.2e}, "
                      f"cosine {r['min_cosine']:.6f})")
            for note in r["notes"]:
                print(f"  note: {note}")
    return 0


def _convert_auto(args, model, example, stem: str, prog, extra: dict) -> int:
    from edgesdk.auto import convert_auto
    target = args.target[0]
    kw = dict(calibration=args.calib, eval_data=args.eval, auto_fallback=args.auto_fallback,
              min_calibration=args.min_calibration, atol=args.atol, rtol=args.rtol, verify_samples=args.verify_samples,
              max_drop=args.max_drop, **extra)
    art = convert_auto(model, example, target, quantize=args.quantize, device=args.device, out_dir=args.out,
                       name=args.name or f"{stem}-{target}", iters=args.iters, progress=prog.stage, **kw)
    sel = art.selection
    if args.json:
        _emit_json({"path": str(art.path), "target": art.target, "quantize": art.manifest.quantization.get("scheme"),
                    "size_bytes": art.size_bytes, **{k: v for k, v in sel.items() if k != "table_md"}})
        return 0
    print(sel["table_md"])
    p = sel["pick"]
    print(f"{art.path}  ({art.size_bytes / 1024:.1f} KiB; picked {p['target']} {p['scheme']} at {p['threads']} "
          f"thread(s), {p['latency_ms']:.4g} ms: {p['why']})" + (f"\ncandidates: {sel['table']}" if sel.get("table") else ""))
    return 0


def parse_dynamic(specs: list[str]) -> dict:
    """``INPUT:DIM=MIN..MAX`` or ``INPUT:DIM=NAME:MIN..MAX`` (repeatable) -> edgesdk.convert's dynamic_shapes."""
    import re
    out: dict = {}
    for spec in specs:
        m = re.fullmatch(r"([^:=]+):(-?\d+)=(?:([A-Za-z_]\w*):)?(\d+)\.\.(\d+)", spec.strip())
        if not m:
            raise ConfigError(f"--dynamic {spec!r}: expected INPUT:DIM=MIN..MAX (e.g. x:0=1..32) or "
                              "INPUT:DIM=NAME:MIN..MAX (e.g. ids:1=seq:8..512; a shared NAME ties dims together)")
        inp, dim, sym, lo, hi = m.groups()
        out.setdefault(inp, {})[int(dim)] = (sym, int(lo), int(hi)) if sym else (int(lo), int(hi))
    return out


def parse_options(items: list[str]) -> dict:
    """``KEY=VALUE`` target options (values read as JSON when they parse, else as strings)."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--option {item!r}: expected KEY=VALUE (e.g. --option soc_model=57)")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def parse_max_drop(v: str):
    """--max-drop: a number, 'default' (thresholds per kind of output) or 'none' (gate off)."""
    if v.lower() in ("none", "off"):
        return None
    if v.lower() == "default":
        return "default"
    try:
        return float(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, 'default' or 'none', got {v!r}") from None


def parse_dims(items: list[str]) -> dict | None:
    out = {}
    for item in items or []:
        k, _, v = item.partition("=")
        if not v.isdigit():
            raise ConfigError(f"--dim {item!r}: expected NAME=SIZE (e.g. --dim batch=8)")
        out[k] = int(v)
    return out or None


def _describe(a) -> dict:
    import numpy as np
    d = {"shape": list(a.shape), "dtype": str(a.dtype)}
    if a.size and a.dtype.kind in "fiub":
        f = a.astype(np.float64)
        d.update(min=float(f.min()), max=float(f.max()), mean=float(f.mean()))
    return d


def cmd_run(args) -> int:
    import numpy as np

    from edgesdk import runtime
    sess = runtime.load(args.artifact, threads=args.threads, nan_policy=args.nan_policy,
                        require_signature=bool(args.public_key), public_key=args.public_key)
    b = sess.program(args.program) if args.program else sess._default
    inputs = _load_inputs(args.inputs, sess)
    generated = inputs is None
    if generated:
        inputs = runtime.example_inputs(list(b.spec.inputs), seed=args.seed, dims=b.spec.example_dims())
    outs = b.run(inputs)
    names = [s.name for s in b.spec.outputs]
    if args.out:
        np.savez(args.out, **dict(zip(names, outs)))
    if args.json:
        _emit_json({"artifact": str(sess.path), "verified": sess.verified, "generated_inputs": generated,
                    "outputs": {n: {**_describe(o), "values": o.ravel()[:16].tolist()} for n, o in zip(names, outs)},
                    "saved_to": args.out})
        return 0
    if generated:
        log.info("(no --inputs given: ran on generated inputs, seed %s)", args.seed)
    for n, o in zip(names, outs):
        print(f"{n}: {o.dtype}{list(o.shape)}  {np.array2string(o.ravel()[:8], precision=5)}"
              + (" ..." if o.size > 8 else ""))
    if args.out:
        print(f"saved outputs to {args.out}")
    return 0


def cmd_generate(args) -> int:
    from edgesdk import runtime
    sess = runtime.load(args.artifact, threads=args.threads, require_signature=bool(args.public_key),
                        public_key=args.public_key)
    if (args.text is None) == (args.tokens is None):
        raise ConfigError("give the prompt as --text 'def f(x):' or as --tokens 1,2,3 (exactly one of them)")
    if args.tokens is not None:
        try:
            prompt = [int(t) for t in args.tokens.split(",") if t.strip()]
        except ValueError:
            raise ConfigError(f"--tokens: expected comma-separated integer ids, got {args.tokens!r}") from None
    else:
        prompt = args.text.encode().decode("unicode_escape") if args.escapes else args.text
    g = sess.generate(prompt, args.max_new_tokens, strategy=args.strategy, top_k=args.top_k,
                      temperature=args.temperature, seed=args.seed, stop_at_eos=not args.ignore_eos)
    if args.json:
        _emit_json({"artifact": str(sess.path), "target": sess.target, **g.to_dict()})
        return 0
    print(g.text if g.text is not None else " ".join(map(str, g.tokens)))
    rate = f" · {g.tokens_per_s:.1f} tokens/s after the first" if g.step_ms else ""
    print(f"({len(g.tokens)} tokens, stopped by {g.finish_reason} · TTFT {g.ttft_ms:.2f} ms{rate} · "
          f"decoding state {g.state_bytes / 1024:.1f} KiB)", file=sys.stderr)
    return 0


def cmd_profile(args) -> int:
    from edgesdk import runtime
    if args.device != "local":
        # a phone over adb (runtime.devices): push, run the android_demo app's benchmark, pull its JSON
        from edgesdk.runtime.devices import parse_device, profile_on_device
        device = parse_device(args.device)
        if device != "local":
            if args.inputs:
                raise ConfigError(f"--inputs is not supported with --device {args.device}: the app generates "
                                  "inputs from the manifest's spec; drop --inputs")
            prog = Progress(not args.quiet and not args.json)
            warm = "adaptive warm-up" if args.warmup == "auto" else f"{args.warmup} warm-up"
            prog.stage(f"profiling {args.artifact} on {device.name} ({warm} + {args.iters} runs"
                       + (", sweeping thread counts first" if args.threads == "auto" else "") + ")")
            rep = profile_on_device(args.artifact, device, warmup=args.warmup, iters=args.iters,
                                    threads=args.threads, program=args.program, log=prog.stage)
            if args.out:
                Path(args.out).write_text(rep.to_json())
            print(rep.to_json() if args.json else rep.table(top_ops=args.top_ops))
            return 0
    prog = Progress(not args.quiet and not args.json)
    warm = "adaptive warm-up" if args.warmup == "auto" else f"{args.warmup} warm-up"
    prog.stage(f"profiling {args.artifact} ({warm} + {args.iters} runs, "
               + ("isolated child process" if args.isolate else "in this process")
               + (", sweeping thread counts first" if args.threads == "auto" else "") + ")")
    sess_inputs = None
    if args.inputs:
        sess_inputs = _load_inputs(args.inputs, runtime.load(args.artifact))
    rep = runtime.profile(args.artifact, warmup=args.warmup, iters=args.iters, inputs=sess_inputs,
                          threads=args.threads, program=args.program, per_op=not args.no_per_op,
                          progress=prog.bar("timed runs"), require_signature=bool(args.public_key),
                          public_key=args.public_key, prompt_tokens=args.prompt_tokens,
                          new_tokens=args.new_tokens, isolate=args.isolate, max_warmup_s=args.max_warmup_s,
                          dims=parse_dims(args.dim))
    if args.out:
        Path(args.out).write_text(rep.to_json())
    if args.json:
        print(rep.to_json())
    else:
        print(rep.table(top_ops=args.top_ops))
    return 0


def _read_config(path: str | None) -> dict:
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such config file")
    text = p.read_text()
    if p.suffix in (".yaml", ".yml"):
        import yaml
        d = yaml.safe_load(text)
    else:
        try:
            d = json.loads(text)
        except ValueError as e:
            raise ConfigError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{path}: the config must be a mapping of DistillConfig fields")
    return d


def cmd_distill(args) -> int:
    import os
    import subprocess

    if args.nproc and args.nproc > 1 and "RANK" not in os.environ:
        argv = [a for a in sys.argv[1:]]
        i = argv.index("--nproc")
        del argv[i:i + 2]
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
               "-m", "edgesdk.cli", *argv]
        return subprocess.call(cmd)
    from edgesdk.models.distill.trainer import DistillConfig, finish_distributed
    from edgesdk.distill import distill, save_student

    cfg = _read_config(args.config)
    for key in ("steps", "batch_size", "lr", "seed", "checkpoint_dir"):
        v = getattr(args, key)
        if v is not None:
            cfg[key] = v
    if args.resume:
        cfg["resume"] = True
    if cfg.get("resume") and not cfg.get("checkpoint_dir"):
        cfg["checkpoint_dir"] = str(Path(args.out) / "checkpoints")
    cfg.setdefault("checkpoint_dir", str(Path(args.out) / "checkpoints"))
    cfg["progress"] = not (args.quiet or args.json)
    try:
        config = DistillConfig.from_dict(cfg)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"invalid distillation config: {e}") from None
    teacher = load_object(args.teacher, "teacher")
    student = load_object(args.student, "student")
    data = load_object(args.data, "data")
    eval_fn = load_object(args.eval, "eval") if args.eval else None
    trained = distill(teacher, student, data, config, eval_fn=eval_fn)
    if int(os.environ.get("RANK", "0")) != 0:
        finish_distributed()
        return 0
    path = save_student(trained, args.out, config)
    finish_distributed()
    hist = trained.distill_history
    result = {"student": str(path), "steps": len(hist), "final_loss": hist[-1]["loss"] if hist else None,
              "metrics": next((h["metrics"] for h in reversed(hist) if h["metrics"]), {}),
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if args.json:
        _emit_json(result)
    else:
        print(f"{path}  (final loss {result['final_loss']:.4f} after {result['steps']} steps"
              + "".join(f", {k} {v:.4g}" for k, v in result["metrics"].items()) + ")")
    return 0


def cmd_keygen(args) -> int:
    from edgesdk.runtime.signing import generate_keypair
    priv, pub = generate_keypair(args.out)
    if args.json:
        _emit_json({"private_key": str(priv), "public_key": str(pub)})
    else:
        print(f"private key {priv} (keep it secret), public key {pub} (ship it with your app)")
    return 0


def cmd_sign(args) -> int:
    from edgesdk import runtime
    from edgesdk.runtime.signing import sign_artifact
    runtime.load(args.artifact)  # refuse to sign an artifact whose payload does not match its manifest
    sig = sign_artifact(args.artifact, args.key)
    if args.json:
        _emit_json({"artifact": args.artifact, "signature": sig})
    else:
        print(f"signed {args.artifact} (ed25519, public key {sig['public_key']})")
    return 0


def cmd_verify(args) -> int:
    from edgesdk import runtime
    sess = runtime.load(args.artifact, require_signature=bool(args.public_key), public_key=args.public_key)
    result = {"artifact": args.artifact, "payload_verified": sess.verified,
              "signature_verified": bool(args.public_key),
              "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in sess.manifest.files]}
    if args.json:
        _emit_json(result)
    else:
        print(f"{args.artifact}: payload matches its manifest ({len(result['files'])} files)"
              + ("; signature valid for the given public key" if args.public_key else
                 "; signature not checked (pass --public-key)"))
    return 0


def _pipeline_json(res) -> dict:
    return {"report_html": str(res.report_html) if res.report_html else None,
            "report_md": str(res.report_md) if res.report_md else None, "results": str(res.results_json),
            "timings": res.timings, "cache": res.cache, "families": res.families,
            "artifacts": [{k: v for k, v in r.items() if k not in ("samples_ms", "program_profiles")} for r in res.rows]}


def cmd_demo(args) -> int:
    from edgesdk.demo import run_demo
    res = run_demo(out_dir=args.out, iters=args.iters, warmup=args.warmup, quick=args.quick,
                   progress=Progress(not (args.json or args.quiet)), cache_dir=args.cache,
                   families=args.family, executor=args.executor)
    if args.json:
        _emit_json(_pipeline_json(res))
    elif args.quiet:
        print(res.report_html)
    return 0


def cmd_deploy(args) -> int:
    from edgesdk.demo import format_table
    from edgesdk.pipeline import PipelineConfig, pipeline
    cfg = PipelineConfig.load(args.config)
    if args.out:
        cfg.output.dir = args.out
    if args.cache:
        cfg.output.cache = args.cache
    if args.no_cache:
        cfg.output.use_cache = False
    if args.target:
        cfg.targets = args.target
    prog = Progress(not (args.json or args.quiet))
    res = pipeline(cfg, progress=prog, quick=True if args.quick else None, executor=args.executor)
    if args.json:
        _emit_json(_pipeline_json(res))
    elif args.quiet:
        print(res.report_html or res.results_json)
    else:
        print(format_table(res.rows))
        print((f"\nreport: {res.report_html}" if res.report_html else "") + f"\nlockfile: {res.results_json}")
    if args.strict and not res.ok:
        bad = [f"{r['model']}/{r['target']}/{r['scheme']} ({r['status']})" for r in res.rows
               if r["status"] not in ("ok", "convert-only", "skipped")]
        raise ConfigError(f"--strict: {len(bad)} artifact(s) not delivered: {', '.join(bad)}; see {res.report_html}")
    return 0


def cmd_worker(args) -> int:
    import os

    from edgesdk.pipeline.raynode import parse_resources, worker_command
    argv, resources = worker_command(args.ray, num_cpus=args.num_cpus, extra=parse_resources(args.resource),
                                     detect=not args.no_detect, node_ip=args.node_ip)
    if args.json or args.dry_run:
        if args.json:
            _emit_json({"address": args.ray, "resources": resources, "command": argv})
        else:
            print(" ".join(argv))
        if args.dry_run:
            return 0
    else:
        print(f"joining the Ray cluster at {args.ray} with {json.dumps(resources)} (Ctrl-C leaves)", file=sys.stderr)
    sys.stdout.flush()
    os.execv(argv[0], argv)  # ray start --block: this process becomes the worker node


def cmd_diff(args) -> int:
    from edgesdk import lockfile
    from edgesdk.diff import diff, format_diff
    if args.min_effect < 0 or not 0 < args.alpha < 1:
        raise ConfigError(f"--min-effect must be >= 0 and --alpha in (0, 1), got {args.min_effect}, {args.alpha}")
    d = diff(lockfile.read(args.a), lockfile.read(args.b), alpha=args.alpha, min_effect=args.min_effect,
             resamples=args.resamples)
    if args.json:
        _emit_json(d)
    else:
        print(format_diff(d))
    return 1 if d["regressions"] else 0


# ----------------------------------------------------------------------------- parser

def _int_or_auto(v: str):
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {v!r}") from None


def _executor_arg(s) -> None:
    s.add_argument("--executor", default="local", metavar="local|serial|ray|ray://HOST:PORT",
                   help="where the jobs run: local (default: conversions in a process pool sized to the usable "
                        "cores, then profiles one at a time), serial (one process), ray (the cluster in RAY_ADDRESS, "
                        "else a local one) or ray://HOST:PORT (a cluster's Ray client address)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print machine-readable JSON on stdout")
    common.add_argument("--debug", action="store_true", help="show tracebacks on error")
    common.add_argument("--quiet", "-q", action="store_true", help="no progress lines on stderr")
    common.add_argument("--verbose", "-v", action="store_true",
                        help=f"show debug messages and the backends' native logs (same as {logs.ENV}=debug)")

    p = argparse.ArgumentParser(
        prog="edgesdk",
        description="Convert PyTorch models for edge targets, run them and profile their latency.",
        epilog="Examples:\n  edgesdk targets\n  edgesdk convert make_model.py:build --target onnx-cpu --out out\n"
               "  edgesdk run out/build-onnx-cpu --inputs x.npy\n  edgesdk profile out/build-onnx-cpu --iters 200",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("targets", parents=[common], help="list targets and whether they run here")
    s.set_defaults(fn=cmd_targets)

    s = sub.add_parser("convert", parents=[common], help="convert a model for one or more targets (verified)",
                       description="Convert MODEL (a torch.export .pt2, or MODULE:FUNCTION returning "
                                   "(model, example_inputs)) and verify it against PyTorch.")
    s.add_argument("model", help="FILE.pt2 | MODULE:FUNCTION | path/to/file.py:FUNCTION")
    s.add_argument("--target", "-t", action="append", required=True,
                   help="target name (repeatable), 'all', or 'auto': convert to every target that runs here with "
                        "each scheme, gate, profile, and keep the fastest that passed; see `edgesdk targets`")
    s.add_argument("--device", choices=["cpu", "npu", "gpu"],
                   help="with --target auto: only this device class's targets")
    s.add_argument("--iters", type=int, default=100, help="with --target/--quantize auto: timed runs per candidate")
    s.add_argument("--out", "-o", default="edgesdk-out", help="output directory (default: edgesdk-out)")
    s.add_argument("--name", help="artifact name (default: <model>-<target>)")
    s.add_argument("--quantize", default=None,
                   help="quantization scheme (default: fp32; with --target auto: every scheme), or 'auto': every "
                        "scheme of the target, keeping the fastest that passes the gate; `edgesdk targets` lists them")
    s.add_argument("--calib", help="calibration data: .npz with one array per input (first axis = samples)")
    s.add_argument("--eval", help="held-out data for the accuracy gate (.npz, same layout; default: a quarter "
                                  "of --calib, else generated inputs)")
    s.add_argument("--max-drop", type=parse_max_drop, default="default",
                   help="accuracy gate for quantized schemes: 'default' (top-1 agreement >= 99%% for classifier "
                        "outputs, min cosine >= 0.99 otherwise), a number (fail if the drop exceeds it, e.g. 0.01) "
                        "or 'none' (off, with a warning)")
    s.add_argument("--dynamic", action="append", metavar="INPUT:DIM=MIN..MAX",
                   help="make a dimension dynamic (repeatable), e.g. x:0=1..32 or ids:1=seq:8..512")
    s.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="target-specific option (repeatable), e.g. --option soc_model=57 for qnn-htp")
    s.add_argument("--auto-fallback", action="store_true",
                   help="keep the most sensitive layers in float until the gate passes")
    s.add_argument("--min-calibration", type=int, default=8, help="minimum calibration samples (default 8)")
    s.add_argument("--atol", type=float, help="verification absolute tolerance (default 1e-4, or the target's)")
    s.add_argument("--rtol", type=float, help="verification relative tolerance (default 1e-4, or the target's)")
    s.add_argument("--verify-samples", type=int, default=3, help="random input sets checked besides the example")
    s.add_argument("--prompt-lengths", type=int, nargs="+", metavar="P",
                   help="generation models: one prefill program per prompt length class, e.g. 64 256 1024")
    s.set_defaults(fn=cmd_convert)

    s = sub.add_parser("run", parents=[common], help="run an artifact on inputs from .npy/.npz files")
    s.add_argument("artifact", help="artifact directory, manifest.json, or .onnx/.pte/.tflite file")
    s.add_argument("--inputs", "-i", nargs="+", help="one .npz (names or arr_N) or one .npy per input, in order; "
                                                     "omitted: generated inputs")
    s.add_argument("--out", "-o", help="save outputs to this .npz")
    s.add_argument("--program", help="program to run (default: forward)")
    s.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    s.add_argument("--nan-policy", choices=["reject", "allow"], default="reject")
    s.add_argument("--seed", type=int, default=0, help="seed for generated inputs")
    s.add_argument("--public-key", help="refuse the artifact unless signed by this trusted PEM public key")
    s.set_defaults(fn=cmd_run)

    s = sub.add_parser("profile", parents=[common], help="measure load, cold start, warm latency, memory, per-op",
                       description="Profile an artifact: load time, cold start, warm latency percentiles after an "
                                   "adaptive warm-up, the artifact's own memory (in an isolated child process by "
                                   "default), FLOPs, GFLOP/s and % of this machine's GEMM peak, per-op times, and a "
                                   "flag (with the likely cause) when the timings never settle.")
    s.add_argument("artifact", help="artifact directory, manifest.json, or .onnx/.pte/.tflite file")
    s.add_argument("--warmup", type=_int_or_auto, default="auto",
                   help="warm-up runs, or 'auto' (default): until the median of the last window stops moving")
    s.add_argument("--max-warmup-s", type=float, default=3.0, help="bound of the adaptive warm-up (default 3 s)")
    s.add_argument("--iters", type=int, default=100)
    s.add_argument("--threads", type=_int_or_auto,
                   help="intra-op threads, or 'auto': time 1..usable cores and use the fastest (default: all cores)")
    iso = s.add_mutually_exclusive_group()
    iso.add_argument("--isolate", dest="isolate", action="store_true", default=True,
                     help="profile in a child process holding only the runtime and the backend, so memory is the "
                          "artifact's own (default)")
    iso.add_argument("--in-process", dest="isolate", action="store_false",
                     help="profile in this process (memory figures then include the CLI itself)")
    s.add_argument("--program", help="program to profile (default: forward)")
    s.add_argument("--inputs", "-i", nargs="+", help="inputs as for `run` (default: generated)")
    s.add_argument("--no-per-op", action="store_true", help="skip the per-op pass")
    s.add_argument("--top-ops", type=int, default=10, help="per-op rows to print")
    s.add_argument("--out", "-o", help="also write the JSON report to this file")
    s.add_argument("--device", default="local", help="where to profile: local (default) or adb:SERIAL")
    s.add_argument("--public-key", help="refuse the artifact unless signed by this trusted PEM public key")
    s.add_argument("--prompt-tokens", type=int, help="generation artifacts: prompt length (default: capacity)")
    s.add_argument("--new-tokens", type=int, default=32, help="generation artifacts: tokens per generation")
    s.add_argument("--dim", action="append", metavar="NAME=SIZE",
                   help="dynamic-shape artifacts: size to time a dimension at (default: the example's), e.g. batch=8")
    s.set_defaults(fn=cmd_profile)

    s = sub.add_parser("generate", parents=[common], help="generate tokens with an encoder-decoder, KV-cache "
                       "decoder or recurrent artifact (TTFT, tokens/s)")
    s.add_argument("artifact", help="generation artifact directory (prefill + step programs)")
    s.add_argument("--text", help="prompt text (artifacts with a byte tokenizer)")
    s.add_argument("--escapes", action="store_true", help="interpret backslash escapes in --text (e.g. \\n)")
    s.add_argument("--tokens", help="prompt as comma-separated token ids")
    s.add_argument("--max-new-tokens", "-n", type=int, default=32)
    s.add_argument("--strategy", choices=["greedy", "top_k"], default="greedy")
    s.add_argument("--top-k", type=int, default=40)
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--seed", type=int, help="seed for top_k sampling")
    s.add_argument("--ignore-eos", action="store_true", help="keep generating past the end-of-sequence token")
    s.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    s.add_argument("--public-key", help="refuse the artifact unless signed by this trusted PEM public key")
    s.set_defaults(fn=cmd_generate)

    s = sub.add_parser("distill", parents=[common], help="distil a teacher into a student (losses, stages, DDP)",
                       description="Each of --teacher/--student/--data/--eval is MODULE:FUNCTION or "
                                   "path/file.py:FUNCTION returning the object (data: a TensorData or any object "
                                   "with sample(step, batch_size, seed) and inputs).")
    s.add_argument("--teacher", required=True)
    s.add_argument("--student", required=True)
    s.add_argument("--data", required=True)
    s.add_argument("--eval", help="FUNCTION returning eval_fn(student) -> {metric: value}")
    s.add_argument("--config", help="DistillConfig as JSON or YAML (losses, stages, optimizer, schedule...)")
    s.add_argument("--out", "-o", default="edgesdk-out/distill", help="where the student and history go")
    s.add_argument("--steps", type=int)
    s.add_argument("--batch-size", type=int, dest="batch_size", help="per process")
    s.add_argument("--lr", type=float)
    s.add_argument("--seed", type=int)
    s.add_argument("--checkpoint-dir", dest="checkpoint_dir")
    s.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    s.add_argument("--nproc", type=int, help="data-parallel processes on this machine (torch.distributed, gloo)")
    s.set_defaults(fn=cmd_distill)

    s = sub.add_parser("keygen", parents=[common], help="create an Ed25519 key pair for signing artifacts")
    s.add_argument("--out", "-o", required=True, help="prefix: writes PREFIX.key and PREFIX.pub")
    s.set_defaults(fn=cmd_keygen)

    s = sub.add_parser("sign", parents=[common], help="sign an artifact's manifest (Ed25519)")
    s.add_argument("artifact")
    s.add_argument("--key", required=True, help="PEM private key from `edgesdk keygen`")
    s.set_defaults(fn=cmd_sign)

    s = sub.add_parser("verify", parents=[common], help="check an artifact's payload hashes and signature")
    s.add_argument("artifact")
    s.add_argument("--public-key", help="trusted PEM public key; checks the signature too")
    s.set_defaults(fn=cmd_verify)

    s = sub.add_parser("demo", parents=[common],
                       help="teacher -> distilled students -> every target, verified, profiled, with a report",
                       description="Run the demo pipeline (sdk/demo.yaml) on embedded teachers and data (no "
                                   "downloads): distil each student family (cached), quantize with each target's "
                                   "recommended scheme, convert to every target, verify, profile what runs here, and "
                                   "write report.html, report.md and results.json.")
    s.add_argument("--out", "-o", default=None, help="output directory (default: edgesdk-out/demo)")
    s.add_argument("--quick", action="store_true",
                   help="smoke run: short training, targets that run here (generation models: onnx-cpu and "
                        "litert-cpu), recommended scheme only, 30 timed runs")
    s.add_argument("--iters", type=int, help="timed runs per artifact (default 200)")
    s.add_argument("--warmup", type=int, help="warm-up runs per artifact (default 20)")
    s.add_argument("--cache", help="training/conversion cache directory (default .cache/edgesdk)")
    s.add_argument("--family", action="append", help="only this student family (repeatable)")
    _executor_arg(s)
    s.set_defaults(fn=cmd_demo)

    s = sub.add_parser("deploy", parents=[common],
                       help="run a deployment pipeline from a YAML config (your model, distillation, targets...)",
                       description="Run deploy.yaml: load the model (MODULE:FUNCTION, FILE.pt2 or a local Hugging "
                                   "Face folder), optionally distil students, quantize with the accuracy gate, "
                                   "convert to each target, verify, profile, and write report.html, report.md and "
                                   "results.json. Every key is documented in docs/demo.md.",
                       epilog="Example deploy.yaml:\n  model: make_model.py:build\n  targets: [onnx-cpu, "
                              "executorch-xnnpack]\n  quantize: {schemes: recommended, max_drop: 0.02}\n"
                              "  output: {dir: out/deploy}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("config", help="pipeline config (YAML or JSON)")
    s.add_argument("--out", "-o", help="override output.dir")
    s.add_argument("--target", "-t", action="append", help="override targets (repeatable)")
    s.add_argument("--quick", action="store_true", help="smoke run (see `edgesdk demo --help`)")
    s.add_argument("--cache", help="override output.cache")
    s.add_argument("--no-cache", action="store_true", help="train and convert everything again")
    s.add_argument("--strict", action="store_true",
                   help="exit non-zero when an artifact was rejected by the gate or failed to convert")
    _executor_arg(s)
    s.set_defaults(fn=cmd_deploy)

    s = sub.add_parser("worker", parents=[common],
                       help="join a Ray cluster as a worker that advertises this machine's devices",
                       description="Start a Ray worker node (ray start --block) joined to the cluster at --ray, "
                                   "advertising what this machine can profile: its CPU (edgesdk-profiler), qnn-htp "
                                   "when the QNN libraries load, vulkan-gpu with a Vulkan driver, and device:adb:SERIAL "
                                   "for every phone `adb devices` lists. Deploy onto the cluster with "
                                   "`RAY_ADDRESS=HEAD:PORT edgesdk deploy deploy.yaml --executor ray`.")
    s.add_argument("--ray", required=True, metavar="HEAD:PORT", help="the head node's address (ray start --head)")
    s.add_argument("--num-cpus", type=int, dest="num_cpus", help="CPUs for conversions (default: all; 0: profile only)")
    s.add_argument("--resource", action="append", metavar="NAME=N", help="advertise a resource too (repeatable)")
    s.add_argument("--no-detect", action="store_true", help="advertise only the --resource ones")
    s.add_argument("--node-ip", dest="node_ip", help="this node's address as the cluster sees it (default: Ray's guess)")
    s.add_argument("--dry-run", action="store_true", help="print the ray start command and exit")
    s.set_defaults(fn=cmd_worker)

    s = sub.add_parser("diff", parents=[common],
                       help="compare two results.json: inputs, versions, metrics, latency regressions",
                       description="Compare two pipeline runs (their results.json, or the folders holding them). "
                                   "Latency regressions are decided on the raw samples: a one-sided Mann-Whitney U "
                                   "test plus a 95%% bootstrap CI of the median ratio that must clear 1 + max("
                                   "min-effect, the runs' own noise). Exit code 1 when a regression is found.")
    s.add_argument("a", help="baseline results.json (or its folder)")
    s.add_argument("b", help="new results.json (or its folder)")
    s.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    s.add_argument("--min-effect", type=float, default=0.10, dest="min_effect",
                   help="smallest slowdown worth flagging, as a fraction (default 0.10)")
    s.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (default 2000)")
    s.set_defaults(fn=cmd_diff)
    return p


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (the CLI may run in-process, redirected)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def configure_logging(verbose: bool = False, quiet: bool = False) -> None:
    """The `edgesdk` logger on stderr: INFO by default, WARNING with --quiet, DEBUG with
    --verbose; ``EDGESDK_LOG=debug|info|warning|error`` decides when set. --verbose also lets
    the backends' native logs through (for this process and the ones it starts)."""
    if verbose:
        os.environ[logs.ENV] = "debug"
    asked = os.environ.get(logs.ENV, "").strip().lower()
    level = asked.upper() if asked in logs.LEVELS else ("WARNING" if quiet else "INFO")
    root = logging.getLogger("edgesdk")
    root.setLevel(level)
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):
        h = _StderrHandler()
        h.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(h)
    root.propagate = False


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "fn", None):
        parser.print_help()
        return 2
    configure_logging(verbose=args.verbose, quiet=args.quiet)
    try:
        return args.fn(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SdkError as e:
        if args.debug:
            raise
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Exception as e:  # an unexpected failure: still one line unless --debug
        if args.debug:
            raise
        print(f"error: unexpected {type(e).__name__}: {' '.join(str(e).split())[:500]} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
