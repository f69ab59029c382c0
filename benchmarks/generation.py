"""Generation at the memory limit: time to first token, time per token, runtime overhead, the
decoder step against its memory-traffic bound, prompt length classes, and PyTorch eager.

One run, every family x target x prompt length, side by side:

- **families** (random weights, the shipped models' shapes): ``decoder`` — the decoder-only teacher
  (4 layers, d 128, 4 heads, learned positions), ``encdec`` — the encoder-decoder student (4 + 2
  layers, GQA 4/2, RoPE, self cache 64), ``mamba`` — the Mamba-2 student (``Mamba.from_teacher``).
  KV caches are written in place by the runtime (the step returns only the new slot); Mamba's
  step returns whole recurrent states.
- **artifacts**: per family x target, ONE artifact with four prompt length classes (64, 128, 512,
  2048; the decoder's step, shared by the classes, holds 2048 + N cache slots; the encdec has a
  step per class whose cross K/V hold that class's P slots) and one exported for 64 only,
  through `edgesdk.convert(model, None, target, prompt_lengths=...)` (verified against PyTorch).
- **per prompt length P** (128, 512, 2048): `Session.generate(P random bytes, N=32, greedy, no
  eos)` on each target and the same programs run in PyTorch eager (`TorchPrograms`: the model's
  own prefill/step modules, static caches written in place, torch threads = runtime threads),
  interleaved in one loop, ``--reps`` rounds after a warm-up. Reported: TTFT, time per output
  token (TPOT, median of a generation's step times), tokens/s, bytes of every carried state, and
  the artifact's decode speed-up over eager (median of per-round TPOT ratios, bootstrap 95% CI).
- **students vs the decoder-only teacher**: per target and P, the teacher's TPOT and TTFT over each
  student's, ratios of the medians above (same run, families timed one after the other; the
  teacher's step reads its whole 2048 + N-slot cache at every P, so below P = 2048 the ratio
  favours the students: `benchmarks/mamba.py` sizes the teacher's cache to each P).
- **runtime per-token overhead**: inside every generation the step program's own backend call
  (`runtime.state`: ONNX Runtime ``run_with_iobinding``, ExecuTorch ``execute``, LiteRT
  ``Invoke``, on the bound buffers) is timed; per token, overhead = that token's step time in
  `generate` (feeding token and position, the call, the slot writes, sampling) - its call;
  the median per generation, then the median over rounds with a bootstrap CI.
- **memory-traffic bound** of the decoder-only step: bytes read per token = every weight the step
  touches (all layers, norms, the tied output embedding; one row of each embedding table) + the
  whole KV cache (static shapes: all C slots are read) ; bandwidth = `np.copyto` of a buffer of the
  same size, timed in the same rounds (bytes copied / time); bound = bytes / bandwidth; reported
  as the raw step call and the TPOT in generate over the bound.
- **prompt length classes**: a 64-token prompt on the 4-class artifact vs the 64-only artifact,
  interleaved: TTFT ratio, and TPOT (the decoder's shared step reads its 2048 + N-slot cache in
  both; the encdec's 64-class step attends over 64 cross slots in both).
- **greedy = PyTorch**: every artifact's greedy tokens at P = 128 and 2048 vs `TorchPrograms`.

Goals (issue #13): overhead <= 10 us on onnx-cpu and litert-cpu, <= 20 us on executorch-xnnpack;
decoder step at P=2048 <= 2x its memory-traffic bound on at least one CPU target; TTFT(64 on the
4-class artifact) <= 1.2x TTFT(64-only); every family decodes >= 2x faster than PyTorch eager.

Usage (artifacts are built once into ``--out`` and reused while the code is unchanged)::

    cpu-shared python benchmarks/generation.py --convert-only --out /tmp/gen-arts
    cpu-exclusive python benchmarks/generation.py --out /tmp/gen-arts --markdown --json /tmp/gen.json
    python benchmarks/generation.py --quick          # smoke run (numbers not for publishing)

Method: /work/shared/BENCHMARKING.md.
"""

from __future__ import annotations

import argparse
import gc
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

from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from edgesdk.converters.programs import TorchPrograms  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402
from runtime_overhead import bootstrap_median_ci, environment  # noqa: E402
from runtime_overhead import text_table as table  # noqa: E402

TARGETS = ("onnx-cpu", "executorch-xnnpack", "litert-cpu")
FAMILIES = ("decoder", "encdec", "mamba")
CLASSES = (64, 128, 512, 2048)
PROMPTS = (128, 512, 2048)
OVERHEAD_GOAL_US = {"onnx-cpu": 10.0, "litert-cpu": 10.0, "executorch-xnnpack": 20.0}
BOUND_GOAL, TTFT_GOAL, EAGER_GOAL = 2.0, 1.2, 2.0
VERSION_PACKAGES = ("torch", "executorch", "onnxruntime", "ai-edge-litert", "numpy")
SOURCES = ("models/generation.py", "converters/programs.py", "converters/onnx_cpu.py",
           "converters/executorch_xnnpack.py", "converters/litert_cpu.py")
FAMILY_SOURCES = {"decoder": ("models/teachers/decoder.py",), "encdec": ("models/encdec.py",),
                  "mamba": ("models/mamba.py", "models/teachers/decoder.py")}


# ----------------------------------------------------------------------------- models and artifacts

def build_model(family: str, max_prompt: int, new_tokens: int, seed: int = 0) -> torch.nn.Module:
    """Random weights with the shipped model's shape, able to take ``max_prompt`` tokens."""
    torch.manual_seed(seed)
    if family == "decoder":
        from edgesdk.models.teachers.decoder import Decoder, DecoderConfig
        from edgesdk.models.teachers import decoder_report
        arch = decoder_report()["config"]
        return Decoder(DecoderConfig(**{**arch, "context": max_prompt + new_tokens}, max_new_tokens=new_tokens)).eval()
    if family == "encdec":
        from edgesdk.models.distill.recipes.encdec import STUDENT_CFG
        from edgesdk.models.encdec import EncDec, EncDecConfig
        return EncDec(EncDecConfig(**{**STUDENT_CFG, "max_source": max(max_prompt, STUDENT_CFG["max_source"]),
                                      "max_target": 64})).eval()
    if family == "mamba":
        from edgesdk.models.mamba import Mamba
        from edgesdk.models.teachers.decoder import Decoder, DecoderConfig
        from edgesdk.models.teachers import decoder_report
        return Mamba.from_teacher(Decoder(DecoderConfig(**decoder_report()["config"]))).eval()
    raise SystemExit(f"unknown family {family!r}; choose from {', '.join(FAMILIES)}")


def code_key(family: str) -> str:
    """Hash of the code an artifact of ``family`` comes from (a change to one family's model
    file rebuilds only that family's artifacts)."""
    h = hashlib.sha256()
    for rel in SOURCES + FAMILY_SOURCES[family]:
        h.update((ROOT / rel).read_bytes())
    return h.hexdigest()[:12]


def artifact(model, family: str, target: str, classes: tuple, out: Path, log) -> "edgesdk.Artifact":
    """Convert (or reuse an identical earlier conversion from ``out``)."""
    from edgesdk.converters import Artifact
    name = f"{family}-{target}-P{'-'.join(map(str, classes))}"
    path = out / code_key(family) / name
    if (path / "manifest.json").is_file():
        return Artifact.open(path)
    t0 = time.perf_counter()
    art = edgesdk.convert(model, None, target, out_dir=path.parent, name=name, verify_samples=1,
                      prompt_lengths=list(classes))
    log(f"converted {name} in {time.perf_counter() - t0:.0f}s (max |err| {art.verification['max_abs_err']:.2g})")
    return art


# ----------------------------------------------------------------------------- measurements

class RawTimer:
    """Times the step program's own backend call inside `generate`: wraps ``raw`` of every binding
    the step programs (one, or one per prompt length class) make from now on (`runtime.state`:
    ONNX Runtime ``run_with_iobinding``, ExecuTorch ``execute``, LiteRT ``Invoke``). Per token,
    overhead = step time in `generate` - that call, paired on the same token and inputs."""

    def __init__(self, sess):
        self.ms: list[float] = []
        for name in sess.generation.steps:
            self._wrap(sess.program(name))

    def _wrap(self, binding) -> None:
        prog, clock = binding.program, time.perf_counter_ns
        orig = prog.bind

        def bind(alloc, lock=None):
            b = orig(alloc, lock)
            if b is not None:
                raw = b.raw

                def timed():
                    t = clock()
                    raw()
                    self.ms.append((clock() - t) / 1e6)
                b.raw = timed
            return b
        prog.bind = bind
        binding.pool.clear()


def memcpy_gbps(nbytes: int, reps: int = 20) -> float:
    a = np.ones(max(1, nbytes // 4), np.float32)
    b = np.empty_like(a)
    np.copyto(b, a)
    ts = []
    for _ in range(reps):
        t = time.perf_counter_ns()
        np.copyto(b, a)
        ts.append(time.perf_counter_ns() - t)
    return a.nbytes / float(np.median(ts))  # bytes per ns = GB/s


def decoder_step_bytes(model, capacity: int) -> dict:
    """Bytes the decoder step reads per token: its weights (one row of each embedding table,
    the whole tied output embedding) and the whole KV cache."""
    c = model.cfg
    emb = {"wte.weight", "wpe.weight"}
    weights = sum(p.numel() * 4 for n, p in model.named_parameters() if n not in emb)
    weights += model.wte.weight.numel() * 4 + 2 * c.d_model * 4   # lm_head (tied) + a row of wte and wpe
    cache = 2 * c.n_layers * c.n_heads * capacity * (c.d_model // c.n_heads) * 4
    return {"weights": weights, "cache": cache, "total": weights + cache}


def measure_prompt(family, P, sessions, timers, eager, prompt, args, log) -> list[dict]:
    """One prompt length: every target's artifact and PyTorch eager, interleaved per round."""
    N = args.new_tokens
    names = list(sessions) + ["pytorch-eager"]
    runners = {**sessions, "pytorch-eager": eager}
    for r in runners.values():  # warm-up
        r.generate(prompt, N, stop_at_eos=False)
    rec = {k: {"ttft": [], "tpot": [], "tps": [], "raw": [], "overhead": [], "state_bytes": None} for k in names}
    gc.collect()
    gc.disable()
    try:
        for rep in range(args.reps):
            order = names if rep % 2 == 0 else names[::-1]
            for k in order:
                if k in timers:
                    timers[k].ms.clear()
                g = runners[k].generate(prompt, N, stop_at_eos=False)
                r = rec[k]
                r["ttft"].append(g.ttft_ms)
                r["tpot"].append(float(np.median(g.step_ms)))
                r["tps"].append(g.tokens_per_s)
                r["state_bytes"] = g.state_bytes
                if k in timers:  # the calls of the timed steps are the last len(step_ms) ones
                    raw = np.array(timers[k].ms[-len(g.step_ms):])
                    r["raw"].append(float(np.median(raw)))
                    r["overhead"].append(float(np.median(np.array(g.step_ms) - raw)) * 1e3)
    finally:
        gc.enable()
    rng = np.random.default_rng(args.seed)
    rows = []
    e_tpot = np.array(rec["pytorch-eager"]["tpot"])
    for k in names:
        r = rec[k]
        tpot = np.array(r["tpot"])
        row = {"family": family, "P": P, "target": k, "reps": args.reps, "new_tokens": N,
               "ttft": summarize(r["ttft"]), "tpot": summarize(r["tpot"]), "tokens_per_s": float(np.median(r["tps"])),
               "state_bytes": r["state_bytes"], "raw": {k2: r[k2] for k2 in ("ttft", "tpot", "raw", "overhead")}}
        if k in sessions:
            diff_us = np.array(r["overhead"])
            row["raw_step"] = summarize(r["raw"])
            row["overhead_us"] = float(np.median(diff_us))
            row["overhead_ci95"] = bootstrap_median_ci(diff_us, args.resamples, rng)
            ratio = e_tpot / tpot
            row["vs_eager"] = float(np.median(ratio))
            row["vs_eager_ci95"] = bootstrap_median_ci(ratio, args.resamples, rng)
        rows.append(row)
        log(f"{family} P={P} {k}: TTFT {row['ttft']['p50']:.2f} ms, TPOT {row['tpot']['p50'] * 1e3:.0f} us"
            + (f", overhead {row['overhead_us']:.1f} us, {row['vs_eager']:.1f}x eager" if k in sessions else ""))
    return rows


def measure_bound(model, sessions, timers, prompt, capacity, args) -> list[dict]:
    """Decoder step at the longest prompt vs bytes-read / memcpy bandwidth, interleaved."""
    need = decoder_step_bytes(model, capacity)
    rec = {k: {"raw": [], "tpot": [], "gbps": []} for k in sessions}
    for rep in range(args.reps):
        for k, s in sessions.items():
            timers[k].ms.clear()
            g = s.generate(prompt, args.new_tokens, stop_at_eos=False)
            rec[k]["tpot"].append(float(np.median(g.step_ms)))
            rec[k]["raw"].append(float(np.median(timers[k].ms[-len(g.step_ms):])))
            rec[k]["gbps"].append(memcpy_gbps(need["total"]))
    rows = []
    for k, r in rec.items():
        gbps = float(np.median(r["gbps"]))
        bound_ms = need["total"] / gbps / 1e6
        rows.append({"target": k, "P": len(prompt), "capacity": capacity, "bytes": need, "memcpy_gbps": gbps,
                     "large_memcpy_gbps": memcpy_gbps(256 << 20, 5), "bound_ms": bound_ms,
                     "raw_ms": float(np.median(r["raw"])), "tpot_ms": float(np.median(r["tpot"])),
                     "raw_ratio": float(np.median(r["raw"])) / bound_ms, "tpot_ratio": float(np.median(r["tpot"])) / bound_ms,
                     "samples": r})
    return rows


def measure_classes(family, target, s4, s1, prompt, args) -> dict:
    """64-token prompt: the 4-class artifact vs the 64-only one, interleaved."""
    N = args.new_tokens
    for s in (s4, s1):
        s.generate(prompt, N, stop_at_eos=False)
    t4, t1, p4, p1 = [], [], [], []
    for rep in range(args.reps * 2):
        pair = ((s4, t4, p4), (s1, t1, p1)) if rep % 2 == 0 else ((s1, t1, p1), (s4, t4, p4))
        for s, tt, pp in pair:
            g = s.generate(prompt, N, stop_at_eos=False)
            tt.append(g.ttft_ms)
            pp.append(float(np.median(g.step_ms)))
    ratio = np.array(t4) / np.array(t1)
    rng = np.random.default_rng(args.seed)
    return {"family": family, "target": target, "prompt": len(prompt), "ttft_4class": summarize(t4),
            "ttft_64only": summarize(t1), "ratio": float(np.median(ratio)),
            "ratio_ci95": bootstrap_median_ci(ratio, args.resamples, rng),
            "tpot_4class": summarize(p4), "tpot_64only": summarize(p1)}


# ----------------------------------------------------------------------------- report

def _ci(ci) -> str:
    return f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def render(res: dict, markdown: bool) -> str:
    parts = []
    head = ["family", "P", "target", "TTFT p50 ms", "TPOT p50 us", "tok/s", "state bytes", "raw step p50 us",
            "overhead us [95% CI]", "overhead goal", "speed-up vs eager [95% CI]"]
    rows = []
    for r in res["latency"]:
        art = "overhead_us" in r
        goal = OVERHEAD_GOAL_US.get(r["target"])
        ok = art and r["overhead_us"] <= goal
        rows.append([r["family"], str(r["P"]), r["target"], f"{r['ttft']['p50']:.2f}", f"{r['tpot']['p50'] * 1e3:.0f}",
                     f"{r['tokens_per_s']:.0f}", f"{r['state_bytes']:,}",
                     f"{r['raw_step']['p50'] * 1e3:.0f}" if art else "-",
                     f"{r['overhead_us']:+.1f} [{r['overhead_ci95'][0]:+.1f}, {r['overhead_ci95'][1]:+.1f}]" if art else "-",
                     (f"<= {goal:g}: {'PASS' if ok else 'MISS'}") if art else "-",
                     f"{r['vs_eager']:.2f}x {_ci(r['vs_eager_ci95'])}" if art else "(eager)"])
    parts.append(table(head, rows, markdown))
    fams = {r["family"] for r in res["latency"]}
    if "decoder" in fams and len(fams) > 1:
        # per token, the decoder-only teacher (in-place cache) against each student, same run
        by = {(r["family"], r["P"], r["target"]): r for r in res["latency"]}
        head = ["family", "P", "target", "decoder TPOT p50 us", "family TPOT p50 us", "decoder / family TPOT",
                "decoder / family TTFT"]
        rows = [[f, str(P), t, f"{d['tpot']['p50'] * 1e3:.0f}", f"{r['tpot']['p50'] * 1e3:.0f}",
                 f"{d['tpot']['p50'] / r['tpot']['p50']:.2f}x", f"{d['ttft']['p50'] / r['ttft']['p50']:.2f}x"]
                for (f, P, t), r in by.items() if f != "decoder" and (d := by.get(("decoder", P, t)))]
        parts.append(table(head, rows, markdown))
    if res.get("bound"):
        head = ["target", "P", "cache slots", "weights MB", "cache MB", "memcpy GB/s (same size)", "bound ms",
                "raw step ms", "raw / bound", "TPOT ms", "TPOT / bound", "goal <= 2x (any target)"]
        rows = [[b["target"], str(b["P"]), str(b["capacity"]), f"{b['bytes']['weights'] / 1e6:.2f}",
                 f"{b['bytes']['cache'] / 1e6:.2f}", f"{b['memcpy_gbps']:.1f} ({b['large_memcpy_gbps']:.1f} at 256 MB)",
                 f"{b['bound_ms']:.3f}", f"{b['raw_ms']:.3f}", f"{b['raw_ratio']:.2f}x", f"{b['tpot_ms']:.3f}",
                 f"{b['tpot_ratio']:.2f}x", "PASS" if b["tpot_ratio"] <= BOUND_GOAL else "MISS"] for b in res["bound"]]
        parts.append(table(head, rows, markdown))
    if res.get("classes"):
        head = ["family", "target", "prompt", "TTFT 4-class p50 ms", "TTFT 64-only p50 ms", "ratio [95% CI]",
                "goal <= 1.2x", "TPOT 4-class / 64-only us"]
        rows = [[c["family"], c["target"], str(c["prompt"]), f"{c['ttft_4class']['p50']:.2f}",
                 f"{c['ttft_64only']['p50']:.2f}", f"{c['ratio']:.2f} {_ci(c['ratio_ci95'])}",
                 "PASS" if c["ratio"] <= TTFT_GOAL else "MISS",
                 f"{c['tpot_4class']['p50'] * 1e3:.0f} / {c['tpot_64only']['p50'] * 1e3:.0f}"] for c in res["classes"]]
        parts.append(table(head, rows, markdown))
    if res.get("greedy"):
        head = ["family", "target", "prompt", "tokens", "greedy = TorchPrograms"]
        rows = [[g["family"], g["target"], str(g["P"]), str(g["n"]), "yes" if g["same"] else "NO"] for g in res["greedy"]]
        parts.append(table(head, rows, markdown))
    return "\n\n".join(parts)


def verdicts(res: dict) -> list[str]:
    out = []
    lat = [r for r in res["latency"] if "overhead_us" in r]
    for t in sorted({r["target"] for r in lat}):
        worst = max(r["overhead_us"] for r in lat if r["target"] == t)
        out.append(f"runtime overhead per token on {t}: worst {worst:.1f} us over families x prompts "
                   f"(goal <= {OVERHEAD_GOAL_US[t]:g} us): {'PASS' if worst <= OVERHEAD_GOAL_US[t] else 'MISS'}")
    if res.get("bound"):
        best = min(res["bound"], key=lambda b: b["tpot_ratio"])
        out.append(f"decoder step at P={best['P']}: best {best['tpot_ratio']:.2f}x its memory-traffic bound "
                   f"({best['target']}; goal <= {BOUND_GOAL:g}x on one target): "
                   f"{'PASS' if best['tpot_ratio'] <= BOUND_GOAL else 'MISS'}")
    if res.get("classes"):
        worst = max(res["classes"], key=lambda c: c["ratio"])
        out.append(f"TTFT of a 64-token prompt, 4-class / 64-only artifact: worst {worst['ratio']:.2f}x "
                   f"({worst['family']}, {worst['target']}; goal <= {TTFT_GOAL:g}x): "
                   f"{'PASS' if worst['ratio'] <= TTFT_GOAL else 'MISS'}")
    for f in sorted({r["family"] for r in lat}):
        worst = min(lat, key=lambda r: r["vs_eager"] if r["family"] == f else np.inf)
        out.append(f"{f} decodes at least {worst['vs_eager']:.2f}x faster than PyTorch eager (static cache) on every "
                   f"target and prompt (slowest: {worst['target']} at P={worst['P']}; goal >= {EAGER_GOAL:g}x): "
                   f"{'PASS' if worst['vs_eager'] >= EAGER_GOAL else 'MISS'}")
    if res.get("greedy"):
        bad = [g for g in res["greedy"] if not g["same"]]
        out.append(f"greedy tokens equal TorchPrograms on {len(res['greedy']) - len(bad)}/{len(res['greedy'])} "
                   f"artifact x prompt checks" + (f": MISS {bad}" if bad else ": PASS"))
    return out


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="smoke run: small classes and prompts, few rounds")
    ap.add_argument("--convert-only", action="store_true", help="build the artifacts into --out and stop")
    ap.add_argument("--out", default="/tmp/edgesdk-generation-bench", help="artifact cache (reused if the code is unchanged)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--targets", nargs="+", default=list(TARGETS))
    ap.add_argument("--families", nargs="+", default=list(FAMILIES))
    ap.add_argument("--skip", nargs="+", default=[], metavar="FAMILY:TARGET",
                    help="leave out these family x target pairs (e.g. one that does not convert), said in the output")
    ap.add_argument("--classes", nargs="+", type=int, default=list(CLASSES))
    ap.add_argument("--prompts", nargs="+", type=int, default=list(PROMPTS))
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads: every backend and torch (eager)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.classes, args.prompts, args.reps, args.new_tokens = [16, 32, 64, 96], [32, 96], 3, 8
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def log(msg):
        print(f"# [{time.perf_counter() - t_start:5.0f}s] {msg}", file=sys.stderr, flush=True)

    classes, small = tuple(sorted(args.classes)), (min(args.classes),)
    skip = {tuple(x.split(":", 1)) for x in args.skip}

    def targets(fam):
        return [t for t in args.targets if (fam, t) not in skip]
    out = Path(args.out)
    models, arts = {}, {}
    for fam in args.families:
        models[fam] = build_model(fam, classes[-1], args.new_tokens, args.seed)
        for t in targets(fam):  # convert everything before loading any session (XNNPACK threadpool)
            arts[fam, t, classes] = artifact(models[fam], fam, t, classes, out, log)
            arts[fam, t, small] = artifact(models[fam], fam, t, small, out, log)
    if args.convert_only:
        return 0
    env = environment(VERSION_PACKAGES)
    rng = np.random.default_rng(args.seed)
    res = {"schema": "edgesdk.bench.generation/1", "environment": env, "args": vars(args),
           "latency": [], "bound": [], "classes": [], "greedy": []}
    for fam in args.families:
        m = models[fam]
        sess = {t: runtime.load(arts[fam, t, classes].path, threads=args.threads) for t in targets(fam)}
        timers = {t: RawTimer(s) for t, s in sess.items()}
        eager = TorchPrograms(m, prompt_lengths=list(classes))
        for P in args.prompts:
            prompt = rng.integers(0, 256, size=P).tolist()
            res["latency"] += measure_prompt(fam, P, sess, timers, eager, prompt, args, log)
            if P in (min(args.prompts), max(args.prompts)):
                want = eager.generate(prompt, args.new_tokens, stop_at_eos=False).tokens
                for t, s in sess.items():
                    got = s.generate(prompt, args.new_tokens, stop_at_eos=False).tokens
                    res["greedy"].append({"family": fam, "target": t, "P": P, "n": len(got), "same": got == want})
            if fam == "decoder" and P == max(args.prompts):
                res["bound"] = measure_bound(m, sess, timers, prompt, classes[-1] + args.new_tokens, args)
                log("bound: " + ", ".join(f"{b['target']} {b['tpot_ratio']:.2f}x" for b in res["bound"]))
        prompt = rng.integers(0, 256, size=small[0]).tolist()
        for t in targets(fam):
            s1 = runtime.load(arts[fam, t, small].path, threads=args.threads)
            res["classes"].append(measure_classes(fam, t, sess[t], s1, prompt, args))
            log(f"classes {fam} {t}: TTFT ratio {res['classes'][-1]['ratio']:.2f}")
            del s1
        del sess, eager
    res["wall_s"] = time.perf_counter() - t_start
    v = env["versions"]
    print(f"Environment: {env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
          + ", ".join(f"{k} {v[k]}" for k in VERSION_PACKAGES)
          + f"; intra-op threads {args.threads} for every backend and for torch; N = {args.new_tokens} new tokens; "
          f"{args.reps} interleaved rounds; prompt length classes {list(classes)}; wall {res['wall_s']:.0f} s"
          + (f"; left out: {', '.join(sorted(args.skip))}" if args.skip else "")
          + ("; QUICK RUN (smoke only)" if args.quick else ""))
    print()
    print(render(res, args.markdown))
    print()
    print("\n".join(("- " if args.markdown else "") + x for x in verdicts(res)))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
