"""Encoder-decoder vs decoder-only at equal parameters ("Return of the Encoder").

Two parts, one run:

1. **Latency through the runtime.** For every prompt capacity P (default 128, 512, 1024)
   and CPU target (default ``onnx-cpu`` and ``executorch-xnnpack``) convert, with
   ``edgesdk.convert(model, None, target)`` (numerics verified against PyTorch):

     A  the encoder-decoder (`models.encdec.EncDec`, the function-name student's config:
        d=128, 4 encoder + 2 decoder layers, GQA 4/2 heads): ``encode`` + ``decode_step``;
     B  the decoder-only model with the closest parameter count built from the same blocks
        (`models.gqa_decoder.GQADecoder`: same width, pre-norm, RoPE, the same GQA 4/2 heads,
        7 layers): ``prefill`` + ``step`` with a KV cache of P + N;

   both with the same cache mechanics: one fixed-capacity cache per layer that the step reads
   and the runtime writes in place (the step returns only the new slot);

   both with random weights, and call ``Session.generate(prompt, N, greedy, stop_at_eos=False)``
   on the same random P-byte prompt, interleaved A B / B A, ``--pairs`` pairs after warm-up.
   Reported: TTFT p50 and decode tokens/s p50 of each side, and the median per-pair ratios
   (TTFT A/B, tokens/s A/B) with bootstrap 95% CIs. Goals at P = 512: TTFT at least 15% lower
   (ratio <= 0.85) and decode throughput at least 2x (the paper: -47% and 4.7x).
   PyTorch's greedy tokens of A are compared with the runtime's for every artifact.

2. **Quality on held-out test pairs** (function body -> name, `models.data.funcname`): exact
   match and character F1 of greedy names from the teacher (the shipped function-name decoder,
   `load_funcname_teacher`), the encoder-decoder trained with CE only, the encoder-decoder
   distilled with ``encdec-from-decoder`` (40% of the steps CE on gold names, then 0.9 KL on
   student-sampled names + 0.1 CE on gold), and the
   equal-parameter decoder-only student (CE), all students with the same steps, batch, seed and
   embedding initialisation (the teacher's byte embeddings). Goals: distilled exact match
   >= 0.9x the teacher's and above the CE-only student's. The distilled student is also exported
   (onnx-cpu, P = 200) and its runtime greedy names compared with PyTorch's.

Usage::

    python benchmarks/encdec.py                      # full run (~15 min on 2 busy cores)
    python benchmarks/encdec.py --quick              # smoke run (numbers not for publishing)
    python benchmarks/encdec.py --markdown --json /tmp/encdec.json

Method: /work/shared/BENCHMARKING.md. Torch (training) and every backend run with
``--threads`` intra-op threads (default 1), the same on both sides.
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
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from benchmarks.runtime_overhead import bootstrap_median_ci, environment  # noqa: E402
from benchmarks.runtime_overhead import text_table as render  # noqa: E402
from edgesdk.models.data import funcname as fn  # noqa: E402
from edgesdk.models.distill.recipes.encdec import STUDENT_CFG, decoder_student, encdec_from_decoder  # noqa: E402
from edgesdk.models.encdec import EncDec, EncDecConfig  # noqa: E402
from edgesdk.models.gqa_decoder import GQADecoder, GQADecoderConfig  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402

NOISY_CV = 0.10
TTFT_GOAL, TPS_GOAL = 0.85, 2.0          # at P = 512
PAPER_TTFT, PAPER_TPS = 0.53, 4.7
EM_GOAL = 0.9
VERSION_PACKAGES = ("torch", "executorch", "onnxruntime", "numpy")


# ----------------------------------------------------------------------------- latency

def equal_param_layers(enc: EncDec) -> int:
    """Layers of the GQA decoder-only model whose parameter count is closest to ``enc``'s."""
    c = enc.cfg

    def params(n):
        return GQADecoder(GQADecoderConfig(d_model=c.d_model, n_layers=n, n_heads=c.n_heads, n_kv_heads=c.n_kv_heads,
                                           mlp_ratio=c.mlp_ratio, max_seq=8, prompt_lengths=(4,),
                                           max_new_tokens=4)).num_params()
    return min(range(1, 4 * c.n_layers), key=lambda n: abs(params(n) - enc.num_params()))


def latency_models(P: int, N: int, max_target: int, seed: int = 0) -> tuple[EncDec, GQADecoder]:
    torch.manual_seed(seed)
    enc = EncDec(EncDecConfig(**{**STUDENT_CFG, "max_source": max(P, STUDENT_CFG["max_source"]),
                                 "max_target": max_target, "prompt_lengths": (P,)})).eval()
    c = enc.cfg
    dec = GQADecoder(GQADecoderConfig(d_model=c.d_model, n_layers=equal_param_layers(enc), n_heads=c.n_heads,
                                      n_kv_heads=c.n_kv_heads, mlp_ratio=c.mlp_ratio, max_seq=P + N,
                                      prompt_lengths=(P,), max_new_tokens=N)).eval()
    return enc, dec


def interleave_generate(sa, sb, prompt: list[int], N: int, pairs: int, warmup: int) -> dict:
    """A B / B A alternating; every sample kept."""
    def one(s):
        return s.generate(prompt, N, strategy="greedy", stop_at_eos=False)
    for _ in range(warmup):
        one(sa), one(sb)
    ttft = {"A": [], "B": []}
    tps = {"A": [], "B": []}
    gc.collect()
    gc.disable()
    try:
        for i in range(pairs):
            order = (("A", sa), ("B", sb)) if i % 2 == 0 else (("B", sb), ("A", sa))
            for k, s in order:
                g = one(s)
                ttft[k].append(g.ttft_ms)
                tps[k].append(g.tokens_per_s)
    finally:
        gc.enable()
    return {"ttft_ms": ttft, "tokens_per_s": tps}


def analyse_latency(samples: dict, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ta, tb = np.array(samples["ttft_ms"]["A"]), np.array(samples["ttft_ms"]["B"])
    pa, pb = np.array(samples["tokens_per_s"]["A"]), np.array(samples["tokens_per_s"]["B"])
    r_ttft, r_tps = ta / tb, pa / pb
    out = {"ttft": {"A": summarize(ta.tolist()), "B": summarize(tb.tolist())},
           "tps": {"A": summarize(pa.tolist()), "B": summarize(pb.tolist())},
           "ttft_ratio": float(np.median(r_ttft)), "ttft_ratio_ci95": bootstrap_median_ci(r_ttft, resamples, rng),
           "tps_ratio": float(np.median(r_tps)), "tps_ratio_ci95": bootstrap_median_ci(r_tps, resamples, rng)}
    out["noisy"] = [f"{m} {k}" for m in ("ttft", "tps") for k in ("A", "B") if out[m][k]["cv"] > NOISY_CV]
    return out


def run_latency(args, tmp: str, log) -> tuple[list[dict], dict]:
    rows, threads = [], {}
    g = torch.Generator().manual_seed(args.seed)
    for P in args.prompts:
        enc, dec = latency_models(P, args.new_tokens, args.max_target, args.seed)
        prompt = torch.randint(0, 256, (1, P), generator=g)
        ref = enc.generate(prompt, torch.tensor([P]), args.new_tokens, stop_at_eos=False)[0].tolist()
        for target in args.targets:
            t0 = time.perf_counter()
            a = edgesdk.convert(enc, None, target, out_dir=tmp, name=f"encdec-P{P}-{target}", verify_samples=1)
            b = edgesdk.convert(dec, None, target, out_dir=tmp, name=f"decoder-P{P}-{target}", verify_samples=1)
            conv_s = time.perf_counter() - t0
            sa = runtime.load(a.path, threads=args.threads)
            sb = runtime.load(b.path, threads=args.threads)
            threads[target] = sa.threads
            same = sa.generate(prompt[0].tolist(), args.new_tokens, stop_at_eos=False).tokens == ref
            samples = interleave_generate(sa, sb, prompt[0].tolist(), args.new_tokens, args.pairs, args.warmup)
            an = analyse_latency(samples, args.resamples, args.seed)
            ga = sa.generate(prompt[0].tolist(), args.new_tokens, stop_at_eos=False)
            gb = sb.generate(prompt[0].tolist(), args.new_tokens, stop_at_eos=False)
            rows.append({"target": target, "P": P, "N": args.new_tokens, "threads": sa.threads,
                         "params": {"encdec": enc.num_params(), "decoder": dec.num_params()},
                         "layers": {"encdec": f"{enc.cfg.n_enc_layers}+{enc.cfg.n_dec_layers}",
                                    "decoder": dec.cfg.n_layers},
                         "kv_heads": {"encdec": enc.cfg.n_kv_heads, "decoder": dec.cfg.n_kv_heads},
                         "state_bytes": {"encdec": ga.state_bytes, "decoder": gb.state_bytes},
                         "verify_max_abs_err": {"encdec": a.verification["max_abs_err"],
                                                "decoder": b.verification["max_abs_err"]},
                         "runtime_greedy_equals_pytorch": same, "convert_s": conv_s,
                         "analysis": an, "samples": samples})
            log(f"latency {target} P={P}: TTFT ratio {an['ttft_ratio']:.3f}, tok/s ratio {an['tps_ratio']:.2f} "
                f"(convert {conv_s:.0f}s)")
            del sa, sb
    return rows, threads


def latency_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["target", "P", "N", "TTFT p50 enc-dec / dec-only (ms)", "TTFT ratio [95% CI]",
            "decode tok/s p50 enc-dec / dec-only", "tok/s ratio [95% CI]", "state bytes enc-dec / dec-only",
            "greedy = PyTorch", "goal @512", "result"]
    out = []
    for r in rows:
        a = r["analysis"]
        lo, hi = a["ttft_ratio_ci95"]
        plo, phi = a["tps_ratio_ci95"]
        if r["P"] == 512:
            ok = a["ttft_ratio"] <= TTFT_GOAL and a["tps_ratio"] >= TPS_GOAL
            goal, res = f"ratio <= {TTFT_GOAL} and >= {TPS_GOAL:g}x", "PASS" if ok else "MISS"
        else:
            goal, res = "-", "-"
        if a["noisy"]:
            res += " (noisy: " + ", ".join(a["noisy"]) + ")"
        out.append([r["target"], str(r["P"]), str(r["N"]),
                    f"{a['ttft']['A']['p50']:.2f} / {a['ttft']['B']['p50']:.2f}",
                    f"{a['ttft_ratio']:.3f} [{lo:.3f}, {hi:.3f}]",
                    f"{a['tps']['A']['p50']:.0f} / {a['tps']['B']['p50']:.0f}",
                    f"{a['tps_ratio']:.2f}x [{plo:.2f}, {phi:.2f}]",
                    f"{r['state_bytes']['encdec']:,} / {r['state_bytes']['decoder']:,}",
                    "yes" if r["runtime_greedy_equals_pytorch"] else "NO", goal, res])
    return head, out


# ----------------------------------------------------------------------------- quality

def run_quality(args, tmp: str, log) -> dict:
    from edgesdk.models.teachers.train_funcname import evaluate as evaluate_decoder, load_funcname_teacher
    torch.set_num_threads(args.threads)
    teacher = load_funcname_teacher()
    test = fn.funcname_pairs("test")[:args.n_eval]
    refs = [bytes(n).decode("utf-8") for _, n in test]
    out = {"n_eval": len(test), "steps": args.steps, "batch_size": args.batch_size}
    t0 = time.perf_counter()
    out["teacher"] = {**evaluate_decoder(teacher, test), "params": sum(p.numel() for p in teacher.parameters())}
    majority = fn.majority_name("train")
    out["majority_baseline"] = {**fn.scores([majority] * len(test), refs), "name": majority}
    log(f"teacher scored ({time.perf_counter() - t0:.0f}s)")
    common = dict(teacher=teacher, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                  threads=args.threads, eval_pairs=test)
    t0 = time.perf_counter()
    ce = encdec_from_decoder(kd=False, **common)
    out["encdec_ce"] = {**ce.metrics["student"], "params": ce.student.num_params(),
                        "train_s": ce.timings["student_train_s"]}
    log(f"CE-only enc-dec trained ({time.perf_counter() - t0:.0f}s)")
    t0 = time.perf_counter()
    kd = encdec_from_decoder(kd=True, **common)
    out["encdec_kd"] = {**kd.metrics["student"], "params": kd.student.num_params(),
                        "train_s": kd.timings["student_train_s"]}
    log(f"distilled enc-dec trained ({time.perf_counter() - t0:.0f}s)")
    t0 = time.perf_counter()
    dec_model, dec_m = decoder_student(teacher=teacher, steps=args.steps, batch_size=args.batch_size,
                                       seed=args.seed, threads=args.threads, eval_pairs=test)
    out["decoder_ce"] = {**dec_m["student"], "params": dec_m["params"], "train_s": dec_m["train_s"]}
    log(f"decoder-only student trained ({time.perf_counter() - t0:.0f}s)")
    # the distilled student through the runtime: same greedy names as PyTorch?
    student = kd.student
    student.cfg.prompt_lengths = (fn.MAX_SRC,)
    art = edgesdk.convert(student, None, "onnx-cpu", out_dir=tmp, name="encdec-kd-onnx", verify_samples=1)
    sess = runtime.load(art.path, threads=args.threads)
    k = min(args.n_runtime, len(test))
    same = 0
    for s, _ in test[:k]:
        b = fn.encdec_batch([(s, ())])
        ref = student.generate(b["src"], b["src_len"], fn.MAX_NAME + 1)[0].tolist()
        if fn.TOK.eos_id in ref:
            ref = ref[:ref.index(fn.TOK.eos_id) + 1]
        same += sess.generate(list(s) or [fn.TOK.pad_id], fn.MAX_NAME + 1).tokens == ref
    out["runtime_check"] = {"pairs": k, "identical_greedy": same, "target": "onnx-cpu",
                            "max_abs_err": art.verification["max_abs_err"]}
    em_t, em_kd, em_ce = out["teacher"]["exact_match"], out["encdec_kd"]["exact_match"], out["encdec_ce"]["exact_match"]
    out["goal"] = {"kd_vs_teacher": em_kd >= EM_GOAL * em_t, "kd_above_ce": em_kd > em_ce}
    return out


def quality_table(q: dict) -> tuple[list[str], list[list[str]]]:
    head = ["model", "params", "exact match", "char F1", "train (s)"]
    names = [("teacher", "teacher: decoder-only, fine-tuned byte LM"),
             ("decoder_ce", "decoder-only student, CE"),
             ("encdec_ce", "enc-dec student, CE only"),
             ("encdec_kd", "enc-dec student, distilled (CE warm-up, then 0.9 KL + 0.1 CE)"),
             ("majority_baseline", f"baseline: always '{q['majority_baseline']['name']}'")]
    rows = []
    for k, label in names:
        m = q[k]
        rows.append([label, f"{m['params'] / 1e6:.2f} M" if "params" in m else "-",
                     f"{m['exact_match'] * 100:.1f}%", f"{m['char_f1']:.3f}",
                     f"{m['train_s']:.0f}" if "train_s" in m else "-"])
    return head, rows


# ----------------------------------------------------------------------------- report

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: P=128 only, few pairs and steps")
    ap.add_argument("--json", metavar="PATH", help="also write environment, statistics and every raw sample")
    ap.add_argument("--markdown", action="store_true", help="print tables as markdown")
    ap.add_argument("--targets", nargs="+", default=["onnx-cpu", "executorch-xnnpack"])
    ap.add_argument("--prompts", nargs="+", type=int, default=None, help="prompt capacities (default 128 512 1024)")
    ap.add_argument("--new-tokens", type=int, default=32, help="tokens generated per call, N (default 32)")
    ap.add_argument("--max-target", type=int, default=64, help="enc-dec decoder cache capacity (default 64)")
    ap.add_argument("--pairs", type=int, default=None, help="interleaved pairs per row (default 20; quick 4)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=None, help="student training steps (default 200; quick 10)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-eval", type=int, default=None, help="held-out test pairs scored (default 300; quick 24)")
    ap.add_argument("--n-runtime", type=int, default=20, help="test pairs generated through the runtime too")
    ap.add_argument("--threads", type=int, default=1, help="torch and backend intra-op threads (default 1)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    args.prompts = args.prompts or ([128] if args.quick else [128, 512, 1024])
    args.pairs = args.pairs or (4 if args.quick else 20)
    args.steps = args.steps or (10 if args.quick else 200)
    args.n_eval = args.n_eval or (24 if args.quick else 300)
    if args.quick:
        args.resamples = min(args.resamples, 200)
    torch.set_num_threads(args.threads)

    t_start = time.perf_counter()

    def log(msg):
        print(f"# {msg} [{time.perf_counter() - t_start:.0f}s]", file=sys.stderr, flush=True)

    env = environment(VERSION_PACKAGES)
    result = {"schema": "edgesdk.bench.encdec/1", "environment": env, "args": vars(args)}
    with tempfile.TemporaryDirectory(prefix="edgesdk-encdec-") as tmp:
        if not args.skip_latency:
            result["latency"], result["threads"] = run_latency(args, tmp, log)
        if not args.skip_quality:
            result["quality"] = run_quality(args, tmp, log)
    result["wall_s"] = time.perf_counter() - t_start

    v = env["versions"]
    print(f"Environment: {env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
          f"torch {v['torch']}, executorch {v['executorch']}, onnxruntime {v['onnxruntime']}, numpy {v['numpy']}; "
          f"intra-op threads (torch and every backend, both sides): {args.threads}; wall {result['wall_s']:.0f} s"
          + ("; QUICK RUN (smoke only)" if args.quick else ""))
    if "latency" in result:
        r0 = result["latency"][0]
        print(f"\nLatency (Session.generate, greedy, N={args.new_tokens} tokens, {args.pairs} interleaved pairs, "
              f"random weights): enc-dec {r0['params']['encdec'] / 1e6:.3f} M params ({r0['layers']['encdec']} layers, "
              f"{r0['kv_heads']['encdec']} KV heads) vs GQA decoder-only {r0['params']['decoder'] / 1e6:.3f} M "
              f"({r0['layers']['decoder']} layers, {r0['kv_heads']['decoder']} KV heads), both with KV caches written in "
              f"place; ratios are enc-dec / decoder-only, medians of per-pair ratios")
        print(render(*latency_table(result["latency"]), args.markdown))
        for r in result["latency"]:
            if r["P"] == 512:
                a = r["analysis"]
                print(f"{r['target']} @512: TTFT {(1 - a['ttft_ratio']) * 100:.0f}% lower (goal 15%, paper 47%), "
                      f"decode {a['tps_ratio']:.2f}x (goal 2x, paper 4.7x)")
    if "quality" in result:
        q = result["quality"]
        print(f"\nQuality: function body -> name, {q['n_eval']} held-out test pairs, greedy; students: "
              f"{q['steps']} steps x batch {q['batch_size']}, seed {args.seed}")
        print(render(*quality_table(q), args.markdown))
        rc = q["runtime_check"]
        print(f"distilled student through the runtime ({rc['target']}): {rc['identical_greedy']}/{rc['pairs']} "
              f"greedy names identical to PyTorch (export max |diff| {rc['max_abs_err']:.1e})")
        em_t = q["teacher"]["exact_match"]
        print(f"goals: distilled EM >= 0.9 x teacher EM ({q['encdec_kd']['exact_match'] * 100:.1f}% vs "
              f"{EM_GOAL * em_t * 100:.1f}%): {'PASS' if q['goal']['kd_vs_teacher'] else 'MISS'}; distilled EM > CE-only EM: "
              f"{'PASS' if q['goal']['kd_above_ce'] else 'MISS'}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
        print(f"\nraw results: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
