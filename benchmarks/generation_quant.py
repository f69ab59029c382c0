"""Quantized generation students on the CPU targets: agreement with fp32, quality, size and speed.

Per CPU target x student (encdec, mamba) x scheme (fp32, int8-dynamic, int8-static, and int4-weight
= 8da4w, int8 dynamic activations with int4 grouped weights, on executorch-xnnpack):

- greedy agreement: the share of the fp32 PyTorch programs' greedy tokens (`TorchPrograms`, the same
  numpy loop) that the artifact generates at the same position, over the held-out prompts
  (>= 100: stdlib function bodies for encdec, stdlib text windows for mamba, never calibrated on);
- quality: encdec char F1 of the generated names on those bodies; mamba next-byte accuracy of the
  real continuation, fed token by token (`Session.score`), as sdk/family_*.py compute it;
- size: the artifact's payload bytes / the same target's fp32 artifact's;
- time per output token (TPOT) and time to first token (TTFT), each as the median of per-round
  ratios quantized / fp32 on the same target, fp32 and quantized interleaved in every round, the same
  prompts and the same number of new tokens (greedy, eos ignored), with a bootstrap 95% CI.

Students: the trained weights the pipeline cached (``--students``, default ``.cache/edgesdk``:
``<family>/student-<family>-*/weights.safetensors``, as `make demo` writes them). Calibration: 32
training-split prompts per student (`calibration=` prompts; each program calibrated on the inputs
it met while the fp32 programs generated). The conversion's own gate is off here (``max_drop=None``):
this script measures what the gate would judge, on more prompts.

    cpu-shared python benchmarks/generation_quant.py --convert-only      # build the artifacts (reused)
    cpu-exclusive python benchmarks/generation_quant.py --markdown       # measure
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

import edgesdk  # noqa: E402
from edgesdk import runtime  # noqa: E402
from edgesdk.converters.programs import TorchPrograms  # noqa: E402
from runtime_overhead import bootstrap_median_ci, environment  # noqa: E402
from runtime_overhead import text_table as table  # noqa: E402

TARGETS = ("onnx-cpu", "executorch-xnnpack", "litert-cpu")
STUDENTS = ("encdec", "mamba")
SCHEMES = {"onnx-cpu": ("int8-dynamic", "int8-static"),
           "executorch-xnnpack": ("int8-dynamic", "int8-static", "int4-weight"),
           "litert-cpu": ("int8-dynamic", "int8-static")}
GOAL_AGREEMENT, GOAL_QUALITY, GOAL_SIZE, GOAL_SIZE_INT4 = 0.95, 0.02, 0.3, 0.2
VERSION_PACKAGES = ("torch", "executorch", "torchao", "onnxruntime", "ai-edge-litert", "ai-edge-quantizer", "numpy")
SOURCES = ("models/encdec.py", "models/mamba.py", "models/generation.py", "converters/convert.py",
           "converters/gen_calibration.py", "converters/calibration.py", "converters/onnx_cpu.py",
           "converters/executorch_xnnpack.py", "converters/litert_cpu.py", "converters/onnx_weights.py",
           "converters/litert_names.py", "converters/embedding_rows.py")
MAMBA_PROMPT, MAMBA_CLASS, MAMBA_CONT = 64, 128, 32


# ----------------------------------------------------------------------------- students and data

def load_student(family: str, students: Path):
    """The pipeline's trained student (weights from its training cache) and its data:
    (model, calibration prompts, held-out prompts, quality(session-like) -> float)."""
    from safetensors.torch import load_model
    found = sorted(glob.glob(str(students / family / f"student-{family}-*" / "weights.safetensors")))
    if not found:
        raise SystemExit(f"no trained {family} student under {students}/{family}/ (run `make demo` once, or "
                         f"pass --students DIR)")
    if family == "encdec":
        from edgesdk import models
        from edgesdk.models.data import funcname as fn
        from edgesdk.models.distill.recipes.encdec import STUDENT_CFG
        m = models.create("encdec", **STUDENT_CFG)
        load_model(m, found[-1])
        m.eval().cfg.prompt_lengths = (fn.MAX_SRC,)
        cal = [list(s)[:fn.MAX_SRC] or [fn.TOK.pad_id] for s, _ in fn.funcname_pairs("train")[:32]]
        pairs = fn.funcname_pairs("test")
        held = [list(s)[:fn.MAX_SRC] or [fn.TOK.pad_id] for s, _ in pairs]
        refs = [bytes(n).decode("utf-8") for _, n in pairs]

        def quality(gens: list[list[int]]) -> float:
            return fn.scores([fn.decode_name(g) for g in gens], refs[:len(gens)])["char_f1"]
        return m, cal, held, quality, "char F1"
    from edgesdk.models.distill.recipes.mohawk import corpus
    from edgesdk.models.mamba import Mamba
    from edgesdk.models.teachers import load_teacher
    m = Mamba.from_teacher(load_teacher("decoder"))
    load_model(m, found[-1])
    m.eval().cfg.prompt_lengths = (MAMBA_CLASS,)
    tr, va = corpus("train"), corpus("val")
    span = MAMBA_PROMPT + MAMBA_CONT
    cal = [tr[i * 4099:i * 4099 + MAMBA_PROMPT].tolist() for i in range(32)]
    stride = (len(va) - span) // 400
    windows = [va[i * stride:i * stride + span].tolist() for i in range(400)]
    return m, cal, [w[:MAMBA_PROMPT] for w in windows], windows, "next-byte accuracy"


def payload_bytes(path: Path) -> int:
    man = json.loads((path / "manifest.json").read_text())
    return sum((path / f["path"]).stat().st_size for f in man["files"])


def code_key() -> str:
    h = hashlib.sha256()
    for rel in SOURCES:
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()[:12]


def artifact(model, family, target, scheme, cal, held, out: Path, log):
    from edgesdk.converters import Artifact
    name = f"{family}-{target}-{scheme}"
    path = out / code_key() / name
    if (path / "manifest.json").is_file():
        return Artifact.open(path)
    t0 = time.perf_counter()
    kw = {} if scheme == "fp32" else {"calibration": cal if scheme == "int8-static" else None,
                                      "eval_data": held[-8:], "max_drop": None}
    art = edgesdk.convert(model, None, target, quantize=scheme, out_dir=path.parent, name=name, verify_samples=1,
                          **kw)
    log(f"converted {name} in {time.perf_counter() - t0:.0f}s")
    return art


# ----------------------------------------------------------------------------- measurements

def agreement(want: list[list[int]], got: list[list[int]]) -> float:
    return sum(sum(a == b for a, b in zip(w, g)) for w, g in zip(want, got)) / max(1, sum(len(w) for w in want))


def timing(s_fp32, s_q, prompts, new_tokens, reps, rng, resamples) -> dict:
    """fp32 and quantized interleaved, per round the median TPOT / TTFT over ``prompts``."""
    tpot, ttft = [], []
    for r in range(reps + 1):
        row = {}
        for key, s in (("fp32", s_fp32), ("q", s_q)) if r % 2 == 0 else (("q", s_q), ("fp32", s_fp32)):
            gens = [s.generate(p, new_tokens, stop_at_eos=False) for p in prompts]
            row[key] = (np.median([g.tpot_ms for g in gens]), np.median([g.ttft_ms for g in gens]))
        if r == 0:
            continue  # warm-up round
        tpot.append(row["q"][0] / row["fp32"][0])
        ttft.append(row["q"][1] / row["fp32"][1])
    tpot, ttft = np.array(tpot), np.array(ttft)
    return {"tpot_ratio": float(np.median(tpot)), "tpot_ci95": bootstrap_median_ci(tpot, resamples, rng),
            "ttft_ratio": float(np.median(ttft)), "ttft_ci95": bootstrap_median_ci(ttft, resamples, rng),
            "rounds": reps}


def measure_student(family, m, held, quality_arg, metric, arts, args, rng, log) -> list[dict]:
    n = args.prompts
    prompts = held[:n]
    ref = TorchPrograms(m)
    want = [ref.generate(p, args.new_tokens).tokens for p in prompts]
    if family == "encdec":
        def quality(s, gens):
            return quality_arg(gens)
    else:
        windows = quality_arg[:args.windows]

        def quality(s, gens):
            hits = sum(sum(s.score(w[:MAMBA_PROMPT], w[MAMBA_PROMPT:])["correct"]) for w in windows)
            return hits / (len(windows) * MAMBA_CONT)
    q_ref = quality(ref, want)
    log(f"{family}: fp32 PyTorch {metric} {q_ref:.4f} on {len(prompts)} prompts")
    rows = []
    for t in args.targets:
        if (family, t, "fp32") not in arts:
            continue
        s32 = runtime.load(arts[family, t, "fp32"].path, threads=args.threads)
        size32 = payload_bytes(arts[family, t, "fp32"].path)
        for scheme in ("fp32",) + SCHEMES[t]:
            if (family, t, scheme) not in arts:
                continue
            path = arts[family, t, scheme].path
            s = s32 if scheme == "fp32" else runtime.load(path, threads=args.threads)
            got = [s.generate(p, args.new_tokens).tokens for p in prompts]
            row = {"student": family, "target": t, "scheme": scheme, "prompts": len(prompts),
                   "greedy_agreement": agreement(want, got), "exact": float(np.mean([w == g for w, g in zip(want, got)])),
                   "quality": quality(s, got), "quality_fp32_torch": q_ref, "bytes": payload_bytes(path),
                   "size_ratio": payload_bytes(path) / size32}
            if scheme != "fp32":
                row.update(timing(s32, s, prompts[:args.timing_prompts], args.timing_tokens, args.reps, rng,
                                  args.resamples))
            rows.append(row)
            log(f"{family} {t} {scheme}: agreement {row['greedy_agreement']:.3f}, {metric} {row['quality']:.4f}, "
                f"size {row['size_ratio']:.2f}x" + (f", TPOT {row['tpot_ratio']:.2f}x, TTFT {row['ttft_ratio']:.2f}x"
                                                     if "tpot_ratio" in row else ""))
        fp32 = next(r for r in rows if r["student"] == family and r["target"] == t and r["scheme"] == "fp32")
        for r in rows:
            if r["student"] == family and r["target"] == t:
                r["quality_delta"] = (r["quality"] - fp32["quality"]) / fp32["quality"] if fp32["quality"] else 0.0
    return rows


def verdict(r: dict) -> str:
    if r["scheme"] == "fp32":
        return "reference"
    miss = []
    if r["greedy_agreement"] < GOAL_AGREEMENT:
        miss.append(f"agreement < {GOAL_AGREEMENT:.0%}")
    if r["quality_delta"] < -GOAL_QUALITY:
        miss.append(f"quality < fp32 - {GOAL_QUALITY:.0%}")
    if r["size_ratio"] > (GOAL_SIZE_INT4 if r["scheme"] == "int4-weight" else GOAL_SIZE):
        miss.append(f"size > {GOAL_SIZE_INT4 if r['scheme'] == 'int4-weight' else GOAL_SIZE}x")
    slower = r["tpot_ci95"][0] > 1.0 or r["ttft_ci95"][0] > 1.0
    if slower:
        miss.append("slower than fp32")
    return "meets all" if not miss else "misses: " + ", ".join(miss) + ("" if not slower else " (not recommended)")


def render(rows: list[dict], markdown: bool) -> str:
    def ci(r, k):
        lo, hi = r[k + "_ci95"]
        return f"{r[k + '_ratio']:.2f}x [{lo:.2f}, {hi:.2f}]"
    head = ["student", "target", "scheme", "greedy agreement", "exact seqs", "quality", "Δ vs fp32 artifact",
            "size vs fp32", "TPOT vs fp32", "TTFT vs fp32", "verdict"]
    body = [[r["student"], r["target"], r["scheme"] + (" (8da4w)" if r["scheme"] == "int4-weight" else ""),
             f"{r['greedy_agreement']:.1%}", f"{r['exact']:.0%}", f"{r['quality']:.4f}", f"{r['quality_delta']:+.1%}",
             f"{r['size_ratio']:.2f}x ({r['bytes'] / 1e6:.2f} MB)",
             ci(r, "tpot") if "tpot_ratio" in r else "—", ci(r, "ttft") if "ttft_ratio" in r else "—", verdict(r)]
            for r in rows]
    return table(head, body, markdown)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--students", default=str(ROOT / ".cache" / "edgesdk"),
                    help="the pipeline's training cache holding the trained students")
    ap.add_argument("--out", default="/tmp/edgesdk-generation-quant", help="artifact cache (reused if the code is unchanged)")
    ap.add_argument("--convert-only", action="store_true", help="build the artifacts into --out and stop")
    ap.add_argument("--no-convert", action="store_true", help="measure only the artifacts already in --out")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--families", nargs="+", default=list(STUDENTS))
    ap.add_argument("--schemes", nargs="+", default=sorted({s for v in SCHEMES.values() for s in v}),
                    help="quantized schemes to build / measure (fp32, the reference, always)")
    ap.add_argument("--prompts", type=int, default=100, help="held-out prompts for agreement and quality")
    ap.add_argument("--windows", type=int, default=100, help="mamba: held-out windows scored for next-byte accuracy")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--timing-prompts", type=int, default=3)
    ap.add_argument("--timing-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=6, help="interleaved timing rounds (after one warm-up round)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def log(msg):
        print(f"# [{time.perf_counter() - t_start:5.0f}s] {msg}", file=sys.stderr, flush=True)

    out, students = Path(args.out), Path(args.students)
    data, arts = {}, {}
    for fam in args.families:
        m, cal, held, q, metric = load_student(fam, students)
        data[fam] = (m, held, q, metric)
        for t in args.targets:
            for scheme in ("fp32",) + tuple(x for x in SCHEMES[t] if x in args.schemes):
                if args.no_convert and not (out / code_key() / f"{fam}-{t}-{scheme}" / "manifest.json").is_file():
                    log(f"{fam} {t} {scheme}: not converted yet (--no-convert): skipped")
                    continue
                try:
                    arts[fam, t, scheme] = artifact(m, fam, t, scheme, cal, held, out, log)
                except edgesdk.errors.SdkError as e:
                    log(f"{fam} {t} {scheme}: FAILED {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    if args.convert_only:
        return 0
    env = environment(VERSION_PACKAGES)
    rng = np.random.default_rng(0)
    rows = []
    for fam in args.families:
        m, held, q, metric = data[fam]
        rows += measure_student(fam, m, held, q, metric, arts, args, rng, log)
    v = env["versions"]
    print(f"Environment: {env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
          + ", ".join(f"{k} {v.get(k)}" for k in VERSION_PACKAGES)
          + f"; {args.threads} intra-op thread(s) everywhere; {args.prompts} held-out prompts x {args.new_tokens} new "
          f"tokens (agreement, encdec quality), {args.windows} mamba windows; timing: {args.reps} interleaved rounds x "
          f"{args.timing_prompts} prompts x {args.timing_tokens} tokens; wall {time.perf_counter() - t_start:.0f} s")
    print()
    print(render(rows, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": "edgesdk.bench.generation_quant/1", "environment": env,
                                               "args": vars(args), "rows": rows}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
