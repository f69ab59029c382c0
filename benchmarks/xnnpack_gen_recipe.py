"""Which part of the ExecuTorch int8 table recipe moves a generation student's greedy agreement.

For a trained student (``--family``), both programs quantized int8-dynamic the way `executorch-xnnpack`
does it (torchao PT2E + XNNPACKQuantizer; the PT2E reference graph run in PyTorch, no lowering), in the
four combinations of: the embedding read as int8 rows (`converters.embedding_rows`) or fp32, and the head
tied to it kept float or int8 (the quantizer's int8-dynamic linear); and a fifth, the converter's recipe:
int8 rows, and the head reading those rows with fp32 activations (`Int8RowHead`). Greedy agreement with the fp32 programs over the held-out prompts, the
same loop and prompts as `benchmarks/generation_quant.py`.

    cpu-shared python benchmarks/xnnpack_gen_recipe.py --students /tmp/demo3/cache --family mamba
    cpu-shared python benchmarks/xnnpack_gen_recipe.py --family encdec --only "int8 rows/float" "int8 rows/int8 rows"
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from edgesdk.converters import executorch_xnnpack as ex  # noqa: E402
from edgesdk.converters.embedding_rows import int8_rows, tied_heads  # noqa: E402
from edgesdk.converters.programs import TorchPrograms, collect  # noqa: E402
from generation_quant import agreement, load_student  # noqa: E402
from runtime_overhead import text_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--students", default=str(ROOT / ".cache" / "edgesdk"))
    ap.add_argument("--family", default="mamba", choices=("mamba", "encdec"))
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--only", nargs="+", metavar="EMBEDDING/HEAD", help="rows to run, e.g. 'int8 rows/int8 rows'")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    m, _, held, _, _ = load_student(args.family, Path(args.students))
    held = held[:args.prompts]
    want = [TorchPrograms(m).generate(p, 32).tokens for p in held]
    programs = collect(m, None)
    rows = []
    recipes = (("fp32", "int8"), ("int8 rows", "int8"), ("fp32", "float"), ("int8 rows", "float"),
               ("int8 rows", "int8 rows"))
    for table, head in recipes:
        if args.only and f"{table}/{head}" not in args.only:
            continue
        ref = TorchPrograms(m)
        for prog in programs:
            exclude = tied_heads(prog.module) if head != "int8" else []
            if table == "int8 rows":
                rows_of_head = "int8-rows" if head == "int8 rows" else "float"
                prog = dataclasses.replace(prog, module=int8_rows(prog.module, heads=rows_of_head)[0])
            ref._programs[prog.name]._module = ex.pt2e_quantize(prog, ex.xnnpack_quantizer("int8-dynamic", exclude), None)
        got = [ref.generate(p, 32).tokens for p in held]
        rows.append([table, head + (" (fp32 activations)" if head == "int8 rows" else ""), f"{agreement(want, got):.1%}"])
        print(f"# {rows[-1]}", file=sys.stderr, flush=True)
    print(f"{args.family}: int8-dynamic (PT2E reference graph), {len(held)} held-out prompts x 32 tokens")
    print(text_table(["embedding", "tied head", "greedy agreement"], rows, args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
