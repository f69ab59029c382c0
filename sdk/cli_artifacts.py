"""The `edgesdk` commands on one model or artifact: targets, convert, run, generate, profile,
keygen, sign, verify (the parser and `main` are in `edgesdk.cli`)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edgesdk.runtime.errors import ConfigError, UnsupportedModelError
from edgesdk.loaders import load_model_spec
from edgesdk.progress import Progress

log = logging.getLogger("edgesdk.cli")


# ----------------------------------------------------------------------------- helpers

def emit_json(obj) -> None:
    from edgesdk.runtime.profile import json_safe
    print(json.dumps(json_safe(obj), indent=2))


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
        emit_json([{"name": t.name, "device": t.device, "format": t.format, "quantization": list(t.quantization),
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
        try:
            art = edgesdk.convert(model, example, t, quantize=args.quantize, out_dir=args.out,
                              name=name or f"{stem}-{t}" + ("" if args.quantize == "fp32" else f"-{args.quantize}"),
                              atol=args.atol, rtol=args.rtol, verify_samples=args.verify_samples,
                              calibration=args.calib, eval_data=args.eval, max_drop=args.max_drop,
                              auto_fallback=args.auto_fallback, min_calibration=args.min_calibration,
                              prompt_lengths=args.prompt_lengths,
                              progress=lambda s, t=t: prog.stage(f"{t}: {s}"), **kwargs, **options)
        except UnsupportedModelError as e:  # --target all: a target that cannot take the model says why
            if args.target != ["all"]:
                raise
            results.append({"target": t, "quantize": args.quantize, "skipped": str(e)})
            continue
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
    if all("skipped" in r for r in results):
        raise UnsupportedModelError("no registered target can take this model: " + "; ".join(r["skipped"] for r in results))
    if args.json:
        emit_json(results if len(results) > 1 else results[0])
    else:
        for r in results:
            if "skipped" in r:
                print(f"{r['target']}: skipped ({r['skipped']})")
            elif r["max_abs_err"] is None:
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
            for note in r.get("notes", ()):
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
        emit_json({"path": str(art.path), "target": art.target, "quantize": art.manifest.quantization.get("scheme"),
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
        emit_json({"artifact": str(sess.path), "verified": sess.verified, "generated_inputs": generated,
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
        emit_json({"artifact": str(sess.path), "target": sess.target, **g.to_dict()})
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




def cmd_keygen(args) -> int:
    from edgesdk.runtime.signing import generate_keypair
    priv, pub = generate_keypair(args.out)
    if args.json:
        emit_json({"private_key": str(priv), "public_key": str(pub)})
    else:
        print(f"private key {priv} (keep it secret), public key {pub} (ship it with your app)")
    return 0


def cmd_sign(args) -> int:
    from edgesdk import runtime
    from edgesdk.runtime.signing import sign_artifact
    runtime.load(args.artifact)  # refuse to sign an artifact whose payload does not match its manifest
    sig = sign_artifact(args.artifact, args.key)
    if args.json:
        emit_json({"artifact": args.artifact, "signature": sig})
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
        emit_json(result)
    else:
        print(f"{args.artifact}: payload matches its manifest ({len(result['files'])} files)"
              + ("; signature valid for the given public key" if args.public_key else
                 "; signature not checked (pass --public-key)"))
    return 0
