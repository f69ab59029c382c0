"""Generation students on the Qualcomm HTP (qnn-htp, the emulator in onnxruntime-qnn).

Three phases, each printing one table:

``scaling``  Do the emulator's own figures scale with the work? One MatMul (M, K) x (K, N) and
             the same with M or N doubled, each profiled ``--runs`` times (QNN detailed
             profiling: the run's accelerator cycles and execute µs, `runtime.qnn.accelerator_profile`).
             Reported: median cycles, run-to-run spread (max / min) and the doubled / base ratio.
             Scales = every ratio in [1.6, 2.5] and every spread <= 1.25.
``quality``  The trained students (as `make demo` caches them, see benchmarks/generation_quant.py)
             on qnn-htp in fp32 (fp16 on the HTP), uint8-static and uint16-static (w8a16: 16-bit
             activations, 8-bit weights), each program calibrated on its own inputs recorded while
             the fp32 programs generate from 32 training prompts. Per artifact: HTP placement per
             program, greedy agreement with the fp32 PyTorch programs over ``--prompts`` held-out
             prompts, quality (encdec char F1, mamba next-byte accuracy) and its change against
             the fp32 artifact, size against fp32. Goal: placement >= 95%, quality within 2%.
``ops``      One element-wise op between Q/DQ pairs (uint16 and uint8 activations, scales from the
             range given) on ONNX Runtime's CPU provider and on the HTP: max |CPU - HTP| and the
             HTP output's spread (0 = one value whatever the input). Found the emulator's 16-bit Log
             returning a constant when its output scale is below 2^-14 (`qnn_htp.log_islands`).
``pows``     The trained students converted twice, with and without `qnn_htp.square_pows`
             (``Pow(x, 2)`` -> ``Mul(x, x)``; switch ``SQUARE_POWS``), per ``--schemes``: conversion
             seconds (``verify_samples=1``, ``--gate-prompts`` for the quantized gate; after one warm-up
             conversion, the side converted first alternating by scheme), then per
             program the emulator's host p50 over ``--runs`` calls (both files interleaved, 1 thread),
             the Pow nodes' share of the simulator's cycles in the file without the rewrite, and
             max |out(with) - out(without)| on the same inputs.
``npu``      The paper's comparison on the NPU: the encoder-decoder vs the equal-parameter GQA
             decoder-only model (benchmarks/encdec.py `latency_models`, random weights) at P=512,
             both converted to qnn-htp with the same scheme (``--scheme``). TTFT = encode + first
             decode step (enc-dec) vs prefill (decoder-only); per token = one step (static graphs:
             every position costs the same). Columns: FLOPs (manifest, torch's counter) and bytes
             (weights + inputs read per call, from the ONNX files) always; the emulator's cycles
             beside them, labelled not a phone's. Paper (Return of the Encoder, Qualcomm NPU, 8/16-bit):
             -47% TTFT, 4.7x throughput.

    cpu-shared python benchmarks/qnn_generation.py scaling
    cpu-shared python benchmarks/qnn_generation.py quality --prompts 100
    cpu-shared python benchmarks/qnn_generation.py npu --scheme uint16-static
    python benchmarks/qnn_generation.py ops
    cpu-exclusive python benchmarks/qnn_generation.py pows --students <demo cache> --schemes fp32 uint16-static
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import edgesdk  # noqa: E402
from edgesdk import runtime  # noqa: E402
from edgesdk.runtime import qnn  # noqa: E402
from runtime_overhead import environment  # noqa: E402
from runtime_overhead import text_table as table  # noqa: E402

SCHEMES = ("fp32", "uint8-static", "uint16-static")
GOAL_PLACEMENT, GOAL_QUALITY = 0.95, 0.02
PAPER = {"ttft_change": -0.47, "throughput": 4.7}
SCALE_RATIO, SCALE_SPREAD = (1.6, 2.5), 1.25
VERSION_PACKAGES = ("torch", "onnxruntime", "onnxruntime-qnn", "numpy")


# ----------------------------------------------------------------------------- scaling

def matmul_onnx(M: int, K: int, N: int, path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((K, N)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def cycle_scaling(base=(256, 512, 512), runs: int = 7, tmp: Path | None = None) -> list[dict]:
    """Base MatMul and M / N doubled: median cycles and µs over ``runs``, spread, ratio to base."""
    M, K, N = base
    tmp = Path(tmp or tempfile.mkdtemp(prefix="qnn-scaling-"))
    rows = []
    for label, shape in (("base", (M, K, N)), ("M x2", (2 * M, K, N)), ("N x2", (M, K, 2 * N))):
        path = tmp / f"mm_{'_'.join(map(str, shape))}.onnx"
        matmul_onnx(*shape, path)
        x = np.random.default_rng(1).standard_normal(shape[:2]).astype(np.float32)
        prof = qnn.accelerator_profile(path, [x], runs=runs)
        cyc, us = np.array(prof["cycles"]), np.array(prof["execute_us"])
        rows.append({"case": label, "shape": shape, "flops": 2 * shape[0] * shape[1] * shape[2],
                     "cycles": cyc.tolist(), "execute_us": us.tolist(),
                     "cycles_p50": float(np.median(cyc)), "cycles_spread": float(cyc.max() / cyc.min()),
                     "us_p50": float(np.median(us)), "us_spread": float(us.max() / us.min())})
    for r in rows:
        r["cycles_ratio"] = r["cycles_p50"] / rows[0]["cycles_p50"]
        r["us_ratio"] = r["us_p50"] / rows[0]["us_p50"]
    return rows


def scales(rows: list[dict]) -> bool:
    """Every doubled case within SCALE_RATIO of base, every case's spread within SCALE_SPREAD, over
    at least 3 runs each (one run has no spread to judge)."""
    return all(len(r["cycles"]) >= 3 for r in rows) and all(SCALE_RATIO[0] <= r["cycles_ratio"] <= SCALE_RATIO[1] for r in rows[1:]) \
        and all(r["cycles_spread"] <= SCALE_SPREAD for r in rows)


def scaling_table(rows, markdown: bool) -> str:
    head = ["MatMul (M, K, N)", "FLOPs vs base", "cycles p50", "cycles max/min", "cycles vs base", "execute µs p50",
            "µs max/min", "µs vs base"]
    body = [[f"{r['case']} {r['shape']}", f"{r['flops'] / rows[0]['flops']:.1f}x", f"{r['cycles_p50']:.3g}",
             f"{r['cycles_spread']:.2f}", f"{r['cycles_ratio']:.2f}x", f"{r['us_p50']:.0f}", f"{r['us_spread']:.2f}",
             f"{r['us_ratio']:.2f}x"] for r in rows]
    return table(head, body, markdown)


# ----------------------------------------------------------------------------- ops

# (op, input range, output range): Mamba's softplus feeds Log values in [1, 1 + e^-|x|]
# Log's output range 3.9 vs 4.0 (16-bit scale just under / at 2^-14) and [0.1, 10] -> [-2.3, 2.3]
OP_CASES = (("Log", 1.0, 1.07, 0.0, 0.068), ("Log", 1.0, 2.0, 0.0, 0.694), ("Log", 0.5, 2.0, -0.694, 0.694),
            ("Log", 1.0, 2.0, 0.0, 3.9), ("Log", 1.0, 2.0, 0.0, 4.0), ("Log", 0.1, 10.0, -2.3, 2.3),
            ("Exp", -5.0, 0.0, 0.0, 1.0), ("Softplus", -5.0, 5.0, 0.0, 5.0))


def qdq_op_onnx(op: str, lo: float, hi: float, out_lo: float, out_hi: float, bits: int, path: Path, n: int = 64):
    """x -> Q/DQ -> op -> Q/DQ -> y, asymmetric uint8/uint16 with min-max scales over [lo, hi] and
    [out_lo, out_hi] (each range widened to hold 0, as ONNX Runtime's calibrator does)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    levels, dt, npdt = (65535, TensorProto.UINT16, np.uint16) if bits == 16 else (255, TensorProto.UINT8, np.uint8)

    def qparams(a, b, tag):
        a, b = min(a, 0.0), max(b, 0.0)
        scale = (b - a) / levels
        return [numpy_helper.from_array(np.array(scale, np.float32), f"s{tag}"),
                numpy_helper.from_array(np.array(round(-a / scale), npdt), f"z{tag}")]
    inits = qparams(lo, hi, "i") + qparams(out_lo, out_hi, "o")
    nodes = [helper.make_node("QuantizeLinear", ["x", "si", "zi"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "si", "zi"], ["xd"]), helper.make_node(op, ["xd"], ["f"]),
             helper.make_node("QuantizeLinear", ["f", "so", "zo"], ["fq"]),
             helper.make_node("DequantizeLinear", ["fq", "so", "zo"], ["y"])]
    g = helper.make_graph(nodes, op, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)]), str(path))
    return np.linspace(lo, hi, n, dtype=np.float32).reshape(1, n)


def run_ops(tmp: Path | None = None) -> list[dict]:
    import onnxruntime as ort
    tmp = Path(tmp or tempfile.mkdtemp(prefix="qnn-ops-"))
    rows = []
    for op, lo, hi, out_lo, out_hi in OP_CASES:
        for bits in (16, 8):
            path = tmp / f"{op}_{lo}_{hi}_{bits}.onnx"
            x = qdq_op_onnx(op, lo, hi, out_lo, out_hi, bits, path)
            cpu = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            htp = qnn.session(path, threads=1).run(None, {"x": x})[0]
            out_scale = (max(out_hi, 0.0) - min(out_lo, 0.0)) / (65535 if bits == 16 else 255)
            rows.append({"op": op, "range": [lo, hi], "out_range": [out_lo, out_hi], "out_scale": out_scale, "bits": bits,
                         "cpu_vs_htp": float(np.abs(cpu - htp).max()),
                         "cpu_spread": float(np.ptp(cpu)), "htp_spread": float(np.ptp(htp))})
    return rows


def ops_table(rows, markdown: bool) -> str:
    head = ["op", "input range", "output range", "activations", "output scale", "max |CPU - HTP|", "CPU output spread",
            "HTP output spread", "verdict"]
    body = [[r["op"], f"[{r['range'][0]:g}, {r['range'][1]:g}]", f"[{r['out_range'][0]:g}, {r['out_range'][1]:g}]",
             f"uint{r['bits']}", f"{r['out_scale']:.3g}", f"{r['cpu_vs_htp']:.3g}",
             f"{r['cpu_spread']:.3g}", f"{r['htp_spread']:.3g}",
             "HTP constant" if r["htp_spread"] == 0.0 < r["cpu_spread"] else
             "close" if r["cpu_vs_htp"] <= 0.01 * r["cpu_spread"] else "differs"] for r in rows]
    return table(head, body, markdown)


# ----------------------------------------------------------------------------- quality

def convert_student(m, fam, scheme, cal, held, out: Path, log, gate_prompts: int):
    from edgesdk.converters import Artifact
    name = f"{fam}-qnn-htp-{scheme}"
    if (out / name / "manifest.json").is_file():
        return Artifact.open(out / name)
    t0 = time.perf_counter()
    # the conversion's own check runs on --gate-prompts held-out prompts (the emulator runs ~0.1-1 s a step);
    # this script measures on more
    ev = held[-gate_prompts:]
    kw = {"eval_data": ev} if scheme == "fp32" else {"calibration": cal, "eval_data": ev, "max_drop": None}
    art = edgesdk.convert(m, None, "qnn-htp", quantize=scheme, out_dir=out, name=name, verify_samples=1, **kw)
    log(f"converted {name} in {time.perf_counter() - t0:.0f}s")
    return art


def run_quality(args, log) -> list[dict]:
    from edgesdk.converters.programs import TorchPrograms
    from generation_quant import MAMBA_CONT, MAMBA_PROMPT, agreement, load_student, payload_bytes
    out, rows = Path(args.out), []
    for fam in args.families:
        m, cal, held, q, metric = load_student(fam, Path(args.students))
        prompts = held[:args.prompts]
        want = [TorchPrograms(m).generate(p, args.new_tokens).tokens for p in prompts]
        windows = q[:args.windows] if fam == "mamba" else None

        def quality(s, gens):
            if fam == "encdec":
                return q(gens)
            hits = sum(sum(s.score(w[:MAMBA_PROMPT], w[MAMBA_PROMPT:])["correct"]) for w in windows)
            return hits / (len(windows) * MAMBA_CONT)
        fam_rows = []
        for scheme in args.schemes:
            try:
                art = convert_student(m, fam, scheme, cal, held, out, log, args.gate_prompts)
            except edgesdk.errors.SdkError as e:
                log(f"{fam} {scheme}: FAILED {type(e).__name__}: {' '.join(str(e).split())[:400]}")
                fam_rows.append({"student": fam, "scheme": scheme, "error": f"{type(e).__name__}: {str(e)[:300]}"})
                continue
            s = runtime.load(art.path)
            got = [s.generate(p, args.new_tokens).tokens for p in prompts]
            place = art.manifest.extra["qnn"]["placement"]
            r = {"student": fam, "scheme": scheme, "prompts": len(prompts), "metric": metric,
                 "placement": {n: (p["on_npu"], p["compute_nodes"]) for n, p in place.items()},
                 "placement_min": min(p["fraction"] for p in place.values()),
                 "epcontext": sorted(art.manifest.extra["qnn"]["epcontext"]),
                 "greedy_agreement": agreement(want, got), "quality": quality(s, got),
                 "bytes": payload_bytes(art.path), "verification": art.verification.get("kind", "numerical")}
            fam_rows.append(r)
            log(f"{fam} {scheme}: placement {r['placement']}, agreement {r['greedy_agreement']:.3f}, "
                f"{metric} {r['quality']:.4f}")
        fp32 = next((r for r in fam_rows if r["scheme"] == "fp32" and "error" not in r), None)
        for r in fam_rows:
            if fp32 and "error" not in r:
                r["quality_delta"] = (r["quality"] - fp32["quality"]) / fp32["quality"] if fp32["quality"] else 0.0
                r["size_ratio"] = r["bytes"] / fp32["bytes"]
        rows += fam_rows
    return rows


def quality_table(rows, markdown: bool) -> str:
    head = ["student", "scheme", "HTP placement (per program)", "greedy agreement vs fp32 PyTorch", "quality",
            "Δ vs fp32 artifact", "size vs fp32", "verdict"]
    body = []
    for r in rows:
        if "error" in r:
            body.append([r["student"], r["scheme"], "—", "—", "—", "—", "—", "failed: " + r["error"][:120]])
            continue
        miss = []
        if r["placement_min"] < GOAL_PLACEMENT:
            miss.append(f"placement < {GOAL_PLACEMENT:.0%}")
        judged = "quality_delta" in r or r["scheme"] == "fp32"  # no fp32 row: no reference to judge against
        if judged and r.get("quality_delta", 0.0) < -GOAL_QUALITY:
            miss.append(f"quality < fp32 - {GOAL_QUALITY:.0%}")
        body.append([r["student"], r["scheme"] + (" (w8a16)" if r["scheme"] == "uint16-static" else ""),
                     ", ".join(f"{n} {a}/{b}" for n, (a, b) in r["placement"].items()),
                     f"{r['greedy_agreement']:.1%}", f"{r['metric']} {r['quality']:.4f}",
                     f"{r['quality_delta']:+.1%}" if "quality_delta" in r else "—",
                     (f"{r['size_ratio']:.2f}x" if "size_ratio" in r else "—") + f" ({r['bytes'] / 1e6:.2f} MB)",
                     "reference" if r["scheme"] == "fp32" else "not judged (no fp32 row)" if not judged
                     else "meets both" if not miss else "misses: " + ", ".join(miss)])
    return table(head, body, markdown)


# ----------------------------------------------------------------------------- npu

def onnx_bytes(path: Path) -> dict:
    """Bytes one call reads at least once: the weights (initializers, as stored) and the inputs."""
    import onnx
    m = onnx.load(str(path))
    size = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}
    weights = sum(int(np.prod(t.dims, dtype=np.int64)) * size.get(t.data_type, 4) for t in m.graph.initializer)
    inputs = sum(int(np.prod([d.dim_value for d in i.type.tensor_type.shape.dim], dtype=np.int64))
                 * size.get(i.type.tensor_type.elem_type, 4) for i in m.graph.input)
    return {"weights": weights, "inputs": inputs, "total": weights + inputs}


def program_cost(art, prog, runs: int) -> dict:
    spec = art.manifest.programs[prog]
    path = art.path / spec.file
    arrays = runtime.example_inputs(list(spec.inputs), seed=0)
    prof = qnn.accelerator_profile(path, arrays, runs=runs, provider_options=art.manifest.extra["qnn"]["provider_options"])
    return {"flops": art.manifest.extra["flops"]["per_program"].get(prog), **{f"bytes_{k}": v for k, v in onnx_bytes(path).items()},
            "cycles_p50": float(np.median(prof["cycles"])), "cycles_spread": float(max(prof["cycles"]) / min(prof["cycles"])),
            "us_p50": float(np.median(prof["execute_us"]))}


def run_pows(args, log) -> list[dict]:
    from edgesdk.converters import qnn_htp
    from generation_quant import load_student
    from export_provenance import _warm
    _warm("qnn-htp", "fp32")  # the process's first conversion imports the exporter: not inside either timed side
    rows = []
    for fam in args.families:
        m, cal, held, _, _ = load_student(fam, Path(args.students))
        for i, scheme in enumerate(args.schemes):
            arts, conv_s = {}, {}
            for side in ((False, True) if i % 2 == 0 else (True, False)):  # which side converts first alternates
                qnn_htp.SQUARE_POWS = side
                try:
                    t0 = time.perf_counter()
                    out = Path(args.out) / f"pows-{'with' if side else 'without'}"
                    shutil.rmtree(out / f"{fam}-qnn-htp-{scheme}", ignore_errors=True)  # convert afresh: timed
                    arts[side] = convert_student(m, fam, scheme, cal, held, out, log, args.gate_prompts)
                    conv_s[side] = time.perf_counter() - t0
                finally:
                    qnn_htp.SQUARE_POWS = True
            squared = arts[True].manifest.extra["qnn"].get("squares_as_mul") or {}
            for prog, spec in arts[False].manifest.programs.items():
                arrays = runtime.example_inputs(list(spec.inputs), seed=0)
                sessions = {side: runtime.load(arts[side].path, threads=1) for side in arts}
                outs = {side: s.run(arrays, program=prog) for side, s in sessions.items()}  # also the warm-up
                diff = max(float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
                           for a, b in zip(outs[False], outs[True]))
                times = {side: [] for side in sessions}
                for r in range(args.runs):  # one call each, the order swapped every round
                    for side in ((False, True) if r % 2 == 0 else (True, False)):
                        t = time.perf_counter()
                        sessions[side].run(arrays, program=prog)
                        times[side].append(time.perf_counter() - t)
                p50 = {side: float(np.median(t)) * 1e3 for side, t in times.items()}
                ops = runtime.profile(arts[False].path, program=prog, warmup=1, iters=1, threads=1, per_op=True).ops
                pow_share = sum(r["share"] for r in ops if r["op_type"] == "Pow")
                rows.append({"student": fam, "scheme": scheme, "program": prog,
                             "pows_rewritten": len(squared.get(prog, []) if isinstance(squared, dict) else squared),
                             "convert_s_before": conv_s[False], "convert_s_after": conv_s[True],
                             "p50_ms_before": p50[False], "p50_ms_after": p50[True],
                             "pow_cycle_share_before": pow_share, "max_abs_diff": diff})
                log(f"{fam} {scheme} {prog}: {p50[False]:.0f} -> {p50[True]:.0f} ms")
    return rows


def pows_table(rows, markdown: bool) -> str:
    head = ["student", "scheme", "program", "Pow(x, 2) rewritten", "Pow share of cycles before", "p50 ms before",
            "p50 ms after", "after / before", "convert s before / after", "max |diff|"]
    body = [[r["student"], r["scheme"], r["program"], str(r["pows_rewritten"]), f"{r['pow_cycle_share_before']:.0%}",
             f"{r['p50_ms_before']:.1f}", f"{r['p50_ms_after']:.1f}", f"{r['p50_ms_after'] / r['p50_ms_before']:.2f}x",
             f"{r['convert_s_before']:.0f} / {r['convert_s_after']:.0f}", f"{r['max_abs_diff']:.1e}"] for r in rows]
    return table(head, body, markdown)


def run_npu(args, log) -> dict:
    import torch
    from encdec import latency_models
    enc, dec = latency_models(args.P, args.new_tokens, args.max_target, 0)
    g = torch.Generator().manual_seed(0)
    cal = [torch.randint(0, 256, (args.P,), generator=g).tolist() for _ in range(8)]
    held = [torch.randint(0, 256, (args.P,), generator=g).tolist() for _ in range(2)]
    out = Path(args.out) / f"npu-P{args.P}"
    arts = {}
    for key, model in (("encdec", enc), ("decoder", dec)):
        name = f"{key}-P{args.P}-{args.scheme}"
        t0 = time.perf_counter()
        if (out / name / "manifest.json").is_file():
            from edgesdk.converters import Artifact
            arts[key] = Artifact.open(out / name)
        else:
            # fp32 (fp16 on the HTP): an explicit element-wise bound, as benchmarks/encdec.py verifies on CPU;
            # random weights leave the token check nothing to judge
            kw = {"atol": 0.1, "rtol": 0.1} if args.scheme == "fp32" else \
                {"calibration": cal, "eval_data": held, "max_drop": None}
            arts[key] = edgesdk.convert(model, None, "qnn-htp", quantize=args.scheme, out_dir=out, name=name,
                                        verify_samples=1, min_npu_fraction=0.95, **kw)
        log(f"{name}: converted in {time.perf_counter() - t0:.0f}s")
    a, b = arts["encdec"], arts["decoder"]
    ga, gb = a.manifest.extra["generation"], b.manifest.extra["generation"]
    cost = {"encdec": {"prefill": program_cost(a, ga["prefill"][0] if isinstance(ga["prefill"], list) else ga["prefill"], args.runs),
                       "step": program_cost(a, ga["step"], args.runs)},
            "decoder": {"prefill": program_cost(b, gb["prefill"][0] if isinstance(gb["prefill"], list) else gb["prefill"], args.runs),
                        "step": program_cost(b, gb["step"], args.runs)}}
    placement = {k: {n: p["fraction"] for n, p in v.manifest.extra["qnn"]["placement"].items()} for k, v in arts.items()}
    return {"P": args.P, "scheme": args.scheme, "params": {"encdec": enc.num_params(), "decoder": dec.num_params()},
            "layers": {"encdec": f"{enc.cfg.n_enc_layers}+{enc.cfg.n_dec_layers}", "decoder": dec.cfg.n_layers},
            "cost": cost, "placement": placement}


def npu_table(res: dict, markdown: bool, cycles_scale: bool) -> str:
    c = res["cost"]
    # TTFT: enc-dec encodes then runs one step (its first token comes from a step fed bos);
    # the decoder-only prefill returns the first token's logits itself
    ttft = {k: {"flops": c[k]["prefill"]["flops"] + (c[k]["step"]["flops"] if k == "encdec" else 0),
                "bytes": c[k]["prefill"]["bytes_total"] + (c[k]["step"]["bytes_total"] if k == "encdec" else 0),
                "cycles": c[k]["prefill"]["cycles_p50"] + (c[k]["step"]["cycles_p50"] if k == "encdec" else 0)}
            for k in ("encdec", "decoder")}
    step = {k: {"flops": c[k]["step"]["flops"], "bytes": c[k]["step"]["bytes_total"], "cycles": c[k]["step"]["cycles_p50"]}
            for k in ("encdec", "decoder")}
    head = ["measure", "enc-dec", "decoder-only", "TTFT change (enc-dec vs dec-only)", "per-token throughput (dec / enc-dec cost)",
            "paper (Qualcomm NPU)"]
    body = []
    for m, label in (("flops", "FLOPs (torch counter)"), ("bytes", "bytes read (weights + inputs)"),
                     ("cycles", "emulator cycles" + ("" if cycles_scale else " (did NOT pass the scaling check)"))):
        body.append([f"TTFT: {label}", f"{ttft['encdec'][m]:.4g}", f"{ttft['decoder'][m]:.4g}",
                     f"{ttft['encdec'][m] / ttft['decoder'][m] - 1:+.0%}", "", f"{PAPER['ttft_change']:+.0%}"])
        body.append([f"step: {label}", f"{step['encdec'][m]:.4g}", f"{step['decoder'][m]:.4g}", "",
                     f"{step['decoder'][m] / step['encdec'][m]:.2f}x", f"{PAPER['throughput']}x"])
    return table(head, body, markdown)


# ----------------------------------------------------------------------------- main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Method: /work/shared/BENCHMARKING.md")
    ap.add_argument("phase", choices=("scaling", "quality", "npu", "ops", "pows"))
    ap.add_argument("--out", default="/tmp/edgesdk-qnn-generation", help="artifact folder (reused)")
    ap.add_argument("--students", default=str(ROOT / ".cache" / "edgesdk"))
    ap.add_argument("--families", nargs="+", default=["encdec", "mamba"])
    ap.add_argument("--schemes", nargs="+", default=list(SCHEMES))
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--windows", type=int, default=100)
    ap.add_argument("--gate-prompts", type=int, default=8, help="held-out prompts for the conversion's own check")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--runs", type=int, default=7, help="profiled executions per model (after one dropped)")
    ap.add_argument("--P", type=int, default=512)
    ap.add_argument("--max-target", type=int, default=64)
    ap.add_argument("--scheme", default="uint16-static", choices=SCHEMES,
                    help="the one scheme both sides of the npu comparison use")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()

    def log(msg):
        print(f"# [{time.perf_counter() - t0:5.0f}s] {msg}", file=sys.stderr, flush=True)
    env = environment(VERSION_PACKAGES)
    if args.phase == "scaling":
        rows = cycle_scaling(runs=args.runs)
        res = {"rows": rows, "scales": scales(rows)}
        text = scaling_table(rows, args.markdown) + (
            f"\n\nverdict: the emulator's cycles {'scale' if res['scales'] else 'do NOT scale'} with the work "
            f"(goal: doubled/base in [{SCALE_RATIO[0]}, {SCALE_RATIO[1]}], run-to-run max/min <= {SCALE_SPREAD})")
    elif args.phase == "ops":
        res = {"rows": run_ops()}
        text = ops_table(res["rows"], args.markdown)
    elif args.phase == "pows":
        res = {"rows": run_pows(args, log)}
        text = pows_table(res["rows"], args.markdown)
    elif args.phase == "quality":
        res = {"rows": run_quality(args, log)}
        text = quality_table(res["rows"], args.markdown)
    else:
        rows = cycle_scaling(runs=args.runs)
        res = {**run_npu(args, log), "scaling": rows, "scales": scales(rows)}
        text = (scaling_table(rows, args.markdown) + "\n\n" + npu_table(res, args.markdown, res["scales"]) +
                f"\n\nparams enc-dec {res['params']['encdec'] / 1e6:.3f} M ({res['layers']['encdec']} layers) vs "
                f"decoder-only {res['params']['decoder'] / 1e6:.3f} M ({res['layers']['decoder']} layers); "
                f"scheme {args.scheme}; HTP placement {res['placement']}")
    v = env["versions"]
    print(f"Environment: {env['date']}; CPU {env['cpu']}; " + ", ".join(f"{k} {v.get(k)}" for k in VERSION_PACKAGES)
          + f"; QNN HTP emulator (x86_64): figures are the simulator's, not a phone's; wall {time.perf_counter() - t0:.0f} s")
    print()
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps({"schema": f"edgesdk.bench.qnn_generation.{args.phase}/1",
                                               "environment": env, "args": vars(args), **res}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
