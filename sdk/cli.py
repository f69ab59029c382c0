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
from edgesdk.cli_artifacts import (  # noqa: F401  (the command functions, importable from here as before)
    cmd_convert, cmd_generate, cmd_keygen, cmd_profile, cmd_run, cmd_sign, cmd_targets, cmd_verify, emit_json,
    parse_dims, parse_dynamic, parse_max_drop, parse_options,
)
from edgesdk.cli_pipeline import cmd_demo, cmd_deploy, cmd_diff, cmd_distill, cmd_worker  # noqa: F401

log = logging.getLogger("edgesdk.cli")


def _int_or_auto(v: str):
    if v == "auto":
        return v
    try:
        return int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'auto', got {v!r}") from None


def _executor_arg(s) -> None:
    s.add_argument("--executor", default=None, metavar="local|serial|ray|ray://HOST:PORT",
                   help="where the jobs run: local (default, or what EDGESDK_EXECUTOR names: conversions in a "
                        "process pool sized to the usable cores, then profiles one at a time), serial (one process), "
                        "ray (the cluster in RAY_ADDRESS, else a local one) or ray://HOST:PORT (a cluster's Ray client "
                        "address)")


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
    _add_model_commands(sub, common)
    _add_training_and_trust_commands(sub, common)
    _add_pipeline_commands(sub, common)
    return p


def _add_model_commands(sub, common) -> None:
    """targets, convert, run, profile, generate: one model or artifact."""
    s = sub.add_parser("targets", parents=[common], help="list targets and whether they run here")
    s.set_defaults(fn=cmd_targets)

    s = sub.add_parser("convert", parents=[common], help="convert a model for one or more targets (verified)",
                       description="Convert MODEL (a torch.export .pt2, or MODULE:FUNCTION returning "
                                   "(model, example_inputs)) and verify it against PyTorch.")
    s.add_argument("model", help="FILE.pt2 | MODULE:FUNCTION | path/to/file.py:FUNCTION")
    s.add_argument("--target", "-t", action="append", required=True,
                   help="target name (repeatable), 'all' (every registered target; one that cannot take the model "
                        "is listed as skipped, with why), or 'auto': convert to every target that runs here with "
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


def _add_training_and_trust_commands(sub, common) -> None:
    """distill; keygen, sign, verify: signed artifacts."""
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


def _add_pipeline_commands(sub, common) -> None:
    """demo, deploy, worker, diff: many models and targets."""
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
    s.add_argument("--allow-failures", action="store_true",
                   help="exit 0 even when an artifact failed to convert or was rejected by the accuracy gate "
                        "(by default the demo writes its report, names them and exits 2)")
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
