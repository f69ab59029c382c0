"""Quantization per CPU target: artifact size, latency and accuracy against fp32.

For every CPU target that runs here and every quantization scheme it offers (`edgesdk.targets()`;
"int8-qat" is skipped: it needs a QAT-trained model from `converters.qat`), on two classifiers
trained briefly on sklearn's digits (offline, seeded):

  mlp   linear-heavy MLP 64 -> 1536 -> 1536 -> 1536 -> 10 (~4.8 M parameters), input (B, 64)
  conv  Conv2d+ReLU+max-pool x3 -> Linear -> Linear on digits upsampled to (B, 1, 32, 32)

it measures, with fp32 on the same target as the baseline:

  size      artifact payload bytes (`Artifact.size_bytes`) and the ratio to fp32;
  latency   every artifact of a (model, target) loaded with `runtime.load` and timed with
            `Session.run([x])` interleaved in one process, round-robin over fp32 and every
            scheme, the order rotated each round, after warm-up; p50 ratio = median of the
            per-round ratios (scheme / fp32) with a percentile-bootstrap 95% CI; CV per series
            (flagged above 10%); "no measurable difference" when the CI includes 1.0;
  accuracy  the conversion's own gate on held-out test-split inputs (`eval_data=`): min cosine
            and top-1 agreement against the fp32 PyTorch module, with auto-fallback on
            (`max_drop=0.01`), and the layers auto-fallback kept in float.

Goals (from the issue): int8 size <= 0.3x fp32; int8 p50 <= 0.7x fp32 on at least one target
per model; top-1 agreement >= 99% and cosine >= 0.99. A scheme slower than fp32 is reported as
such. A conversion the gate rejects even with auto-fallback (`ToleranceError`) is a MISS row;
any other exception is recorded as an ERROR row with its message.

Method: /work/shared/BENCHMARKING.md. All sessions of a (model, target) use the same intra-op
thread count (`Session.threads`, all usable cores by default); the garbage collector is paused
during timed loops.

Usage::

    python benchmarks/quantization.py --markdown      # full run (3-4 min on 2 idle cores; ~8 on a busy machine)
    python benchmarks/quantization.py --quick         # smoke run, numbers not for publishing
    python benchmarks/quantization.py --json /tmp/quant.json --models mlp --targets onnx-cpu
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from edgesdk import converters  # noqa: E402
from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402
from runtime_overhead import bootstrap_median_ci  # noqa: E402
from runtime_overhead import environment as shared_environment  # noqa: E402

NOISY_CV = 0.10
SIZE_GOAL = 0.3          # int8 artifact size / fp32
LATENCY_GOAL = 0.7       # int8 p50 / fp32, on at least one target per model
TOP1_GOAL = 0.99
COSINE_GOAL = 0.99
MAX_DROP = 0.01
SKIP_SCHEMES = {"int8-qat": "needs a QAT-trained model (converters.qat.prepare_qat/convert_qat)"}
VERSION_PACKAGES = ("torch", "executorch", "onnxruntime", "onnx", "ai-edge-litert", "litert-torch",
                    "ai-edge-quantizer", "torchao", "numpy", "scikit-learn")


# ----------------------------------------------------------------------------- data and models

def digits_data(seed: int):
    """sklearn digits (1797 x 8x8, /16), shuffled with `seed`, split 1200 train / rest test."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    x, y = x[perm], y[perm]
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def as_images(x: torch.Tensor) -> torch.Tensor:
    """(N, 64) -> (N, 1, 32, 32), bilinear upsampling of the 8x8 digits."""
    return nn.functional.interpolate(x.view(-1, 1, 8, 8), size=(32, 32), mode="bilinear", align_corners=False)


def make_mlp(width: int = 1536, depth: int = 3) -> nn.Module:
    mods, d = [], 64
    for _ in range(depth):
        mods += [nn.Linear(d, width), nn.ReLU()]
        d = width
    mods.append(nn.Linear(d, 10))
    return nn.Sequential(*mods)


class DigitsConvNet(nn.Module):
    """Three Conv2d+ReLU+max-pool stages on (B, 1, 32, 32), then a two-layer head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.conv3 = nn.Conv2d(64, 128, 3, padding=1)
        self.fc = nn.Linear(128 * 4 * 4, 128)
        self.head = nn.Linear(128, 10)

    def forward(self, image):
        h = torch.max_pool2d(torch.relu(self.conv1(image)), 2)   # 32 x 16 x 16
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)       # 64 x 8 x 8
        h = torch.max_pool2d(torch.relu(self.conv3(h)), 2)       # 128 x 4 x 4
        return self.head(torch.relu(self.fc(h.flatten(1))))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float, seed: int,
          threads: int = 1) -> float:
    """Adam on random mini-batches of 64 with `threads` torch threads; returns seconds spent.

    One thread by default: on a shared 2-core machine two torch threads were 3-6x slower under
    contention. The previous torch thread count is restored afterwards.
    """
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    model.train()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    try:
        for _ in range(steps):
            idx = torch.randint(0, len(x), (64,))
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(before)
    model.eval()
    return time.perf_counter() - t0


def build_models(args) -> dict:
    """Train the requested models; returns key -> dict(model, label, example, calibration, eval, ...)."""
    (xtr, ytr), (xte, yte) = digits_data(args.seed)
    b = args.batch
    if 64 * b > len(xtr) or args.eval_batches * b > len(xte):
        raise SystemExit(f"--batch {b}: 64 calibration batches or {args.eval_batches} eval batches do not fit "
                         f"the splits ({len(xtr)} train / {len(xte)} test)")
    out = {}
    specs = {
        "mlp": (lambda: make_mlp(), lambda x: x, args.steps_mlp, 1e-3, "MLP 64-1536x3-10", "(B, 64)"),
        "conv": (DigitsConvNet, as_images, args.steps_conv, 2e-3, "ConvNet 3xConv2d(32/64/128)+pool, FC 2048-128-10",
                 "(B, 1, 32, 32)"),
    }
    for key in args.models:
        make, prep, steps, lr, label, shape = specs[key]
        torch.manual_seed(args.seed)
        model = make()
        xtr_k, xte_k = prep(xtr), prep(xte)
        secs = train(model, xtr_k, ytr, steps, lr, args.seed, args.train_threads)
        with torch.no_grad():
            acc = float((model(xte_k).argmax(1) == yte).float().mean())
            train_acc = float((model(xtr_k).argmax(1) == ytr).float().mean())
        params = sum(p.numel() for p in model.parameters())
        calibration = [(xtr_k[i * b:(i + 1) * b],) for i in range(64)]              # 64 batches, train split
        eval_data = [(xte_k[i * b:(i + 1) * b],) for i in range(args.eval_batches)]  # disjoint test split
        out[key] = {"model": model, "label": label, "input": shape.replace("B", str(b)), "params": params,
                    "train_steps": steps, "train_s": secs, "lr": lr, "test_acc": acc, "train_acc": train_acc,
                    "example": (xte_k[:b],), "calibration": calibration, "eval": eval_data,
                    "x": np.ascontiguousarray(xte_k[:b].numpy(), dtype=np.float32)}
        print(f"# trained {key}: {params:,} parameters, {steps} Adam steps in {secs:.1f}s, "
              f"fp32 test accuracy {acc:.4f} (train {train_acc:.4f})", file=sys.stderr)
    return out


# ----------------------------------------------------------------------------- conversion

def cpu_targets(only) -> list:
    out = []
    for t in edgesdk.targets():
        if t.device != "cpu" or (only and t.name not in only):
            continue
        if not t.runs_here:
            print(f"# skip {t.name}: {t.why_not}", file=sys.stderr)
            continue
        out.append(t)
    return out


def convert_one(m: dict, key: str, target, scheme: str, out_dir: str) -> dict:
    """Convert one (model, target, scheme); returns a row with status OK / MISS / ERROR."""
    row = {"model": key, "target": target.name, "scheme": scheme}
    kwargs = {}
    if scheme != "fp32":
        calibrated = converters.get_converter(target.name).calibrated
        kwargs = dict(calibration=m["calibration"] if scheme in calibrated else None, eval_data=m["eval"],
                      auto_fallback=True, max_drop=MAX_DROP)
    t0 = time.perf_counter()
    try:
        art = edgesdk.convert(m["model"], m["example"], target.name, quantize=scheme, out_dir=out_dir,
                          name=f"{key}-{target.name}-{scheme}", **kwargs)
    except edgesdk.errors.ToleranceError as e:
        row.update(status="MISS", error=f"ToleranceError: {e}")
    except Exception as e:  # noqa: BLE001 - recorded in the table, reported, not hidden
        row.update(status="ERROR", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    else:
        row.update(status="OK", path=str(art.path), size_bytes=art.size_bytes)
        if scheme != "fp32":
            out = art.verification["outputs"][0]
            q = art.manifest.quantization
            row.update(cosine_min=out["cosine_min"], cosine_mean=out["cosine_mean"],
                       top1_agreement=out.get("top1_agreement"), max_abs_err=out["max_abs_err"],
                       eval_samples=art.verification["samples"],
                       kept_float=[k["layer"] for k in q.get("kept_float", [])],
                       attempts=q.get("attempts"), gate=q.get("gate"))
        else:
            row.update(max_abs_err=art.verification["max_abs_err"])
    row["convert_s"] = time.perf_counter() - t0
    return row


# ----------------------------------------------------------------------------- timing

def interleave(runs: dict, rounds: int, warmup: int) -> tuple[dict, dict]:
    """Cold first run, warm-up, then `rounds` round-robin rounds with the order rotated each round.

    `runs` maps label -> zero-argument callable. Returns (samples_ns per label, cold_ns per label).
    """
    labels = list(runs)
    clock = time.perf_counter_ns
    cold = {}
    for k in labels:
        t0 = clock()
        runs[k]()
        cold[k] = clock() - t0
    for _ in range(warmup):
        for k in labels:
            runs[k]()
    samples = {k: np.empty(rounds, dtype=np.int64) for k in labels}
    n = len(labels)
    gc.collect()
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for i in range(rounds):
            for j in range(n):
                k = labels[(i + j) % n]
                f = runs[k]
                t0 = clock()
                f()
                samples[k][i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    return samples, cold


def latency_analysis(samples: dict, base: str, resamples: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for k, v in samples.items():
        ms = v / 1e6
        s = summarize(ms.tolist())
        a = {"summary": s, "noisy": s["cv"] > NOISY_CV}
        if k != base:
            ratio = v / samples[base]
            lo, hi = bootstrap_median_ci(ratio, resamples, rng)
            a.update(median_ratio=float(np.median(ratio)), ratio_ci95=(lo, hi),
                     no_measurable_difference=lo <= 1.0 <= hi, slower=lo > 1.0)
        out[k] = a
    return out


# ----------------------------------------------------------------------------- environment

def environment() -> dict:
    return shared_environment(VERSION_PACKAGES)


def env_line(env: dict, threads: dict) -> str:
    v = env["versions"]
    th = ", ".join(f"{t}={n}" for t, n in threads.items()) or "n/a"
    return (f"{env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
            + ", ".join(f"{k} {v[k]}" for k in VERSION_PACKAGES)
            + f"; intra-op threads (every session of a target): {th}; torch threads {env['torch_threads']} "
            "(export and the accuracy gate's PyTorch reference; not on the timed path)")


# ----------------------------------------------------------------------------- report

HEADERS = ["model", "target", "scheme", "size KiB", "size ratio", "p50 ms", "p50 ratio [95% CI]", "CV",
           "cosine (min)", "top-1 agreement", "layers kept float", "size <=0.3x", "p50 <=0.7x", "accuracy"]


def _yn(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def is_int8(scheme: str) -> bool:
    return scheme.startswith("int8")


def table_rows(rows: list[dict]) -> list[list[str]]:
    base = {(r["model"], r["target"]): r for r in rows if r["scheme"] == "fp32"}
    out = []
    for r in rows:
        b = base.get((r["model"], r["target"]))
        cells = [r["model"], r["target"], r["scheme"]]
        if r["status"] != "OK":
            msg = r["error"].replace("|", "/").replace("\n", " ")
            if len(msg) > 160:
                msg = msg[:157] + "..."
            cells += [r["status"] + ": " + msg] + [""] * (len(HEADERS) - 4)
            out.append(cells)
            continue
        lat = r.get("latency")
        size = r["size_bytes"] / 1024
        cells.append(f"{size:,.0f}")
        fp32 = r["scheme"] == "fp32"
        size_ratio = r["size_bytes"] / b["size_bytes"] if b and b["status"] == "OK" else None
        cells.append("1 (baseline)" if fp32 else f"{size_ratio:.3f}" if size_ratio else "n/a")
        if lat:
            cells.append(f"{lat['summary']['p50']:.3f}")
            if fp32:
                cells.append("1 (baseline)")
            else:
                lo, hi = lat["ratio_ci95"]
                txt = f"{lat['median_ratio']:.3f} [{lo:.3f}, {hi:.3f}]"
                if lat["slower"]:
                    txt += " SLOWER than fp32"
                elif lat["no_measurable_difference"]:
                    txt += " no measurable difference"
                cells.append(txt)
            cells.append(f"{lat['summary']['cv'] * 100:.0f}%" + (" (noisy)" if lat["noisy"] else ""))
        else:
            cells += ["n/a", "n/a", ""]
        if fp32:
            cells += ["—", "—", "—", "—", "—", "—"]
        else:
            t1 = r["top1_agreement"]
            cells += [f"{r['cosine_min']:.4f}", f"{t1 * 100:.2f}%" if t1 is not None else "n/a",
                      ", ".join(r["kept_float"]) or "none"]
            cells.append(_yn(size_ratio <= SIZE_GOAL) if is_int8(r["scheme"]) and size_ratio else "—")
            cells.append(_yn(lat["median_ratio"] <= LATENCY_GOAL) if is_int8(r["scheme"]) and lat else "—")
            cells.append(_yn((t1 is None or t1 >= TOP1_GOAL) and r["cosine_min"] >= COSINE_GOAL))
        out.append(cells)
    return out


def render(rows: list[list[str]], markdown: bool) -> str:
    if markdown:
        out = ["| " + " | ".join(HEADERS) + " |", "|" + "|".join("---" for _ in HEADERS) + "|"]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(out)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(HEADERS)]
    fmt = "  ".join("{:<%d}" % w for w in widths)
    return "\n".join([fmt.format(*HEADERS), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in rows])


def summary_lines(rows: list[dict], models: dict) -> list[str]:
    lines = []
    for key in models:
        hits, best = [], None
        for r in rows:
            if r["model"] != key or not is_int8(r["scheme"]) or not r.get("latency"):
                continue
            ratio = r["latency"]["median_ratio"]
            if best is None or ratio < best[0]:
                best = (ratio, f"{r['target']} {r['scheme']}")
            if ratio <= LATENCY_GOAL:
                hits.append(f"{r['target']} {r['scheme']} ({ratio:.2f}x)")
        if hits:
            lines.append(f"{key}: int8 p50 <= {LATENCY_GOAL}x fp32 reached on at least one target: PASS — "
                         + ", ".join(hits))
        else:
            b = f"; best {best[1]} at {best[0]:.2f}x" if best else "; no int8 artifact was timed"
            lines.append(f"{key}: int8 p50 <= {LATENCY_GOAL}x fp32 reached on at least one target: MISS{b}")
    return lines


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="short training, few rounds (smoke run, numbers not for publishing)")
    ap.add_argument("--json", metavar="PATH", help="also write environment, rows and every raw latency sample here")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--targets", nargs="+", metavar="T", help="only these targets (default: every CPU target that runs here)")
    ap.add_argument("--models", nargs="+", choices=("mlp", "conv"), default=["mlp", "conv"], help="which models (default both)")
    ap.add_argument("--schemes", nargs="+", metavar="S", help="only these quantized schemes (fp32 always runs)")
    ap.add_argument("--batch", type=int, default=8, help="batch of every input: example, calibration, eval, timing (default 8)")
    ap.add_argument("--eval-batches", type=int, default=None, help="held-out eval batches (default 64; quick 16)")
    ap.add_argument("--rounds-mlp", type=int, default=None, help="timed rounds for the MLP (default 1000; quick 20)")
    ap.add_argument("--rounds-conv", type=int, default=None, help="timed rounds for the conv net (default 500; quick 20)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds before timing (default 30; quick 3)")
    ap.add_argument("--steps-mlp", type=int, default=None, help="Adam steps for the MLP (default 200; quick 60)")
    ap.add_argument("--steps-conv", type=int, default=None, help="Adam steps for the conv net (default 300; quick 60)")
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads while training (default 1)")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000; quick 200)")
    ap.add_argument("--seed", type=int, default=0, help="seed for data split, training and bootstrap (default 0)")
    args = ap.parse_args(argv)
    q = args.quick
    args.eval_batches = args.eval_batches or (16 if q else 64)
    args.steps_mlp = args.steps_mlp or (60 if q else 200)
    args.steps_conv = args.steps_conv or (60 if q else 300)
    rounds = {"mlp": args.rounds_mlp or (20 if q else 1000), "conv": args.rounds_conv or (20 if q else 500)}
    warmup = args.warmup if args.warmup is not None else (3 if q else 30)
    resamples = args.resamples or (200 if q else 1000)
    if min(rounds.values()) < 10:
        ap.error("rounds must be at least 10")
    if args.batch < 1 or args.train_threads < 1:
        ap.error("--batch and --train-threads must be positive")

    env = environment()
    targets = cpu_targets(args.targets)
    if not targets:
        print("no CPU target runs here; nothing to measure", file=sys.stderr)
        return 1
    t_start = time.perf_counter()
    models = build_models(args)

    rows, threads, cold, samples_json, skipped = [], {}, [], {}, set()
    with tempfile.TemporaryDirectory(prefix="edgesdk-quant-") as tmp:
        for key, m in models.items():
            for t in targets:
                schemes = ["fp32"]
                for s in t.quantization[1:]:
                    if s in SKIP_SCHEMES:
                        skipped.add((t.name, s))
                    elif not args.schemes or s in args.schemes:
                        schemes.append(s)
                group = []
                for s in schemes:
                    r = convert_one(m, key, t, s, tmp)
                    print(f"# {key:<4} {t.name:<20} {s:<12} {r['status']:<5} convert {r['convert_s']:.1f}s "
                          f"({time.perf_counter() - t_start:.0f}s)", file=sys.stderr)
                    if r["status"] == "ERROR":
                        print(r["traceback"], file=sys.stderr)
                    rows.append(r)
                    group.append(r)
                ok = [r for r in group if r["status"] == "OK"]
                if not ok or ok[0]["scheme"] != "fp32":
                    continue  # no fp32 baseline: nothing to time against
                x = m["x"]
                sessions = {r["scheme"]: runtime.load(r["path"]) for r in ok}
                ths = {s.threads for s in sessions.values()}
                threads[t.name] = ths.pop() if len(ths) == 1 else sorted(ths)
                runs = {}
                for s, sess in sessions.items():
                    inputs = [x]
                    runs[s] = (lambda f=sess.run, i=inputs: f(i))
                samples, cold_ns = interleave(runs, rounds[key], warmup)
                lat = latency_analysis(samples, "fp32", resamples, args.seed)
                for r in ok:
                    r["latency"] = lat[r["scheme"]]
                    r["threads"] = sessions[r["scheme"]].threads
                    r["cold_first_run_ms"] = cold_ns[r["scheme"]] / 1e6
                    r["load_ms"] = sessions[r["scheme"]].load_ms
                samples_json[f"{key}/{t.name}"] = {s: v.tolist() for s, v in samples.items()}
                cold.append(f"{key}/{t.name}: " + ", ".join(f"{s} {cold_ns[s] / 1e6:.1f}" for s in sessions))
                print(f"# {key:<4} {t.name:<20} timed {rounds[key]} rounds x {len(runs)} "
                      f"({time.perf_counter() - t_start:.0f}s)", file=sys.stderr)
                del sessions, runs

    total_s = time.perf_counter() - t_start
    print(f"Environment: {env_line(env, threads)}")
    for key, m in models.items():
        print(f"Model {key}: {m['label']}, input {m['input']}, {m['params']:,} parameters, {m['train_steps']} Adam "
              f"steps (lr {m['lr']:g}, batch 64, {args.train_threads} torch thread(s)) in {m['train_s']:.1f}s; fp32 PyTorch test accuracy "
              f"{m['test_acc'] * 100:.1f}% ({len(m['eval']) * args.batch} held-out eval samples used by the gate)")
    print(f"Data: sklearn digits /16, seeded split 1200 train / 597 test; calibration 64 batches of {args.batch} "
          f"from the train split (static schemes only); eval {args.eval_batches} batches of {args.batch} from the test "
          f"split; quantized conversions use auto_fallback=True, max_drop={MAX_DROP}. Timing: batch {args.batch}, "
          f"warm-up {warmup} rounds, {rounds['mlp']} (mlp) / {rounds['conv']} (conv) interleaved rounds, order rotated "
          f"each round; ratio = median of per-round scheme/fp32; bootstrap {resamples} resamples, seed {args.seed}"
          + ("; QUICK RUN (smoke only)" if q else ""))
    if skipped:
        print("Skipped: " + ", ".join(f"{t} {s}" for t, s in sorted(skipped)) + " — "
              + "; ".join(f"{s} {why}" for s, why in SKIP_SCHEMES.items()))
    print()
    print(render(table_rows(rows), args.markdown))
    print()
    for line in summary_lines(rows, models):
        print(line)
    print()
    for c in cold:
        print(f"cold first run (ms): {c}")
    errors = [r for r in rows if r["status"] == "ERROR"]
    for r in errors:
        print(f"ERROR {r['model']} {r['target']} {r['scheme']}: {r['error']}")
    print(f"total wall time {total_s:.0f}s", file=sys.stderr)
    if args.json:
        slim = [{k: v for k, v in r.items() if k != "path"} for r in rows]
        out = {"schema": "edgesdk.bench.quantization/1", "environment": env, "threads": threads,
               "models": {k: {kk: vv for kk, vv in m.items()
                              if kk not in ("model", "example", "calibration", "eval", "x")}
                          for k, m in models.items()},
               "batch": args.batch, "train_threads": args.train_threads, "rounds": rounds, "warmup": warmup, "resamples": resamples, "seed": args.seed,
               "quick": q, "max_drop": MAX_DROP, "rows": slim, "samples_ns": samples_json,
               "total_s": total_s}
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
        print(f"raw results: {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
