"""Mamba-2 student (#7): quality after MOHAWK vs the attention teacher, and decoding latency.

Quality (PyTorch, `--threads` torch threads, default 1). Three students of the same shape, the same
step budget (`--steps`), batch and data (random 128-byte windows of the stdlib train split),
against the shipped 4-layer byte decoder teacher:

  stage 3 only   MaTVLM init, end-to-end logit KD for the whole budget
  stages 1-3     MaTVLM init, MOHAWK: matrix orientation, hidden-state alignment, logit KD (10/10/80%)
  from scratch   random init, the stage-3 loss for the whole budget

Held-out bits per character: val split, 64 evenly spaced 256-byte windows, every position
scored (the teacher's own metric). MQAR (`models.data.mqar`, Zoology's multi-query associative
recall, laid out as Zoology's adjacent key-value tokens ``a4 k7 q1 ... k7 a4``): the shipped teacher has
no induction heads (it copies a repeated random string at chance, 3%), so zero-shot every model is
at chance; the teacher and the stages 1-3 student (`--mqar-students` for more) are fine-tuned on
MQAR for the same `--mqar-steps` (cross-entropy on the recalled values, 4–16 pairs, lr 3e-3), then
evaluated on held-out samples with 4, 8, 16 and 24 pairs (chance 0.10).

Latency (the runtime, torch-free path for ONNX): at prompt lengths 128, 512 and 2048, the teacher
with a KV cache written in place (`edgesdk.convert(teacher, None, target, prompt_lengths=[P])` with
``max_new_tokens = N``; random weights with the teacher's dims and ``context = 2048 + N``; one
artifact per prompt length, the cache holds P + N; the step reads the cache and returns only the
new slot, which the runtime writes in place) and the stages 1-3 student (ONE artifact per target
with a prefill per prompt length class 128/512/2048 and one ``step``: the runtime runs the class
that holds the prompt), converted to `onnx-cpu` and `executorch-xnnpack` (artifacts
verified by `edgesdk.convert`), loaded with
the same intra-op thread count (`--rt-threads`, default 1), and run through `Session.generate`
(greedy, same prompt, `--new` tokens, no early stop), teacher and student interleaved with
alternating order. Per rep: TTFT and the median per-token step time; reported: p50 over reps,
the median per-rep teacher/student ratio with a bootstrap 95% CI, CV, and decoding-state bytes.

Targets: student bits/char <= teacher + 10%; stages 1-3 better than stage 3 alone; student per-token
latency at 2048 <= 1.1x that at 128 (and the teacher's grows); student >= 2x faster per token than
the teacher at 2048.

Usage::

    python benchmarks/mamba.py                       # full run
    python benchmarks/mamba.py --quick               # smoke run (numbers not for publishing)
    python benchmarks/mamba.py --markdown --json /tmp/mamba.json
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import edgesdk.models.mamba  # noqa: E402,F401  (registers "mamba")
from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from edgesdk.models.data.mqar import IGNORE, mqar, mqar_accuracy  # noqa: E402
from edgesdk.models.distill.recipes import mohawk as recipe_mohawk  # noqa: E402,F401  (registers "mohawk")
from edgesdk.models.distill.recipes.mohawk import corpus, held_out_bits  # noqa: E402
from edgesdk.models.distill.recipes import get_recipe  # noqa: E402
from edgesdk.models.mamba import Mamba  # noqa: E402
from edgesdk.models.teachers import load_teacher  # noqa: E402
from edgesdk.models.teachers.decoder import Decoder, DecoderConfig  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402
from runtime_overhead import bootstrap_median_ci, environment  # noqa: E402
from runtime_overhead import text_table as _table  # noqa: E402

NOISY_CV = 0.10
VARIANTS = (("stage 3 only", "teacher", (3,)), ("stages 1-3", "teacher", (1, 2, 3)),
            ("from scratch", "random", (3,)))
MQAR_PAIRS = (4, 8, 16, 24)
MQAR_FORMAT = dict(key_len=1, sep="", end=" ")   # Zoology's layout: key and value adjacent, "a4 k7 ... k7"
CONTEXTS = (128, 512, 2048)
TARGETS = ("onnx-cpu", "executorch-xnnpack")


# ----------------------------------------------------------------------------- quality

def mqar_finetune(model, steps: int, lr: float, seed: int, batch: int = 32) -> torch.nn.Module:
    """Fine-tune a copy of ``model`` on MQAR (cross-entropy on the recalled values only)."""
    import copy
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.0)
    m.train()
    train_pairs = (4, 8, 12, 16)
    for s in range(steps):
        d = mqar(batch, n_pairs=train_pairs[s % len(train_pairs)], seed=seed * 100_003 + s, **MQAR_FORMAT)
        lg = m(d.tokens)
        loss = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), d.labels.reshape(-1), ignore_index=IGNORE)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
    return m.eval()


def mqar_scores(model, n: int, seed: int) -> dict[int, float]:
    return {p: mqar_accuracy(model, mqar(n, n_pairs=p, seed=seed + 7919 * p + 1, **MQAR_FORMAT)) for p in MQAR_PAIRS}


def quality(args, log) -> dict:
    teacher = load_teacher("decoder")
    train, val = corpus("train"), corpus("val")
    out = {"teacher": {"bits_per_char": held_out_bits(teacher, val, args.eval_windows, 256)}, "students": {}}
    t0 = time.perf_counter()
    mq = mqar_finetune(teacher, args.mqar_steps, args.mqar_lr, args.seed)
    out["teacher"]["mqar"] = mqar_scores(mq, args.mqar_n, args.seed)
    out["teacher"]["mqar_finetune_s"] = time.perf_counter() - t0
    log(f"teacher: {out['teacher']}")
    students = {}
    for label, init, stages in VARIANTS:
        t0 = time.perf_counter()
        res = get_recipe("mohawk")(teacher, init=init, stages=stages, steps=args.steps, batch_size=args.batch,
                                   seq_len=args.seq_len, lr=args.lr, seed=args.seed, threads=args.threads,
                                   eval_windows=args.eval_windows, train_data=train, val_data=val)
        row = {"bits_per_char": res.metrics["student_bits_per_char"], "plan": res.info["plan"],
               "losses": res.info["losses"], "train_s": time.perf_counter() - t0}
        if label in args.mqar_students:
            t1 = time.perf_counter()
            row["mqar"] = mqar_scores(mqar_finetune(res.student, args.mqar_steps, args.mqar_lr, args.seed),
                                      args.mqar_n, args.seed)
            row["mqar_finetune_s"] = time.perf_counter() - t1
        out["students"][label] = row
        students[label] = res.student
        log(f"{label}: bits/char {row['bits_per_char']:.3f} mqar {row.get('mqar')} ({row['train_s']:.0f}s)")
    return out, students


# ----------------------------------------------------------------------------- latency

def convert(model, target: str, out: Path, prompt_lengths):
    t0 = time.perf_counter()
    art = edgesdk.convert(model, None, target, out_dir=out, prompt_lengths=list(prompt_lengths))
    return art, time.perf_counter() - t0


def latency(args, student: Mamba, prompt_text: bytes, log) -> list[dict]:
    N = args.new
    tc = load_teacher("decoder").cfg
    torch.manual_seed(args.seed)
    teacher_lat = Decoder(DecoderConfig(**{**tc.to_dict(), "context": max(args.contexts) + N},
                                        max_new_tokens=N)).eval()
    rows = []
    cap = max(args.contexts)
    with tempfile.TemporaryDirectory() as tmp:
        for target in args.targets:
            # Convert everything first, then load: ExecuTorch's XNNPACK threadpool is process-wide and
            # `edgesdk.convert`'s verification resizes it; resizing it while another .pte session is alive
            # deadlocked here (pthreadpool mutex, see RESULTS.md). Loading all sessions with the same
            # thread count afterwards resizes it at most once, before any program runs.
            # One student artifact per target with a prefill per context (prompt length classes):
            # the runtime runs the class that holds the prompt. The teacher gets one artifact per
            # context, so its KV cache holds exactly P + N slots.
            s_art, s_s = convert(student, target, Path(tmp) / f"s-{target}", args.contexts)
            log(f"{target}: student converted in {s_s:.0f}s")
            t_arts = {}
            for ctx in args.contexts:
                t_arts[ctx] = convert(teacher_lat, target, Path(tmp) / f"t-{target}-{ctx}", [ctx])
                log(f"{target}: teacher (KV cache, P={ctx}) converted in {t_arts[ctx][1]:.0f}s")
            s_sess = runtime.load(s_art.path, threads=args.rt_threads)
            t_sess = {ctx: runtime.load(a.path, threads=args.rt_threads) for ctx, (a, _) in t_arts.items()}
            for ctx in args.contexts:
                prompt = list(prompt_text[:ctx])
                if len(prompt) < ctx:
                    raise SystemExit(f"val text shorter than {ctx} bytes")
                t_s = t_arts[ctx][1]
                sessions = {"teacher": t_sess[ctx], "student": s_sess}
                for sess in sessions.values():                     # warm-up (not recorded)
                    sess.generate(prompt, N, stop_at_eos=False)
                samples = {k: {"ttft": [], "tpot": [], "state_bytes": None, "tokens": None} for k in sessions}
                gc.disable()
                try:
                    for rep in range(args.reps):
                        order = ("teacher", "student") if rep % 2 == 0 else ("student", "teacher")
                        for k in order:
                            g = sessions[k].generate(prompt, N, stop_at_eos=False)
                            samples[k]["ttft"].append(g.ttft_ms)
                            samples[k]["tpot"].append(float(np.median(g.step_ms)))
                            samples[k]["state_bytes"] = g.state_bytes
                            samples[k]["tokens"] = len(g.tokens)
                finally:
                    gc.enable()
                ratio = np.array(samples["teacher"]["tpot"]) / np.array(samples["student"]["tpot"])
                ci = bootstrap_median_ci(ratio, args.resamples, np.random.default_rng(args.seed))
                row = {"target": target, "context": ctx, "new_tokens": N, "reps": args.reps,
                       "convert_s": {"teacher": t_s, "student": s_s}, "student_capacity": cap,
                       "teacher": {k: summarize(v) for k, v in samples["teacher"].items() if k in ("ttft", "tpot")},
                       "student": {k: summarize(v) for k, v in samples["student"].items() if k in ("ttft", "tpot")},
                       "state_bytes": {k: samples[k]["state_bytes"] for k in samples},
                       "tokens": {k: samples[k]["tokens"] for k in samples},
                       "ratio_median": float(np.median(ratio)), "ratio_ci95": ci,
                       "raw": {k: {"ttft": samples[k]["ttft"], "tpot": samples[k]["tpot"]} for k in samples}}
                rows.append(row)
                log(f"{target} ctx {ctx}: teacher {row['teacher']['tpot']['p50']:.3f} ms/token, student "
                    f"{row['student']['tpot']['p50']:.3f} ms/token, ratio {row['ratio_median']:.2f} "
                    f"[{ci[0]:.2f}, {ci[1]:.2f}] (convert {t_s:.0f}s + {s_s:.0f}s)")
                del sessions
            del s_sess, t_sess
    return rows


# ----------------------------------------------------------------------------- report

def verdicts(q: dict | None, lat: list[dict]) -> list[str]:
    out = []
    if q:
        tb = q["teacher"]["bits_per_char"]
        for label, r in q["students"].items():
            ok = r["bits_per_char"] <= 1.10 * tb
            out.append(f"{label}: bits/char {r['bits_per_char']:.3f} vs teacher {tb:.3f} "
                       f"(+{(r['bits_per_char'] / tb - 1) * 100:.1f}%; goal <= +10%): {'PASS' if ok else 'MISS'}")
        s3, s123 = q["students"].get("stage 3 only"), q["students"].get("stages 1-3")
        if s3 and s123:
            ok = s123["bits_per_char"] < s3["bits_per_char"]
            out.append(f"stages 1-3 ({s123['bits_per_char']:.3f}) better than stage 3 only ({s3['bits_per_char']:.3f}): "
                       f"{'PASS' if ok else 'MISS'}")
    by = {(r["target"], r["context"]): r for r in lat}
    for target in sorted({r["target"] for r in lat}):
        ctxs = sorted(c for t, c in by if t == target)
        if len(ctxs) < 2:
            continue
        lo, hi = by[(target, ctxs[0])], by[(target, ctxs[-1])]
        s_grow = hi["student"]["tpot"]["p50"] / lo["student"]["tpot"]["p50"]
        t_grow = hi["teacher"]["tpot"]["p50"] / lo["teacher"]["tpot"]["p50"]
        out.append(f"{target}: student per-token {ctxs[-1]}/{ctxs[0]} = {s_grow:.2f}x (goal <= 1.1x): "
                   f"{'PASS' if s_grow <= 1.1 else 'MISS'}; teacher grows {t_grow:.2f}x")
        ok = hi["ratio_median"] >= 2.0
        lo_ci = hi["ratio_ci95"][0]
        out.append(f"{target}: student {hi['ratio_median']:.2f}x faster per token at {ctxs[-1]} "
                   f"(95% CI [{lo_ci:.2f}, {hi['ratio_ci95'][1]:.2f}]; goal >= 2x): {'PASS' if ok else 'MISS'}")
    return out


def render(q: dict | None, lat: list[dict], markdown: bool) -> str:
    parts = []
    if q:
        headers = ["model", "init", "stages (steps)", "val bits/char", "vs teacher"] + \
                  [f"MQAR {p} pairs" for p in MQAR_PAIRS]
        tb = q["teacher"]["bits_per_char"]
        rows = [["teacher (attention)", "-", "-", f"{tb:.3f}", "-"] +
                [f"{q['teacher']['mqar'][p]:.2f}" for p in MQAR_PAIRS]]
        for (label, init, _), (_, r) in zip(VARIANTS, q["students"].items()):
            plan = ", ".join(f"{s}: {n}" for s, n in sorted(r["plan"].items()))
            rows.append([f"Mamba-2 {label}", "MaTVLM" if init == "teacher" else "random", plan,
                         f"{r['bits_per_char']:.3f}", f"{(r['bits_per_char'] / tb - 1) * 100:+.1f}%"] +
                        [f"{r['mqar'][p]:.2f}" if "mqar" in r else "-" for p in MQAR_PAIRS])
        parts.append(_table(headers, rows, markdown))
    if lat:
        headers = ["target", "context", "teacher ms/token p50", "student ms/token p50",
                   "teacher/student [95% CI]", "TTFT ms teacher / student", "CV teacher / student",
                   "state bytes teacher / student"]
        rows = []
        for r in lat:
            cv_t, cv_s = r["teacher"]["tpot"]["cv"], r["student"]["tpot"]["cv"]
            cv = f"{cv_t * 100:.0f}% / {cv_s * 100:.0f}%" + (" (noisy)" if max(cv_t, cv_s) > NOISY_CV else "")
            lo, hi = r["ratio_ci95"]
            rows.append([r["target"], str(r["context"]), f"{r['teacher']['tpot']['p50']:.3f}",
                         f"{r['student']['tpot']['p50']:.3f}", f"{r['ratio_median']:.2f} [{lo:.2f}, {hi:.2f}]",
                         f"{r['teacher']['ttft']['p50']:.1f} / {r['student']['ttft']['p50']:.1f}", cv,
                         f"{r['state_bytes']['teacher']:,} / {r['state_bytes']['student']:,}"])
        parts.append(_table(headers, rows, markdown))
    parts.append("\n".join(("- " if markdown else "") + v for v in verdicts(q, lat)))
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run, numbers not for publishing)")
    ap.add_argument("--json", metavar="PATH", help="also write environment, results and raw samples here")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--skip", choices=("quality", "latency"), action="append", default=[])
    ap.add_argument("--steps", type=int, default=150, help="distillation steps per student (same for all three)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--mqar-steps", type=int, default=200, help="MQAR fine-tuning steps per model (same for all)")
    ap.add_argument("--mqar-lr", type=float, default=3e-3)
    ap.add_argument("--mqar-students", nargs="*", default=["stages 1-3"], choices=[v[0] for v in VARIANTS],
                    help="students that get the MQAR fine-tune + probe (default: stages 1-3; the teacher always)")
    ap.add_argument("--mqar-n", type=int, default=100, help="held-out MQAR samples per pair count")
    ap.add_argument("--contexts", type=int, nargs="+", default=list(CONTEXTS))
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--new", type=int, default=32, help="generated tokens per run")
    ap.add_argument("--reps", type=int, default=10, help="interleaved generate() runs per model and context")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training/eval")
    ap.add_argument("--rt-threads", type=int, default=1, help="intra-op threads of both runtimes' sessions")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.eval_windows, args.mqar_steps, args.mqar_n = 12, 8, 4, 20
        args.contexts, args.reps, args.new, args.resamples = [32, 64], 3, 8, 200
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    log = lambda msg: print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    env = environment()
    q, students = None, {}
    if "quality" not in args.skip:
        q, students = quality(args, log)
    lat = []
    if "latency" not in args.skip:
        student = students.get("stages 1-3") or Mamba.from_teacher(load_teacher("decoder"))
        lat = latency(args, student, corpus("val")[: max(args.contexts)].numpy().tobytes(), log)
    total = time.perf_counter() - t0
    print(f"# {env['date']}; CPU {env['cpu']}; torch {env['versions']['torch']}, executorch "
          f"{env['versions']['executorch']}, onnxruntime {env['versions']['onnxruntime']}; torch threads "
          f"{args.threads}, runtime intra-op threads {args.rt_threads} (both models); total {total:.0f}s")
    print(render(q, lat, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "args": vars(args), "quality": q, "latency": lat,
                                               "total_s": total}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
