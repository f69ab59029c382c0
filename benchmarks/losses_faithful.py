"""Does faithfulness matter? The recipes re-run with the OT losses before and after they were made
faithful to their papers, over several seeds.

Before this change the library's ``sinkhorn`` loss was offered as the batch-wise OT distillation
loss, but it was not SinKD: it worked on features with a cosine cost, a detached plan summing to
1 after 50 unconverged iterations, and a gradient that was not its value's. It is kept here as
``sinkhorn_legacy`` (the old code, registered only inside this script) to measure "before".
After: ``feature_ot`` (the same idea, converged, value and gradient in agreement) and
``sinkhorn_kd`` (SinKD as published: L1 cost between temperature-softened output distributions,
plan normalised to the batch, gradients through 20 Sinkhorn rounds), added with the weight of
the SinKD authors' scripts (β = 0.8 times the 0.001 inside their loss) and, as an ablation,
β = 0.8 alone.

Parts (each variant adds one term to the recipe's own losses; everything else is identical):

  graph     ``lighthgnn`` (LightHGNN+: CE + KL + hyperedge KL) on the digits and synthetic
            hypergraphs of benchmarks/students_mlp.py, transductive and inductive, 200 full-batch
            steps. The OT terms see 64 random nodes per step (``subsample``): SinKD's batch is a
            mini-batch (16–32 in the paper), and a 2000-node plan per step costs ~100× the
            recipe. Metric: student accuracy on the held-out nodes.
  sentence  ``tokenbag`` from all-MiniLM-L6-v2 (hidden_cosine + relation_mse on the in-batch
            embeddings, batch 128). OT terms on the 128 embeddings, weight 1 like the relation
            term. SinKD needs output distributions and is not run on embeddings. Metrics:
            Spearman of pairwise cosine similarities and top-10 overlap on held-out texts.
  encdec    ``encdec-from-decoder`` (CE warm-up, then 0.9 KL + 0.1 CE on on-policy names). OT terms
            on the KD positions' logits (``kl_mask``); ``feature_ot`` is left out (the slowest
            part; the other parts measure it). Metrics: char F1 and exact match of greedy names
            on held-out pairs, and how many distinct names the student produces (a student that
            answers one string for every body still scores a char F1).

Every seed runs every variant (paired): the table gives mean ± std over seeds and the paired
difference to the recipe alone (mean, and min..max over seeds). Training is single-threaded and
seeded, so reruns give the same numbers.

Usage::

    python benchmarks/losses_faithful.py --markdown --json /tmp/losses_faithful.json
    python benchmarks/losses_faithful.py --parts graph --seeds 2 --quick    # smoke run
    # the recorded runs (RESULTS.md): ~5 min each on one core
    python benchmarks/losses_faithful.py --parts graph sentence --seeds 3 --seeds-other 2 --sentences 1500 \
        --tokenbag-steps 250 --markdown
    python benchmarks/losses_faithful.py --parts encdec --seeds-other 2 --variants sinkd --encdec-steps 100 \
        --n-eval 100 --markdown
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from edgesdk.models.distill import losses as L  # noqa: E402
from edgesdk.models.distill.recipes.sinkd import sinkd_term  # noqa: E402
from edgesdk.models.distill.recipes import get_recipe  # noqa: E402
from edgesdk.models.distill.trainer import LossSpec  # noqa: E402
from runtime_overhead import environment  # noqa: E402
from runtime_overhead import text_table  # noqa: E402

VERSION_PACKAGES = ("torch", "transformers", "numpy", "scikit-learn")


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- "before": the old loss

class LegacySinkhornLoss(L.FeatureOTLoss):
    """The library's ``sinkhorn`` loss as it was before this change, for the "before" rows only:
    ⟨P, C⟩ with P from a fixed 50 log-domain Sinkhorn iterations (f then g, from zero
    potentials), computed without autograd."""

    def __init__(self, n_iter: int = 50, **kw):
        super().__init__(**kw)
        self.n_iter = n_iter

    def forward(self, student: dict[str, Tensor], teacher: dict[str, Tensor], batch: dict | None = None) -> Tensor:
        s, t = self._pair(student, teacher, batch)
        if s.shape[0] == 0:
            return s.sum()
        c = self.cost_matrix(s, t)
        with torch.no_grad():
            n, m = c.shape
            eps, log_a, log_b = self.epsilon, -math.log(n), -math.log(m)
            f, g = c.new_zeros(n), c.new_zeros(m)
            for _ in range(self.n_iter):
                f = -eps * torch.logsumexp((g[None, :] - c) / eps + log_b, dim=1)
                g = -eps * torch.logsumexp((f[:, None] - c) / eps + log_a, dim=0)
            plan = torch.exp((f[:, None] + g[None, :] - c) / eps + log_a + log_b)
        return (plan * c).sum()


L.register_loss("sinkhorn_legacy")(LegacySinkhornLoss)


VARIANTS = ("before", "feature_ot", "sinkd", "ablation")


def ot_variants(keys: dict, feature_weight: float, sinkd: bool, feature_ot: bool = True,
                only: tuple[str, ...] = VARIANTS) -> dict[str, list[LossSpec]]:
    """Variant label -> extra loss terms; ``keys`` are the feature/logit keys and mask of the recipe;
    ``only`` picks among `VARIANTS` (the recipe alone always runs: it is the paired baseline)."""
    feat = {"student_key": keys["key"], "teacher_key": keys["key"], "mask_key": keys["mask_key"]}
    out = {"recipe": []}
    if "before" in only:
        out["+ sinkhorn (before)"] = [LossSpec("sinkhorn_legacy", feature_weight, feat)]
    if feature_ot and "feature_ot" in only:
        out["+ feature_ot (after)"] = [LossSpec("feature_ot", feature_weight, feat)]
    if sinkd and "sinkd" in only:
        out["+ sinkhorn_kd, paper weight 0.8·0.001 (after)"] = [sinkd_term(key=keys["key"], mask_key=keys["mask_key"])]
    if sinkd and "ablation" in only:
        out["+ sinkhorn_kd, weight 0.8 (ablation)"] = [sinkd_term(key=keys["key"], mask_key=keys["mask_key"],
                                                                 scale=1.0)]
    return out


# ----------------------------------------------------------------------------- parts

def run_graph(args) -> list[dict]:
    from edgesdk.models.teachers.hgnn import train_hgnn
    from students_mlp import graphs
    recipe = get_recipe("lighthgnn")
    variants = ot_variants({"key": "logits", "mask_key": "subsample"}, 0.8, sinkd=True, only=args.variants)
    rows = []
    for seed in range(args.seeds):
        for name, hg in graphs(seed).items():
            for setting in ("transductive", "inductive"):
                t0 = time.perf_counter()
                torch.set_num_threads(1)
                teacher = train_hgnn(hg, epochs=args.teacher_epochs, seed=seed, inductive=setting == "inductive")
                for label, extra in variants.items():
                    t1 = time.perf_counter()
                    r = recipe(hg, setting=setting, teacher=teacher, seed=seed, steps=args.graph_steps, threads=1,
                               extra_losses=extra, subsample=args.subsample)
                    rows.append({"part": "graph", "task": f"{name} {setting}", "seed": seed, "variant": label,
                                 "metrics": {"accuracy": r.metrics["student_acc"]}, "teacher": r.metrics["teacher_acc"],
                                 "train_s": time.perf_counter() - t1,
                                 "last_terms": r.info["history"][-1]["terms"]})
                log(f"graph {name} {setting} seed {seed}: "
                    + ", ".join(f"{r['variant'].split(' (')[0]} {r['metrics']['accuracy']:.3f}"
                                for r in rows[-len(variants):]) + f" ({time.perf_counter() - t0:.0f}s)")
    return rows


def run_sentence(args) -> list[dict]:
    from edgesdk import models
    from edgesdk.models.data.sentences import stdlib_sentences
    from edgesdk.models.data.stdlib import DEFAULT_FRACTIONS, split_name
    from edgesdk.models.distill.recipes import teacher_pass
    from edgesdk.models.teachers.hf import minilm_encoder

    encoder = minilm_encoder()
    texts = [t for t, _ in stdlib_sentences(limit=args.sentences)]
    which = [split_name(t, DEFAULT_FRACTIONS, salt="sentence") for t in texts]
    tok = models.create("tokenbag").tokenizer
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    emb, word_vecs = teacher_pass(encoder, texts, tok.word_spans)
    log(f"sentence: teacher pass over {len(texts)} texts in {time.perf_counter() - t0:.0f}s")
    split = {k: [i for i, w in enumerate(which) if w == k] for k in ("train", "val", "test")}
    tr, va, te = split["train"], split["val"][:300], split["test"]
    recipe = get_recipe("tokenbag")
    variants = ot_variants({"key": "logits", "mask_key": None}, 1.0, sinkd=False, only=args.variants)
    rows = []
    for seed in range(args.seeds_other):
        for label, extra in variants.items():
            t1 = time.perf_counter()
            r = recipe([texts[i] for i in tr], emb[tr], word_vectors=[word_vecs[i] for i in tr],
                       val_texts=[texts[i] for i in va], val_emb=emb[va], eval_texts=[texts[i] for i in te],
                       eval_emb=emb[te], steps=args.tokenbag_steps, seed=seed, threads=1, extra_losses=extra)
            rows.append({"part": "sentence", "task": f"MiniLM -> token bag ({len(tr)} train / {len(te)} test texts)",
                         "seed": seed, "variant": label,
                         "metrics": {"spearman": r.metrics["spearman"], "top10_overlap": r.metrics["top10_overlap"]},
                         "train_s": time.perf_counter() - t1, "last_terms": r.info["history"][-1]["terms"]})
            log(f"sentence seed {seed} {label}: Spearman {r.metrics['spearman']:.4f} "
                f"top10 {r.metrics['top10_overlap']:.4f} ({time.perf_counter() - t1:.0f}s)")
    return rows


def run_encdec(args) -> list[dict]:
    from edgesdk.models.data import funcname as fn
    from edgesdk.models.distill.recipes.encdec import encdec_from_decoder
    from edgesdk.models.teachers.train_funcname import load_funcname_teacher

    torch.set_num_threads(1)
    teacher = load_funcname_teacher()
    test = fn.funcname_pairs("test")[:args.n_eval]
    # feature_ot left out here: the graph and sentence parts measure what its convergence changes
    variants = ot_variants({"key": "logits", "mask_key": "kl_mask"}, 0.8, sinkd=True, feature_ot=False,
                           only=args.variants)
    rows = []
    for seed in range(args.seeds_other):
        for label, extra in variants.items():
            t1 = time.perf_counter()
            r = encdec_from_decoder(teacher=teacher, steps=args.encdec_steps, batch_size=16, seed=seed, threads=1,
                                    eval_pairs=test, extra_losses=extra)
            m = r.metrics["student"]
            names = greedy_names(r.student, test)
            rows.append({"part": "encdec", "task": f"body -> name, {args.encdec_steps} steps, {len(test)} test pairs",
                         "seed": seed, "variant": label,
                         "metrics": {"char_f1": m["char_f1"], "exact_match": m["exact_match"],
                                     "distinct_names": len(set(names))},
                         "top_names": Counter(names).most_common(3),
                         "teacher": r.metrics["teacher"]["char_f1"], "train_s": time.perf_counter() - t1,
                         "last_terms": r.info["history"][-1]["terms"]})
            log(f"encdec seed {seed} {label}: char F1 {m['char_f1']:.4f} EM {m['exact_match']:.4f}, "
                f"{len(set(names))} distinct names ({time.perf_counter() - t1:.0f}s)")
    return rows


@torch.no_grad()
def greedy_names(model, pairs, batch_size: int = 64) -> list[str]:
    """The greedy names `evaluate_encdec` scores: how many distinct ones a student produces shows
    whether char F1 measures names or one string that overlaps many names."""
    from edgesdk.models.data import funcname as fn
    model.eval()
    out = []
    for i in range(0, len(pairs), batch_size):
        b = fn.encdec_batch(pairs[i:i + batch_size])
        out += [fn.decode_name(r) for r in model.generate(b["src"], b["src_len"], fn.MAX_NAME + 1).tolist()]
    return out


# ----------------------------------------------------------------------------- report

def summarize(rows: list[dict]) -> list[dict]:
    """Per (task, variant, metric): mean ± std over seeds and the paired difference to 'recipe'."""
    out = []
    tasks = list(dict.fromkeys((r["part"], r["task"]) for r in rows))
    for part, task in tasks:
        rs = [r for r in rows if r["task"] == task]
        variants = list(dict.fromkeys(r["variant"] for r in rs))
        base = {r["seed"]: r for r in rs if r["variant"] == "recipe"}
        for v in variants:
            vs = sorted((r for r in rs if r["variant"] == v), key=lambda r: r["seed"])
            for metric in vs[0]["metrics"]:
                vals = np.array([r["metrics"][metric] for r in vs])
                diffs = np.array([r["metrics"][metric] - base[r["seed"]]["metrics"][metric] for r in vs])
                out.append({"part": part, "task": task, "variant": v, "metric": metric, "seeds": len(vs),
                            "mean": float(vals.mean()), "std": float(vals.std()), "values": vals.tolist(),
                            "diff_mean": float(diffs.mean()), "diff_min": float(diffs.min()),
                            "diff_max": float(diffs.max()), "better": int((diffs > 0).sum()),
                            "worse": int((diffs < 0).sum()),
                            "train_s": float(np.mean([r["train_s"] for r in vs]))})
    return out


def table(summary: list[dict], markdown: bool) -> str:
    headers = ["task", "variant", "metric", "seeds", "mean ± std", "per seed", "Δ vs recipe: mean [min, max]",
               "seeds better / worse", "train s / run"]
    rows = []
    for s in summary:
        pct = s["metric"] in ("accuracy", "exact_match")
        count = s["metric"] == "distinct_names"
        f = (lambda x: f"{100 * x:.1f}") if pct else (lambda x: f"{x:.1f}") if count else (lambda x: f"{x:.4f}")
        d = (lambda x: f"{100 * x:+.1f}") if pct else (lambda x: f"{x:+.1f}") if count else (lambda x: f"{x:+.4f}")
        same = s["variant"] == "recipe"
        rows.append([s["task"], s["variant"], s["metric"] + (" %" if pct else ""), str(s["seeds"]),
                     f"{f(s['mean'])} ± {f(s['std'])}", ", ".join(f(x) for x in s["values"]),
                     "—" if same else f"{d(s['diff_mean'])} [{d(s['diff_min'])}, {d(s['diff_max'])}]",
                     "—" if same else f"{s['better']} / {s['worse']}", f"{s['train_s']:.0f}"])
    return text_table(headers, rows, markdown)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", choices=("graph", "sentence", "encdec"), default=["graph", "sentence", "encdec"])
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                    help="extra terms to compare with the recipe alone (default all)")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (smoke run, not for publishing)")
    ap.add_argument("--markdown", action="store_true", help="print the table as markdown")
    ap.add_argument("--json", metavar="PATH", help="also write every run here")
    ap.add_argument("--seeds", type=int, default=5, help="graph seeds (default 5)")
    ap.add_argument("--seeds-other", type=int, default=3, help="sentence and encdec seeds (default 3)")
    ap.add_argument("--teacher-epochs", type=int, default=200, help="HGNN epochs (default 200)")
    ap.add_argument("--graph-steps", type=int, default=200, help="MLP student full-batch steps (default 200)")
    ap.add_argument("--subsample", type=int, default=64, help="nodes per step seen by the OT terms (default 64)")
    ap.add_argument("--sentences", type=int, default=4000, help="stdlib texts embedded by MiniLM (default 4000)")
    ap.add_argument("--tokenbag-steps", type=int, default=400, help="token-bag steps (default 400)")
    ap.add_argument("--encdec-steps", type=int, default=200, help="enc-dec steps, 40%% CE warm-up (default 200, as benchmarks/encdec.py)")
    ap.add_argument("--n-eval", type=int, default=300, help="held-out function-name pairs (default 300)")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.seeds_other, args.teacher_epochs, args.graph_steps = min(args.seeds, 1), 1, 30, 20
        args.sentences, args.tokenbag_steps, args.encdec_steps, args.n_eval = 600, 20, 10, 20
    env = environment(VERSION_PACKAGES)
    env["loadavg_start"] = os.getloadavg()
    t0 = time.perf_counter()
    rows, phases = [], {}
    for part, fn_ in (("graph", run_graph), ("sentence", run_sentence), ("encdec", run_encdec)):
        if part in args.parts:
            t1 = time.perf_counter()
            rows += fn_(args)
            phases[part] = time.perf_counter() - t1
    env["loadavg_end"] = os.getloadavg()
    summary = summarize(rows)
    total = time.perf_counter() - t0
    v = env["versions"]
    print(f"Environment: {env['date']}; CPU {env['cpu']}; Python {env['python']}; "
          + ", ".join(f"{k} {v[k]}" for k in VERSION_PACKAGES)
          + f"; 1 torch thread; load average {env['loadavg_start'][0]:.1f} at start, {env['loadavg_end'][0]:.1f} at end")
    print(f"Run: {total:.0f} s (" + ", ".join(f"{k} {s:.0f} s" for k, s in phases.items()) + ")"
          + ("; QUICK RUN (smoke only)" if args.quick else ""))
    budget = {"graph": f"graph {args.seeds} seeds x {args.graph_steps} steps (HGNN {args.teacher_epochs} epochs, OT terms "
                       f"on {args.subsample} nodes/step)",
              "sentence": f"sentence {args.seeds_other} seeds x {args.tokenbag_steps} steps on {args.sentences} texts",
              "encdec": f"encdec {args.seeds_other} seeds x {args.encdec_steps} steps, {args.n_eval} test pairs"}
    print("Budget: " + "; ".join(b for k, b in budget.items() if k in args.parts)
          + "; variants: " + ", ".join(args.variants))
    print()
    print(table(summary, args.markdown))
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": "edgesdk.bench.losses_faithful/1", "environment": env,
                                               "args": vars(args), "runs": rows, "summary": summary,
                                               "phases_s": phases, "total_s": total}, indent=1, default=str))
        log(f"raw results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
