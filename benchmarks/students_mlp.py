"""MLP students (issue #5): quality against their teachers and latency, teacher vs student.

Two students, each distilled by its recipe in `models.distill.recipes`:

  graph     LightHGNN / LightHGNN+: a graph-free MLP (`mlp-small`, 64/32 -> 128 -> classes) from
            an HGNN teacher, on two hypergraphs — scikit-learn digits (k-NN hyperedges, k=10) and
            a synthetic contextual hypergraph (2000 nodes, homophily 0.8, feature noise 2.0: the
            features alone are weak, the graph matters). Label-scarce splits like LightHGNN's
            (train 10%, val 10%, test 60%, test_inductive 20%), 5 seeds (graph/split seed
            = model seed). Transductive: scored on test + test_inductive; inductive: teacher and
            student trained without the 20% test_inductive nodes, scored on them (the student
            from their features only, the teacher on the full graph).
            T = HGNN, S0 = the same MLP with CE only (same steps, seed, best-val selection),
            S = LightHGNN (CE + KL on all nodes) and LightHGNN+ (+ reliable-hyperedge term).
            Inductive also reports the feature-only ceiling: the same MLP trained with CE on
            the true labels of *every* training-graph node (an oracle) — how much of T any
            graph-free student could reach on unseen nodes.
  sentence  token-bag encoder (`tokenbag`) from all-MiniLM-L6-v2 on stdlib docstrings/comments
            (split by text hash as `models.data.sentences`): one teacher pass gives sentence
            embeddings and contextual word vectors (timed: the slow part); the student starts
            from those contextual vectors and is trained with cosine + relational loss.
            Scores on the held-out test split: Spearman between teacher and student pairwise
            cosine similarities, and top-10 retrieval overlap. T = 1 (the teacher against
            itself); S0 = the same token bag initialised from the teacher's contextual word
            vectors and not trained (what the teacher gives before any distillation step; the
            random untrained bag, a lexical-overlap floor, is reported beside it).

gap recovered = (S − S0) / (T − S0), per seed, then averaged.

Every trained student is converted with `edgesdk.convert` to onnx-cpu, executorch-xnnpack and
litert-cpu (each conversion verified against PyTorch). Latency on onnx-cpu and
executorch-xnnpack: per target, all series loaded with `runtime.load` and timed with
`Session.run`, interleaved round-robin in one process (order rotated each round), after
warm-up; speed-up = median of per-round teacher/student ratios with a bootstrap 95% CI.
  graph:    amortized: HGNN full graph (`HGNNFullGraph`: the normalised incidence baked in
            as padded gathers, all N nodes) vs the MLP on all N nodes; per node: the HGNN on
            the node's own k-hop sub-hypergraph (k = its 2 layers: every hyperedge of the node
            and of its neighbours, with all their members; one artifact per sampled node) vs
            the MLP on that one node (batch 1). The sub-hypergraph cuts the degrees of its
            outermost nodes, so its prediction for the node is close to, not exactly, the
            full graph's: the logit difference and argmax agreement are reported.
  sentence: MiniLM (batch 1, 32 tokens, pooled + normalised) vs the token bag (batch 1, 128
            token slots).
Targets: gap recovered >= 60%; student >= 10x faster than the teacher; token bag Spearman
>= 0.8 at >= 50x lower latency.

Method: /work/shared/BENCHMARKING.md. Training runs with `--train-threads` torch threads (1:
faster than 2 on this shared machine); every timed session uses the runtime's default thread
count (all usable cores), the same for teacher and student.

Usage::

    python benchmarks/students_mlp.py --markdown          # full run (~5 min on 2 cores)
    python benchmarks/students_mlp.py --quick             # smoke run, numbers not for publishing
    python benchmarks/students_mlp.py --parts graph --json /tmp/students.json
"""

from __future__ import annotations

import argparse
import json
import os
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

from edgesdk import models  # noqa: E402
from edgesdk import runtime  # noqa: E402
import edgesdk  # noqa: E402
from edgesdk.models.data.hypergraph import digits_hypergraph, synthetic_hypergraph  # noqa: E402
from edgesdk.models.distill.recipes import HGNNFullGraph, get_recipe, teacher_pass  # noqa: E402
from quantization import interleave  # noqa: E402
from edgesdk.runtime.stats import summarize  # noqa: E402
from runtime_overhead import bootstrap_median_ci  # noqa: E402
from runtime_overhead import environment as shared_environment  # noqa: E402
from runtime_overhead import text_table as _md  # noqa: E402

GAP_GOAL = 0.60
SPEEDUP_GOAL = 10.0
SENTENCE_SPEEDUP_GOAL = 50.0
SPEARMAN_GOAL = 0.80
NOISY_CV = 0.10
FRACTIONS = {"train": 0.1, "val": 0.1, "test": 0.6, "test_inductive": 0.2}
SYNTHETIC = {"n_nodes": 2000, "homophily": 0.8, "noise": 2.0}
TIMED_TARGETS = ("onnx-cpu", "executorch-xnnpack")
EXPORT_TARGETS = ("onnx-cpu", "executorch-xnnpack", "litert-cpu")
TEACHER_SEQ = 32
VERSION_PACKAGES = ("torch", "executorch", "onnxruntime", "ai-edge-litert", "litert-torch", "transformers",
                    "numpy", "scikit-learn")


def log(msg: str) -> None:
    print(f"# {msg}", file=sys.stderr, flush=True)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# ----------------------------------------------------------------------------- graph quality

def graphs(seed: int) -> dict:
    return {"digits": digits_hypergraph(k=10, seed=seed, fractions=FRACTIONS),
            "synthetic": synthetic_hypergraph(**SYNTHETIC, seed=seed, fractions=FRACTIONS)}


def graph_quality(args) -> tuple[list[dict], dict]:
    """Per dataset x setting: T, S0, LightHGNN, LightHGNN+, ceiling over seeds. Returns rows and
    the seed-0 models for export/latency."""
    from edgesdk.models.teachers.hgnn import train_hgnn
    recipe = get_recipe("lighthgnn")
    runs: dict[tuple[str, str], list[dict]] = {}
    keep = {}
    for seed in range(args.seeds):
        for name, hg in graphs(seed).items():
            for setting in ("transductive", "inductive"):
                t0 = time.perf_counter()
                before = torch.get_num_threads()
                torch.set_num_threads(args.train_threads)
                try:
                    teacher = train_hgnn(hg, epochs=args.teacher_epochs, seed=seed, inductive=setting == "inductive")
                finally:
                    torch.set_num_threads(before)
                teacher_s = time.perf_counter() - t0
                common = dict(setting=setting, teacher=teacher, seed=seed, steps=args.student_steps,
                              threads=args.train_threads)
                res = {"seed": seed, "teacher_train_s": teacher_s,
                       "task": f"{name} ({hg.num_nodes} nodes, {hg.num_edges} hyperedges)"}
                variants = {"S0": dict(kd=False), "LightHGNN": dict(topology=False), "LightHGNN+": {}}
                if setting == "inductive":
                    variants["ceiling"] = dict(kd=False, label_split=None)
                for label, kw in variants.items():
                    r = recipe(hg, **common, **kw)
                    res[label] = r.metrics["student_acc"]
                    res[f"{label}_train_s"] = r.timings["student_train_s"]
                    res["T"] = r.metrics["teacher_acc"]
                    res["eval_nodes"] = r.metrics["eval_nodes"]
                    if label == "LightHGNN+":
                        res["edges_kept_mean"] = r.info["sampled_edges_mean"]
                        res["edges"] = int(len(r.info["reliability"]))
                        if seed == 0 and setting == "transductive":
                            keep[name] = {"hg": hg, "teacher": teacher, "student": r.student}
                res["gap"] = {k: (res[k] - res["S0"]) / (res["T"] - res["S0"]) if res["T"] != res["S0"] else float("nan")
                              for k in ("LightHGNN", "LightHGNN+", "ceiling") if k in res}
                runs.setdefault((name, setting), []).append(res)
                log(f"graph {name} {setting} seed {seed}: T {res['T']:.3f} S0 {res['S0']:.3f} "
                    f"L {res['LightHGNN']:.3f} L+ {res['LightHGNN+']:.3f}"
                    + (f" ceiling {res['ceiling']:.3f}" if "ceiling" in res else "")
                    + f" ({time.perf_counter() - t0:.1f}s)")
    rows = []
    for (name, setting), rs in runs.items():
        agg = {k: (float(np.mean([r[k] for r in rs])), float(np.std([r[k] for r in rs])))
               for k in ("T", "S0", "LightHGNN", "LightHGNN+", "ceiling") if k in rs[0]}
        gaps = {k: [r["gap"][k] for r in rs] for k in rs[0]["gap"]}
        teacher = keep.get(name, {}).get("teacher")
        student = keep.get(name, {}).get("student")
        rows.append({"task": rs[0]["task"], "dataset": name,
                     "setting": setting, "seeds": len(rs), "eval_nodes": rs[0]["eval_nodes"], "scores": agg,
                     "gap": {k: (float(np.mean(v)), v) for k, v in gaps.items()},
                     "teacher_params": n_params(teacher) if teacher is not None else None,
                     "student_params": n_params(student) if student is not None else None,
                     "edges_kept_mean": float(np.mean([r["edges_kept_mean"] for r in rs])),
                     "edges": rs[0]["edges"], "runs": rs})
    return rows, keep


# ----------------------------------------------------------------------------- sentence quality

def sentence_quality(args, encoder, load_s: float) -> tuple[dict, dict]:
    from edgesdk.models.data.sentences import stdlib_sentences
    from edgesdk.models.data.stdlib import DEFAULT_FRACTIONS, split_name

    recipe = get_recipe("tokenbag")
    t0 = time.perf_counter()
    texts = [t for t, _ in stdlib_sentences(limit=args.sentences)]
    which = [split_name(t, DEFAULT_FRACTIONS, salt="sentence") for t in texts]
    data_s = time.perf_counter() - t0
    tok = models.create("tokenbag").tokenizer
    before = torch.get_num_threads()
    torch.set_num_threads(args.train_threads)
    t0 = time.perf_counter()
    try:
        emb, word_vecs = teacher_pass(encoder, texts, tok.word_spans)
    finally:
        torch.set_num_threads(before)
    teacher_s = time.perf_counter() - t0
    log(f"sentence: teacher pass over {len(texts)} texts in {teacher_s:.1f}s ({teacher_s / len(texts) * 1e3:.1f} ms/text)")
    split = {k: [i for i, w in enumerate(which) if w == k] for k in ("train", "val", "test")}
    tr, va, te = split["train"], split["val"][:args.val_texts], split["test"]
    train_texts, val_texts, test_texts = ([texts[i] for i in idx] for idx in (tr, va, te))
    common = dict(eval_texts=test_texts, eval_emb=emb[te], seed=0, threads=args.train_threads)
    res = {}
    r0 = recipe(train_texts, emb[tr], train=False, **common)
    res["S0"] = r0.metrics
    ri = recipe(train_texts, emb[tr], word_vectors=[word_vecs[i] for i in tr], train=False, **common)
    res["init"] = ri.metrics
    rs = recipe(train_texts, emb[tr], word_vectors=[word_vecs[i] for i in tr], val_texts=val_texts,
                val_emb=emb[va], steps=args.tokenbag_steps, **common)
    res["S"] = rs.metrics
    hist = rs.info["history"]
    out = {"texts": len(texts), "train": len(tr), "val": len(va), "test": len(te), "data_s": data_s,
           "teacher_load_s": load_s, "teacher_pass_s": teacher_s, "teacher_ms_per_text": teacher_s / len(texts) * 1e3,
           "student_train_s": rs.timings["student_train_s"], "init_s": rs.timings.get("init_s", 0.0),
           "steps": args.tokenbag_steps, "best_eval": rs.info.get("best_eval"), "val_spearman": rs.info.get("val_spearman"),
           "loss_first": hist[0]["loss"], "loss_last": hist[-1]["loss"], "scores": res,
           "teacher_params": n_params(encoder.model), "student_params": n_params(rs.student)}
    for k in ("spearman", "top10_overlap"):
        s0, si, s = res["S0"][k], res["init"][k], res["S"][k]
        out[f"gap_{k}"] = (s - si) / (1.0 - si)          # distillation's share, from the contextual-init floor
        out[f"gap_random_{k}"] = (s - s0) / (1.0 - s0)   # from the random, untrained bag (the old floor)
    log(f"sentence: S0 {res['S0']['spearman']:.3f} init {res['init']['spearman']:.3f} S {res['S']['spearman']:.3f} "
        f"(train {rs.timings['student_train_s']:.1f}s)")
    return out, {"encoder": encoder, "student": rs.student, "example_text": test_texts[0]}


# ----------------------------------------------------------------------------- export + latency

class PooledEncoder(torch.nn.Module):
    """MiniLM as deployed: (input_ids, attention_mask) -> L2-normalised mean-pooled embedding."""

    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids, attention_mask):
        return self.encoder(input_ids, attention_mask)


def convert(model, example, target, out_dir, name, rows: list, label: str):
    t0 = time.perf_counter()
    try:
        art = edgesdk.convert(model.eval(), example, target, out_dir=out_dir, name=name)
    except Exception as e:  # noqa: BLE001 - reported as a row, never hidden
        rows.append({"model": label, "target": target, "status": "ERROR", "error": f"{type(e).__name__}: {e}"[:300],
                     "convert_s": time.perf_counter() - t0})
        log(f"convert {label} {target}: ERROR {type(e).__name__}: {str(e)[:200]}")
        return None
    rows.append({"model": label, "target": target, "status": "OK", "max_abs_err": art.verification["max_abs_err"],
                 "size_bytes": art.size_bytes, "convert_s": time.perf_counter() - t0})
    log(f"convert {label} {target}: ok in {time.perf_counter() - t0:.1f}s, max |err| {art.verification['max_abs_err']:.2e}")
    return art


def time_group(arts: dict, inputs: dict, rounds: int, warmup: int) -> dict:
    """Load every artifact, check it answers, then time all of them interleaved."""
    sessions = {k: runtime.load(a.path) for k, a in arts.items()}
    runs = {}
    for k, sess in sessions.items():
        x = inputs[k]
        runs[k] = (lambda f=sess.run, i=x: f(i))
    samples, cold = interleave(runs, rounds, warmup)
    return {"samples_ns": samples, "cold_ns": cold, "threads": {k: s.threads for k, s in sessions.items()}}


def speedup(samples: dict, teacher: str, student: str, resamples: int, rng) -> dict:
    t, s = samples[teacher], samples[student]
    ratio = t / s
    lo, hi = bootstrap_median_ci(ratio, resamples, rng)
    st, ss = summarize((t / 1e6).tolist()), summarize((s / 1e6).tolist())
    return {"teacher": st, "student": ss, "median_speedup": float(np.median(ratio)), "ci95": (lo, hi),
            "noisy": [k for k, v in (("teacher", st), ("student", ss)) if v["cv"] > NOISY_CV]}


def np_inputs(example) -> list:
    return [np.ascontiguousarray(t.numpy()) for t in example]


def k_hop_subgraph(hg, node: int, k: int):
    """The sub-hypergraph the HGNN's k layers read for ``node``: every hyperedge incident to the
    nodes within k - 1 hops, with all their members. Returns (sub-hypergraph, node's new index)."""
    from edgesdk.models.data.hypergraph import Hypergraph
    inner, edges = {node}, []
    member_of: dict[int, list[int]] = {}
    for j, e in enumerate(hg.hyperedges):
        for v in e.tolist():
            member_of.setdefault(v, []).append(j)
    for hop in range(k):
        edges = sorted({j for v in inner for j in member_of.get(v, [])})
        if hop < k - 1:
            inner = {v for j in edges for v in hg.hyperedges[j].tolist()}
    keep = sorted({v for j in edges for v in hg.hyperedges[j].tolist()} | {node})
    where = {v: i for i, v in enumerate(keep)}
    idx = torch.tensor(keep)
    sub = Hypergraph(hg.x[idx], hg.y[idx], [torch.tensor([where[v] for v in hg.hyperedges[j].tolist()])
                                            for j in edges], hg.num_classes, name=f"{hg.name}-node{node}")
    return sub, where[node]


def graph_latency(keep: dict, args, out_dir: str, export_rows: list, rng) -> list[dict]:
    rows = []
    for name, k in keep.items():
        hg, teacher, student = k["hg"], k["teacher"], k["student"]
        full = HGNNFullGraph(teacher, hg).eval()
        with torch.no_grad():
            from edgesdk.models.distill.recipes import GraphTeacher
            full_logits = GraphTeacher(teacher, hg)(hg.x)
            diff = float((full(hg.x) - full_logits).abs().max())
        log(f"graph {name}: HGNNFullGraph vs HGNN max |diff| {diff:.2e}")
        # sampled nodes: evenly spaced over the held-out test split
        test = hg.splits["test"]
        nodes = [int(test[i]) for i in np.linspace(0, len(test) - 1, args.sub_nodes).astype(int)]
        subs = {}
        for v in nodes:
            sub, at = k_hop_subgraph(hg, v, teacher.cfg.n_layers)
            mod = HGNNFullGraph(teacher, sub).eval()
            with torch.no_grad():
                got = mod(sub.x)[at]
            subs[v] = {"module": mod, "x": (sub.x,), "nodes": sub.num_nodes, "edges": sub.num_edges,
                       "logit_diff": float((got - full_logits[v]).abs().max()),
                       "same_argmax": bool(int(got.argmax()) == int(full_logits[v].argmax()))}
        log(f"graph {name}: {len(nodes)} sampled nodes' 2-hop sub-hypergraphs: "
            + ", ".join(f"{s['nodes']} nodes/{s['edges']} edges" for s in subs.values()))
        x_all, x_one = (hg.x,), (hg.x[:1],)
        for target in EXPORT_TARGETS:
            convert(student, x_one, target, out_dir, f"mlp-{name}-node-{target}", export_rows, f"MLP student ({name})")
        for target in TIMED_TARGETS:
            arts = {"teacher_full": convert(full, x_all, target, out_dir, f"hgnn-{name}-{target}", export_rows,
                                            f"HGNN teacher, full graph ({name})"),
                    "student_full": convert(student, x_all, target, out_dir, f"mlp-{name}-all-{target}", export_rows,
                                            f"MLP student, all nodes ({name})"),
                    "student_node": runtime_path(export_rows, out_dir, f"mlp-{name}-node-{target}")}
            inputs = {"teacher_full": np_inputs(x_all), "student_full": np_inputs(x_all), "student_node": np_inputs(x_one)}
            for v, sb in subs.items():
                arts[f"teacher_sub{v}"] = convert(sb["module"], sb["x"], target, out_dir, f"hgnn-{name}-sub{v}-{target}",
                                                  export_rows, f"HGNN teacher, node {v}'s 2-hop sub-hypergraph ({name})")
                inputs[f"teacher_sub{v}"] = np_inputs(sb["x"])
            if any(a is None for a in arts.values()):
                continue
            g = time_group(arts, inputs, args.rounds, args.warmup)
            sp = speedup(g["samples_ns"], "teacher_full", "student_full", args.resamples, rng)
            rows.append(_speedup_row(f"graph: {name}", target, f"HGNN, full graph ({hg.num_nodes} nodes)",
                                     f"MLP, all {hg.num_nodes} nodes (amortized)", g, "teacher_full", args.rounds,
                                     SPEEDUP_GOAL, sp))
            for v, sb in subs.items():
                sp = speedup(g["samples_ns"], f"teacher_sub{v}", "student_node", args.resamples, rng)
                rows.append(_speedup_row(
                    f"graph: {name}", target,
                    f"HGNN, node {v}'s 2-hop sub-hypergraph ({sb['nodes']} nodes, {sb['edges']} edges; logit diff vs "
                    f"full graph {sb['logit_diff']:.2g}, argmax {'same' if sb['same_argmax'] else 'DIFFERS'})",
                    "MLP, that 1 node", g, f"teacher_sub{v}", args.rounds, SPEEDUP_GOAL, sp))
            log(f"graph {name} {target}: timed {args.rounds} rounds")
    return rows


def _speedup_row(task: str, target: str, teacher_desc: str, student_desc: str, g: dict, teacher: str,
                 rounds: int, goal: float, sp: dict) -> dict:
    """One latency row: the timed group ``g`` (`time_group`) and its speed-up statistics ``sp``."""
    return {"task": task, "target": target, "teacher_desc": teacher_desc, "student_desc": student_desc,
            "threads": g["threads"][teacher], "rounds": rounds, "goal": goal,
            "cold_ms": {k: v / 1e6 for k, v in g["cold_ns"].items()}, **sp,
            "samples_ns": {k: v.tolist() for k, v in g["samples_ns"].items()}}


class _Art:
    def __init__(self, path):
        self.path = path


def runtime_path(export_rows: list, out_dir: str, name: str):
    """The artifact converted earlier under ``name`` (None if that conversion failed)."""
    p = Path(out_dir) / name
    return _Art(p) if (p / "manifest.json").is_file() else None


def sentence_latency(keep: dict, args, out_dir: str, export_rows: list, rng) -> list[dict]:
    enc, student, text = keep["encoder"], keep["student"], keep["example_text"]
    tok = enc.tokenizer([text], padding="max_length", max_length=TEACHER_SEQ, truncation=True, return_tensors="pt")
    t_example = (tok["input_ids"], tok["attention_mask"])
    s_example = student.tokenizer.encode([text])
    teacher = PooledEncoder(enc).eval()
    for target in EXPORT_TARGETS:
        convert(student, s_example, target, out_dir, f"tokenbag-{target}", export_rows, "token-bag student")
    rows = []
    for target in TIMED_TARGETS:
        arts = {"teacher": convert(teacher, t_example, target, out_dir, f"minilm-{target}", export_rows,
                                   f"MiniLM teacher (1x{TEACHER_SEQ} tokens)"),
                "student": runtime_path(export_rows, out_dir, f"tokenbag-{target}")}
        if any(a is None for a in arts.values()):
            rows.append({"task": "sentence", "target": target, "status": "ERROR",
                         "error": "a conversion failed (see the export table)"})
            continue
        inputs = {"teacher": np_inputs(t_example), "student": np_inputs(s_example)}
        g = time_group(arts, inputs, args.rounds, args.warmup)
        sp = speedup(g["samples_ns"], "teacher", "student", args.resamples, rng)
        rows.append(_speedup_row(
            "sentence: MiniLM -> token bag", target, f"all-MiniLM-L6-v2, batch 1 x {TEACHER_SEQ} tokens",
            f"token bag, batch 1 x {student.cfg.max_tokens} token slots", g, "teacher", args.rounds,
            SENTENCE_SPEEDUP_GOAL, sp))
        log(f"sentence {target}: timed {args.rounds} rounds")
    return rows


# ----------------------------------------------------------------------------- report

def environment() -> dict:
    return {**shared_environment(VERSION_PACKAGES), "loadavg_start": os.getloadavg()}


def _pm(v: tuple[float, float], pct: bool = True) -> str:
    m, s = v
    return f"{m * 100:.1f} ± {s * 100:.1f}" if pct else f"{m:.3f} ± {s:.3f}"


GRAPH_HEADERS = ["task", "setting", "eval nodes x seeds", "teacher T (HGNN)", "plain S0", "LightHGNN S",
                 "LightHGNN+ S", "gap recovered, LightHGNN+ (per seed)", "feature-only ceiling (its gap)",
                 "params T / S", "gap >= 60%"]


def graph_table(graph_rows: list[dict], markdown: bool) -> str:
    rows = []
    for r in graph_rows:
        sc, gap = r["scores"], r["gap"]
        g, per = gap["LightHGNN+"]
        ceil = f"{_pm(sc['ceiling'])} ({gap['ceiling'][0] * 100:.0f}%)" if "ceiling" in sc else "—"
        rows.append([r["task"], r["setting"], f"{r['eval_nodes']} x {r['seeds']}", _pm(sc["T"]), _pm(sc["S0"]),
                     f"{_pm(sc['LightHGNN'])} ({gap['LightHGNN'][0] * 100:.0f}%)", _pm(sc["LightHGNN+"]),
                     f"{g * 100:.0f}% (" + ", ".join(f"{x * 100:.0f}" for x in per) + ")", ceil,
                     f"{r['teacher_params']:,} / {r['student_params']:,}", "PASS" if g >= GAP_GOAL else "MISS"])
    return _md(GRAPH_HEADERS, rows, markdown)


SENTENCE_HEADERS = ["metric (held-out texts)", "teacher T", "random token bag, untrained",
                    "S0: contextual init only, untrained", "S: distilled token bag",
                    "gap recovered from S0 (from the random bag)", "params T / S", "goals"]


def sentence_table(sent: dict, markdown: bool) -> str:
    sc, rows = sent["scores"], []
    for k, label in (("spearman", "Spearman, teacher vs student pairwise cosine"),
                     ("top10_overlap", "top-10 retrieval overlap")):
        gap = sent["gap_" + k]
        goal = "—"
        if k == "spearman":
            goal = (f"gap >= 60%: {'PASS' if gap >= GAP_GOAL else 'MISS'}; Spearman >= {SPEARMAN_GOAL}: "
                    f"{'PASS' if sc['S'][k] >= SPEARMAN_GOAL else 'MISS'}")
        rows.append([label, "1 (itself)", f"{sc['S0'][k]:.3f}", f"{sc['init'][k]:.3f}", f"{sc['S'][k]:.3f}",
                     f"{gap * 100:.0f}% ({sent['gap_random_' + k] * 100:.0f}%)",
                     f"{sent['teacher_params']:,} / {sent['student_params']:,}", goal])
    return _md(SENTENCE_HEADERS, rows, markdown)


LATENCY_HEADERS = ["task", "target", "teacher", "student", "threads", "teacher p50 ms", "student p50 ms",
                   "speed-up [95% CI]", "CV T / S", "goal", "result"]


def latency_table(rows: list[dict], markdown: bool) -> str:
    out = []
    for r in rows:
        if r.get("status") == "ERROR":
            out.append([r["task"], r["target"], "ERROR: " + r["error"]] + [""] * (len(LATENCY_HEADERS) - 3))
            continue
        lo, hi = r["ci95"]
        cv = f"{r['teacher']['cv'] * 100:.0f}% / {r['student']['cv'] * 100:.0f}%"
        if r["noisy"]:
            cv += " (noisy)"
        ok = r["median_speedup"] >= r["goal"]
        out.append([r["task"], r["target"], r["teacher_desc"], r["student_desc"], str(r["threads"]),
                   f"{r['teacher']['p50']:.3f}", f"{r['student']['p50']:.4f}",
                   f"{r['median_speedup']:,.1f}x [{lo:,.1f}, {hi:,.1f}]", cv, f">= {r['goal']:g}x", "PASS" if ok else "MISS"])
    return _md(LATENCY_HEADERS, out, markdown)


def export_table(rows: list[dict], markdown: bool) -> str:
    out = []
    for r in rows:
        if r["status"] == "OK":
            out.append([r["model"], r["target"], "verified", f"{r['max_abs_err']:.1e}", f"{r['size_bytes'] / 1024:,.0f}",
                        f"{r['convert_s']:.1f}"])
        else:
            out.append([r["model"], r["target"], "ERROR: " + r["error"].replace("|", "/"), "", "", f"{r['convert_s']:.1f}"])
    return _md(["model", "target", "status", "max abs err vs PyTorch", "KiB", "convert s"], out, markdown)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("--quick", action="store_true", help="1 seed, few texts, few rounds (smoke run, not for publishing)")
    ap.add_argument("--parts", nargs="+", choices=("graph", "sentence"), default=["graph", "sentence"])
    ap.add_argument("--markdown", action="store_true", help="print the tables as markdown")
    ap.add_argument("--json", metavar="PATH", help="also write every number and raw latency sample here")
    ap.add_argument("--seeds", type=int, default=None, help="graph seeds (default 5; quick 1)")
    ap.add_argument("--teacher-epochs", type=int, default=200, help="HGNN training epochs (default 200)")
    ap.add_argument("--student-steps", type=int, default=200, help="MLP student steps, full batch (default 200)")
    ap.add_argument("--sentences", type=int, default=None, help="stdlib texts embedded by MiniLM (default 9000; quick 1200)")
    ap.add_argument("--val-texts", type=int, default=300, help="validation texts for checkpoint selection (default 300)")
    ap.add_argument("--tokenbag-steps", type=int, default=None, help="token-bag training steps (default 400; quick 100)")
    ap.add_argument("--rounds", type=int, default=None, help="timed interleaved rounds per target (default 300; quick 20)")
    ap.add_argument("--sub-nodes", type=int, default=3, help="test nodes whose 2-hop sub-hypergraph the teacher runs on")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up rounds (default 20; quick 3)")
    ap.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 1000; quick 200)")
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads for training and the teacher pass (default 1)")
    args = ap.parse_args(argv)
    q = args.quick
    args.seeds = args.seeds or (1 if q else 5)
    args.sentences = args.sentences or (1200 if q else 9000)
    args.tokenbag_steps = args.tokenbag_steps or (100 if q else 400)
    args.rounds = args.rounds or (20 if q else 300)
    args.warmup = args.warmup if args.warmup is not None else (3 if q else 20)
    args.resamples = args.resamples or (200 if q else 1000)
    if args.rounds < 10:
        ap.error("--rounds must be at least 10")

    env = environment()
    t_start = time.perf_counter()
    rng = np.random.default_rng(0)
    graph_rows, sent, latency_rows, export_rows, phases = [], None, [], [], {}
    encoder, load_s = None, 0.0
    if "sentence" in args.parts:
        # loaded first: transformers' lazy imports log through stderr, which conversions redirect
        from edgesdk.models.teachers.hf import minilm_encoder
        t0 = time.perf_counter()
        encoder = minilm_encoder()
        load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="edgesdk-students-") as tmp:
        if "graph" in args.parts:
            t0 = time.perf_counter()
            graph_rows, keep = graph_quality(args)
            phases["graph_quality_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            latency_rows += graph_latency(keep, args, tmp, export_rows, rng)
            phases["graph_export_latency_s"] = time.perf_counter() - t0
        if "sentence" in args.parts:
            t0 = time.perf_counter()
            sent, keep_s = sentence_quality(args, encoder, load_s)
            phases["sentence_quality_s"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            latency_rows += sentence_latency(keep_s, args, tmp, export_rows, rng)
            phases["sentence_export_latency_s"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    env["loadavg_end"] = os.getloadavg()
    print(report(env, args, graph_rows, sent, latency_rows, export_rows, phases, total))
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": "edgesdk.bench.students_mlp/1", "environment": env,
                                               "args": vars(args), "graph": graph_rows, "sentence": sent,
                                               "latency": latency_rows, "export": export_rows, "phases_s": phases,
                                               "total_s": total}, indent=1, default=str))
        log(f"raw results: {args.json}")
    return 0


def report(env, args, graph_rows, sent, latency_rows, export_rows, phases, total) -> str:
    v = env["versions"]
    threads = sorted({r["threads"] for r in latency_rows if "threads" in r})
    lines = [f"Environment: {env['date']}; CPU {env['cpu']} ({env['usable_cores']} usable cores); Python {env['python']}; "
             + ", ".join(f"{k} {v[k]}" for k in VERSION_PACKAGES)
             + f"; timed sessions: intra-op threads {threads or 'n/a'} (teacher and student alike); training and the "
             f"teacher pass: {args.train_threads} torch thread(s); load average {env['loadavg_start'][0]:.1f} at start, "
             f"{env['loadavg_end'][0]:.1f} at end",
             f"Run: {total:.0f} s in all (" + ", ".join(f"{k} {s:.0f}" for k, s in phases.items()) + ")"
             + ("; QUICK RUN (smoke only)" if args.quick else "")]
    if sent:
        lines.append(f"Sentences: {sent['texts']} stdlib docstrings/comments (split by text hash: {sent['train']} train, "
                     f"{sent['val']} val for checkpoint selection, {sent['test']} test); MiniLM teacher pass "
                     f"{sent['teacher_pass_s']:.1f} s ({sent['teacher_ms_per_text']:.1f} ms/text, the slow part; model load "
                     f"{sent['teacher_load_s']:.1f} s); token bag: contextual init {sent['init_s']:.1f} s, {sent['steps']} steps "
                     f"in {sent['student_train_s']:.1f} s (loss {sent['loss_first']:.3f} -> {sent['loss_last']:.3f}, best val "
                     f"Spearman {sent['val_spearman']:.3f} at check {sent['best_eval']})")
    if graph_rows:
        lines.append(f"Graphs: splits {FRACTIONS}; synthetic {SYNTHETIC}; HGNN {args.teacher_epochs} epochs, MLP "
                     f"{args.student_steps} full-batch Adam steps (lr 0.01, L2 5e-4, best val); LightHGNN+ keeps each "
                     "hyperedge per step with probability = its reliability (mean kept: "
                     + ", ".join(f"{r['dataset']}/{r['setting'][:5]} {r['edges_kept_mean']:.0f} of {r['edges']}" for r in graph_rows)
                     + ")")
    if graph_rows:
        lines += ["", "Graph students, accuracy % (mean ± std over seeds; gap recovered = (S − S0) / (T − S0) per seed, "
                  "averaged):", "", graph_table(graph_rows, args.markdown)]
    if sent:
        lines += ["", f"Token-bag student from MiniLM ({sent['train']} train texts, scored on {sent['test']} held-out "
                  "texts):", "", sentence_table(sent, args.markdown)]
    lines += ["",
              f"Latency (interleaved, {args.rounds} rounds after {args.warmup} warm-up; speed-up = median of per-round "
              f"teacher/student ratios, bootstrap {args.resamples} resamples):", "",
              latency_table(latency_rows, args.markdown), "", "Exports (edgesdk.convert, verified against PyTorch):", "",
              export_table(export_rows, args.markdown)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
