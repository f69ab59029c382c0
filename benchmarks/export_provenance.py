"""Conversion seconds with and without `converters.provenance.shared_provenance`, side by side.

torch 2.13 deep-copies every graph node's whole provenance chain each time a pass rewrites the
node, so a lowering's cost grows with passes² × nodes; `shared_provenance` (on by default in
every conversion) makes new links refer to the earlier ones. For each trained student
(``--families``, weights from the pipeline's training cache) and conversion (``--conversions``),
this converts ``--rounds`` pairs, the two sides interleaved (on/off, then off/on), each a whole
`edgesdk.convert` with ``verify_samples=1`` and no quality gate, in this one process at one torch
thread. Before the first pair of a target, one discarded conversion of a small MLP loads that
target's libraries, so neither side pays the imports.

Printed per conversion: the median seconds of each side, the median of the per-pair ratios
(shared / deep copies), and whether the two sides wrote the same bytes (every file the manifest
lists; Core ML packages and QNN context binaries differ run to run by design and are compared
without those files)::

    cpu-exclusive python benchmarks/export_provenance.py --students /tmp/demo/cache --markdown
    cpu-exclusive python benchmarks/export_provenance.py --students /tmp/demo/cache --families mamba \\
        --conversions executorch-xnnpack:int8-dynamic --rounds 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERSIONS = ("executorch-xnnpack:fp32", "executorch-xnnpack:int8-dynamic", "executorch-vulkan:fp16",
               "litert-cpu:fp32", "onnx-cpu:fp32", "qnn-htp:fp32", "coreml-ane:fp16")
NONDETERMINISTIC = (".mlpackage/", "_ctx.onnx")   # as benchmarks/executors.py: differ between any two runs


def _digest(art) -> str:
    h = hashlib.sha256()
    for f in sorted(art.manifest.files, key=lambda f: f.path):
        if not any(mark in f.path for mark in NONDETERMINISTIC):
            h.update(f"{f.path} {f.sha256}\n".encode())
    return h.hexdigest()


def _convert(model, target: str, scheme: str, shared: bool) -> tuple[float, str]:
    import edgesdk
    from edgesdk.converters import provenance
    provenance.ENABLED = shared
    try:
        with tempfile.TemporaryDirectory() as tmp:
            kw = {} if scheme in ("fp32", "fp16") else {"max_drop": None}
            t0 = time.perf_counter()
            art = edgesdk.convert(model, None, target, quantize=scheme, out_dir=tmp, name="a", verify_samples=1,
                                  **kw)
            return time.perf_counter() - t0, _digest(art)
    finally:
        provenance.ENABLED = True


def _warm(target: str, scheme: str) -> None:
    import torch
    import edgesdk
    m = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        kw = {} if scheme in ("fp32", "fp16") else {"max_drop": None}
        edgesdk.convert(m, (torch.randn(1, 16),), target, quantize=scheme, out_dir=tmp, name="w", verify_samples=1,
                        **kw)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", required=True, help="the pipeline's training cache holding the trained students")
    ap.add_argument("--families", nargs="+", default=["mamba", "encdec"])
    ap.add_argument("--conversions", nargs="+", default=list(CONVERSIONS), metavar="TARGET:SCHEME")
    ap.add_argument("--rounds", type=int, default=1, help="pairs per conversion (default 1)")
    ap.add_argument("--json", metavar="PATH")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]
    import torch
    torch.set_num_threads(1)
    from generation_quant import load_student

    rows, warmed = [], set()
    for fam in args.families:
        model = load_student(fam, Path(args.students))[0]
        for conv in args.conversions:
            target, scheme = conv.split(":")
            if conv not in warmed:
                _warm(target, scheme)
                warmed.add(conv)
            on, off, ratios, same = [], [], [], True
            for r in range(args.rounds):
                order = (True, False) if r % 2 == 0 else (False, True)
                got = {side: _convert(model, target, scheme, side) for side in order}
                on.append(got[True][0])
                off.append(got[False][0])
                ratios.append(got[True][0] / got[False][0])
                same = same and got[True][1] == got[False][1]
                print(f"  {fam} {conv} round {r + 1}: shared {got[True][0]:.1f} s, deep copies {got[False][0]:.1f} s",
                      file=sys.stderr, flush=True)
            rows.append({"student": fam, "conversion": conv, "shared_s": statistics.median(on),
                         "deepcopy_s": statistics.median(off), "ratio": statistics.median(ratios),
                         "ratios": ratios, "same_bytes": same})
    head = ["student", "conversion", "deep copies s", "shared s", "shared / deep copies", "same bytes"]
    lines = [[r["student"], r["conversion"], f"{r['deepcopy_s']:.1f}", f"{r['shared_s']:.1f}",
              f"{r['ratio']:.2f}x", "yes" if r["same_bytes"] else "NO"] for r in rows]
    tot_off, tot_on = sum(r["deepcopy_s"] for r in rows), sum(r["shared_s"] for r in rows)
    lines.append(["all", f"{len(rows)} conversions", f"{tot_off:.1f}", f"{tot_on:.1f}", f"{tot_on / tot_off:.2f}x",
                  "yes" if all(r["same_bytes"] for r in rows) else "NO"])
    if args.markdown:
        print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for ln in lines:
            print("| " + " | ".join(ln) + " |")
    else:
        w = [max(len(h), *(len(ln[i]) for ln in lines)) for i, h in enumerate(head)]
        for ln in [head] + lines:
            print("  ".join(c.ljust(w[i]) for i, c in enumerate(ln)))
    print(f"\n{args.rounds} pair(s) per conversion, interleaved; 1 torch thread; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0 if all(r["same_bytes"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
