"""FLOPs per program: the conversion's count (`converters.flops`, one eager forward under
``FlopCounterMode``) against the count it replaced (``torch.export`` + core-ATen decompositions,
the fx graph's matmul/conv/attention nodes counted with the same per-op formulas), side by side.

For each model (the test suite's MLP / ConvNet / transformer block and a bare scaled-dot-product
attention, every program of the shipped decoder teacher and of a Mamba-2 and an encoder-decoder
student shaped after it, and ``--zoo`` architectures from `benchmarks/zoo_models.py`; a model
with keyword inputs goes through `converters.programs.with_keywords`, as in `edgesdk.convert`) it
prints both totals, whether they agree, and the seconds each took, in this one process at the
machine's torch threads, the export side first::

    PYTHONPATH=. python benchmarks/flops_count.py
    PYTHONPATH=. python benchmarks/flops_count.py --zoo resnet18,bert-tiny,whisper-tiny-encoder
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

ZOO = ("resnet18,mobilenet_v3_small,efficientformerv2_s0,fastvit_t8,levit_128s,mobilevit_xxs,deit_tiny_patch16_224,"
       "bert-tiny,minilm,llama-tiny,gpt2-tiny,t5-tiny,bart-tiny,whisper-tiny-encoder,wav2vec2-tiny,mamba-tiny")


def export_count(module: nn.Module, example_inputs: tuple) -> int:
    """The count before 2026-12-04: export, decompose, sum the registry's formulas over the graph."""
    from torch.utils.flop_counter import flop_registry

    def val(a):
        if isinstance(a, torch.fx.Node):
            return a.meta.get("val")
        return type(a)(val(x) for x in a) if isinstance(a, (list, tuple)) else a
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ep = torch.export.export(module, tuple(example_inputs)).run_decompositions()
    total = 0
    for node in ep.graph_module.graph.nodes:
        fn = flop_registry.get(getattr(node.target, "overloadpacket", None)) if node.op == "call_function" else None
        if fn is not None:
            total += int(fn(*val(node.args), **{k: val(v) for k, v in node.kwargs.items()},
                            out_val=node.meta.get("val")))
    return total


class _Sdpa(nn.Module):
    def forward(self, q, k, v):
        return nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


def cases(zoo: list[str]):
    from conftest import make_model
    from edgesdk.models.encdec import EncDec, EncDecConfig
    from edgesdk.models.mamba import Mamba
    from edgesdk.models.teachers import load_teacher
    for kind in ("mlp", "convnet", "transformer"):
        m, ex = make_model(kind)
        yield kind, m.eval(), ex
    g = torch.Generator().manual_seed(0)
    yield "sdpa", _Sdpa(), tuple(torch.randn(1, 4, 16, 32, generator=g) for _ in range(3))
    teacher = load_teacher("decoder").eval()
    for family, model, lengths in (("decoder", teacher, [16, 40]), ("mamba", Mamba.from_teacher(teacher).eval(), [32, 64]),
                                   ("encdec", EncDec(EncDecConfig()).eval(), None)):
        for name, (module, ex) in model.edge_programs(prompt_lengths=lengths).items():
            yield f"{family}:{name}", module, ex
    if zoo:
        from benchmarks.zoo_models import build, enable_zoo_packages
        from edgesdk.converters.programs import with_keywords
        enable_zoo_packages()
        for name in zoo:
            m, ex, kw = build(name)
            if kw.get("example_kwargs"):  # keyword inputs by position, as edgesdk.convert passes them
                m, ex, _ = with_keywords(m.eval(), ex, kw["example_kwargs"])
            yield name, m.eval(), ex


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--zoo", default=ZOO, help="comma-separated zoo models ('' for none); default: %(default)s")
    args = ap.parse_args(argv)
    from edgesdk.converters.flops import count_program
    zoo = [z for z in args.zoo.split(",") if z]
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads")
    print("| program | export + decompositions FLOPs | s | eager FlopCounterMode FLOPs | s | same |")
    print("|---|---|---|---|---|---|")
    agree = 0
    rows = 0
    for name, module, ex in cases(zoo):
        with torch.no_grad():
            t0 = time.perf_counter()
            old = export_count(module, ex)
            t1 = time.perf_counter()
            new = count_program(module, ex)["flops"]
            t2 = time.perf_counter()
        rows += 1
        agree += old == new
        print(f"| {name} | {old:,} | {t1 - t0:.2f} | {new:,} | {t2 - t1:.3f} | {'yes' if old == new else 'NO'} |",
              flush=True)
    print(f"\n{agree} of {rows} programs agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
