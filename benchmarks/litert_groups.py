"""Which module group costs a generation student's litert-cpu int8-dynamic its greedy agreement.

One fp32 `.tflite` of the trained student (both programs), then one int8-dynamic file per row of the
table, each with ``ai-edge-quantizer``'s dynamic recipe and some module groups kept float, run through the
torch-free runtime. Two ablations:

- ``drop:G``: everything int8 except group G (what keeping G float buys);
- ``only:G``: only group G int8, the rest float (what G's int8 costs on its own).

Greedy agreement is the share of the first ``--new-tokens`` greedy tokens equal to the fp32 PyTorch
programs' on ``--prompts`` held-out prompts (the same prompts and metric as generation_quant.py).
One early flipped token changes the rest of a sequence, so a few points at 20-40 prompts are noise;
the rows are for ranking groups, generation_quant.py's 100 prompts for the verdict.

    cpu-shared python benchmarks/litert_groups.py --students /tmp/demo3/cache --prompts 40
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

# module groups of the Mamba student, as LiteRT names them (blocks are iterated: no index in the names)
GROUPS = {"in_proj": ["mixer.in_proj"], "out_proj": ["mixer.out_proj"], "mlp": ["mlp"],
          "conv1d": ["mixer.conv1d"], "tied table": ["@table"]}


def _scopes_with_table(src: Path, table: str | None):
    """litert_cpu.module_scopes plus '@table': every op reading the tied embedding / head table (it has
    no module name in the file)."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu

    from edgesdk.converters import litert_cpu

    def scopes(path, modules):
        out = [s for m in modules if not m.startswith("@") for s in litert_cpu.module_scopes(path, m)[1]]
        if "@table" in modules and table:
            model = tfu.read_model(str(path))
            for sg in model.subgraphs:
                for op in sg.operators:
                    if any(tfu.get_tensor_name(sg.tensors[i]) == table for i in op.inputs if i != -1):
                        out.append(tfu.get_op_scope(op, sg.tensors))
        return out
    return scopes


def tied_table(path: Path, vocab: int, dim: int) -> str | None:
    """Name of the (vocab, dim) constant read by both an embedding lookup and a fully connected op."""
    from ai_edge_quantizer.utils import tfl_flatbuffer_utils as tfu
    model = tfu.read_model(str(path))
    sg = model.subgraphs[0]
    for t in sg.tensors:
        if tuple(t.shape) == (vocab, dim):
            return tfu.get_tensor_name(t)
    return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", default=str(ROOT / ".cache" / "edgesdk"))
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from generation_quant import agreement, load_student
    from runtime_overhead import environment
    from runtime_overhead import text_table as table

    import edgesdk
    from edgesdk import runtime
    from edgesdk.converters import litert_cpu
    from edgesdk.converters.litert_names import shorten_tensor_names
    from edgesdk.converters.programs import TorchPrograms, collect
    from edgesdk.runtime.manifest import sha256_file
    t0 = time.perf_counter()
    m, _, held, _, _ = load_student("mamba", Path(args.students))
    prompts = held[:args.prompts]
    want = [TorchPrograms(m).generate(p, args.new_tokens).tokens for p in prompts]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # the fp32 artifact (its manifest and runtime binding), and an fp32 file with the torch scope names
        ref = edgesdk.convert(m, None, "litert-cpu", out_dir=tmp, name="fp32", verify_samples=1)
        progs = {p.name: p for p in collect(m, None)}
        src = tmp / "fp32.tflite"
        with contextlib.redirect_stdout(sys.stderr):
            sigs = litert_cpu.export_tflite(progs, src)
        io = litert_cpu.signature_io(src, sigs, progs)
        scopes = _scopes_with_table(src, tied_table(src, m.cfg.vocab_size, m.cfg.d_model))

        def measure(label, keep_float, float_ops=()):
            d = tmp / "q"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(ref.path, d)
            keep = [s for g in keep_float for s in scopes(src, GROUPS[g])]
            with contextlib.redirect_stdout(sys.stderr), _no_module_lookup(litert_cpu, keep), \
                    _float_ops(litert_cpu, float_ops):
                litert_cpu.quantize_tflite(src, d / "model.tflite", "int8-dynamic", signatures=sigs, io=io,
                                           calibration=None, exclude=["<scopes>"] if keep else [])
            shorten_tensor_names(d / "model.tflite")
            man = json.loads((d / "manifest.json").read_text())
            man["files"] = [{"path": "model.tflite", "size": (d / "model.tflite").stat().st_size,
                             "sha256": sha256_file(d / "model.tflite")}]
            (d / "manifest.json").write_text(json.dumps(man))
            s = runtime.load(d, threads=1)
            got = [s.generate(p, args.new_tokens).tokens for p in prompts]
            rows.append([label, ", ".join(keep_float) or "—", f"{agreement(want, got):.1%}",
                         f"{(d / 'model.tflite').stat().st_size / (ref.path / 'model.tflite').stat().st_size:.3f}x"])
            print(f"# [{time.perf_counter() - t0:5.0f}s] {rows[-1]}", file=sys.stderr, flush=True)

        # the ablation on the recipe as it was (every op the dynamic recipe takes, conv1d included)
        measure("all int8", [])
        for g in GROUPS:
            measure(f"drop:{g}", [g])
        for g in GROUPS:
            measure(f"only:{g}", [o for o in GROUPS if o != g])
        measure("none int8 (all groups float)", list(GROUPS))
        measure("recipe now (DYNAMIC_FLOAT_OPS)", [], litert_cpu.DYNAMIC_FLOAT_OPS)
    env = environment(("torch", "ai-edge-litert", "ai-edge-quantizer"))
    print(f"Environment: {env['date']}; {env['cpu']}; {args.prompts} held-out prompts x {args.new_tokens} greedy "
          f"tokens vs fp32 PyTorch; litert-cpu int8-dynamic, every op type of ai-edge-quantizer's dynamic recipe "
          f"unless kept float; wall {time.perf_counter() - t0:.0f} s")
    print()
    print(table(["file", "kept float", "greedy agreement", "size vs fp32"], rows, args.markdown))
    return 0


@contextlib.contextmanager
def _float_ops(litert_cpu, ops):
    before = litert_cpu.DYNAMIC_FLOAT_OPS
    litert_cpu.DYNAMIC_FLOAT_OPS = tuple(ops)
    try:
        yield
    finally:
        litert_cpu.DYNAMIC_FLOAT_OPS = before


@contextlib.contextmanager
def _no_module_lookup(litert_cpu, scopes: list[str]):
    """quantize_tflite keeps ``exclude``'s modules float through module_scopes: hand it the scopes."""
    before = litert_cpu.module_scopes
    litert_cpu.module_scopes = lambda path, module: (module, list(scopes))
    try:
        yield
    finally:
        litert_cpu.module_scopes = before


if __name__ == "__main__":
    sys.exit(main())
