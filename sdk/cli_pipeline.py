"""The `edgesdk` commands over many models and targets: distill, demo, deploy, worker, diff (the
parser and `main` are in `edgesdk.cli`)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edgesdk.runtime.errors import ConfigError
from edgesdk.loaders import load_object
from edgesdk.progress import Progress

from edgesdk.cli_artifacts import emit_json


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
        _leave_worker(0)
    path = save_student(trained, args.out, config)
    finish_distributed()
    hist = trained.distill_history
    result = {"student": str(path), "steps": len(hist), "final_loss": hist[-1]["loss"] if hist else None,
              "metrics": next((h["metrics"] for h in reversed(hist) if h["metrics"]), {}),
              "world_size": int(os.environ.get("WORLD_SIZE", "1"))}
    if args.json:
        emit_json(result)
    else:
        print(f"{path}  (final loss {result['final_loss']:.4f} after {result['steps']} steps"
              + "".join(f", {k} {v:.4g}" for k, v in result["metrics"].items()) + ")")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        _leave_worker(0)
    return 0


def _leave_worker(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown, once its files and output are out.

    Even after barrier + destroy_process_group, finalizing the interpreter can free tensors that
    gloo's threads still reference; that needs the GIL mid-teardown and aborts the rank
    ("terminate called without an active exception"), and torchrun then fails the whole job
    (CI, 2026-12-03: rank 1 SIGABRT after both ranks had finished). Nothing is left to run.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)




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
        emit_json(_pipeline_json(res))
    elif args.quiet:
        print(res.report_html)
    if not args.allow_failures:
        # the demo's students and targets are the project's own: an artifact it could not deliver
        # is a defect, and a run that exits 0 over it hides it (a failed Vulkan row landed unnoticed
        # once, RESULTS.md "#21, eighteenth session")
        _require_delivered(res, "--allow-failures keeps the exit status 0")
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
        emit_json(_pipeline_json(res))
    elif args.quiet:
        print(res.report_html or res.results_json)
    else:
        print(format_table(res.rows))
        print((f"\nreport: {res.report_html}" if res.report_html else "") + f"\nlockfile: {res.results_json}")
    if args.strict:
        _require_delivered(res, "--strict")
    return 0


def _require_delivered(res, why: str) -> None:
    """Raise (exit status 2) naming every artifact of ``res`` that failed, was rejected by the gate
    or was cancelled; the report and lockfile are written by then and keep every row."""
    if res.ok:
        return
    from edgesdk.pipeline.row import DELIVERED
    bad = [f"{r['model']}/{r['target']}/{r['scheme']} ({r['status']}: {' '.join(str(r.get('message') or '').split())[:160]})"
           for r in res.rows if r["status"] not in DELIVERED]
    raise ConfigError(f"{len(bad)} artifact(s) not delivered ({why}): {'; '.join(bad)}; "
                      f"see {res.report_html or res.results_json}")


def cmd_worker(args) -> int:
    import os

    from edgesdk.pipeline.raynode import parse_resources, worker_command
    argv, resources = worker_command(args.ray, num_cpus=args.num_cpus, extra=parse_resources(args.resource),
                                     detect=not args.no_detect, node_ip=args.node_ip)
    if args.json or args.dry_run:
        if args.json:
            emit_json({"address": args.ray, "resources": resources, "command": argv})
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
        emit_json(d)
    else:
        print(format_diff(d))
    return 1 if d["regressions"] else 0


# ----------------------------------------------------------------------------- parser
