"""Before/after seconds of the generation students' ExecuTorch conversions, and whether the `.pte` stayed the same.

Measures the demo's costliest conversions (the trained students' XNNPACK fp32 / int8-dynamic and Vulkan
fp16 lowerings) in one process per code checkout, in order, the way a pool worker of the local executor
runs them one after another: the seconds of each whole `edgesdk.convert` and of its `lower` part, and
the SHA-256 of the artifact's files (the `.pte`, the ONNX programs; QNN's EPContext binaries
aside, which differ in every process) and of the manifest's verification and `extra` records, so that a cut can be shown to
change the time and nothing else.

``--code DIR`` imports the SDK from another checkout, so the same script measures before and after:

    git archive main | tar -x -C /tmp/before
    cpu-shared python benchmarks/executorch_cuts.py --students /tmp/demo3/cache --code /tmp/before --json /tmp/b.json
    cpu-shared python benchmarks/executorch_cuts.py --students /tmp/demo3/cache --json /tmp/a.json
    python benchmarks/executorch_cuts.py compare /tmp/b.json /tmp/a.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONVERSIONS = ("executorch-vulkan:fp16", "executorch-xnnpack:fp32", "executorch-xnnpack:int8-dynamic")


def payload_sha256(art: Path) -> str:
    """sha256 over the artifact's files (name and bytes), without its manifest and without the QNN
    EPContext binaries (`*_ctx.onnx`, `model_ctx.onnx`), which QNN writes differently in every process."""
    h = hashlib.sha256()
    for f in sorted(p for p in art.rglob("*") if p.is_file()):
        if f.name == "manifest.json" or f.name.endswith("_ctx.onnx"):
            continue
        h.update(str(f.relative_to(art)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def switch_arguments(doc: str, conversions: list[str], rounds: int, argv=None):
    """The command line of a switch benchmark (`switch_rounds`): ``--students``, ``--conversions``, ``--rounds``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", required=True, help="the pipeline's training cache holding the trained students")
    ap.add_argument("--conversions", nargs="+", default=conversions, help="STUDENT:TARGET:SCHEME")
    ap.add_argument("--rounds", type=int, default=rounds)
    return ap.parse_args(argv)


def switch_rounds(conversions, students: Path, rounds: int, switch, tally: dict | None = None) -> list[tuple]:
    """Each ``STUDENT:TARGET:SCHEME`` of a demo-trained student, converted in this process with a switch
    on and off (``switch(bool)`` sets it): one warm-up conversion, then ``rounds`` rounds, the order swapped
    every round; each the whole `edgesdk.convert` (``verify_samples=1``, no gate, 1 torch thread). ``tally``: counts the
    caller's hooks fill in, reset before each conversion. Returns, per conversion, ``(student, "TARGET SCHEME",
    {on: [seconds]}, {on: last tally}, files identical)``."""
    import tempfile
    import torch
    import edgesdk
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from generation_quant import load_student
    torch.set_num_threads(1)
    tally = {} if tally is None else tally
    zero = dict(tally)

    def convert(model, target, scheme, on: bool) -> tuple[float, str, dict]:
        switch(on)
        tally.update(zero)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            kw = {} if scheme in ("fp32", "fp16") else {"max_drop": None}
            art = edgesdk.convert(model, None, target, quantize=scheme, out_dir=tmp, name="a", verify_samples=1, **kw)
            return time.perf_counter() - t, payload_sha256(Path(art.path)), dict(tally)

    rows = []
    for item in conversions:
        fam, target, scheme = item.split(":")
        model = load_student(fam, Path(students))[0]
        convert(model, target, scheme, True)  # warm-up: imports, first-call caches
        secs: dict = {True: [], False: []}
        hashes, tallies = set(), {}
        for r in range(rounds):
            for on in ((True, False) if r % 2 == 0 else (False, True)):
                t, h, n = convert(model, target, scheme, on)
                secs[on].append(t)
                hashes.add(h)
                tallies[on] = n
                print(f"# {item} on={on}: {t:.1f} s, files {h[:12]}, counts {n}", file=sys.stderr, flush=True)
        rows.append((fam, f"{target} {scheme}", secs, tallies, len(hashes) == 1))
    switch(True)
    return rows


def measure(args) -> int:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from xnnpack_lowering import timed_conversions, use_checkout
    code, commit = use_checkout(args.code)
    rows = []
    for fam, conv, art, total, stats in timed_conversions(args):
        pte = payload_sha256(Path(art.path))
        verification = json.dumps(art.manifest.verification, sort_keys=True, default=str)
        extra = json.dumps(art.manifest.extra, sort_keys=True, default=str)
        rows.append({"student": fam, "conversion": conv, "convert_s": round(total, 2),
                     "lower_s": round(stats["lower_s"], 2), "pte_sha256": pte,
                     "verification_sha256": hashlib.sha256(verification.encode()).hexdigest(),
                     "verification": json.loads(verification),
                     "extra_sha256": hashlib.sha256(extra.encode()).hexdigest(), "extra": json.loads(extra)})
        print(f"# {fam} {conv}: convert {total:.1f}s, lower {stats['lower_s']:.1f}s, pte {pte[:12]}",
              file=sys.stderr, flush=True)
    out = {"code": str(code), "commit": commit, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps({**out, "rows": [{k: v for k, v in r.items() if k not in ("verification", "extra")}
                                      for r in rows]}, indent=2))
    return 0


def compare(before_path: str, after_path: str) -> int:
    before, after = (json.loads(Path(p).read_text()) for p in (before_path, after_path))
    idx = {(r["student"], r["conversion"]): r for r in before["rows"]}
    print(f"before: {before['commit']} ({before['date']}); after: {after['commit']} ({after['date']})\n")
    print("| student | conversion | convert s before | after | lower s before | after | files | verification | "
          "manifest extra |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in after["rows"]:
        b = idx.get((r["student"], r["conversion"]))
        if b is None:
            continue
        same = ["identical" if b.get(k) == r.get(k) else "DIFFERS" if k in b else "-"
                for k in ("pte_sha256", "verification_sha256", "extra_sha256")]
        print(f"| {r['student']} | {r['conversion']} | {b['convert_s']:.1f} | {r['convert_s']:.1f} | "
              f"{b['lower_s']:.1f} | {r['lower_s']:.1f} | {same[0]} | {same[1]} | {same[2]} |")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare(*argv[1:3])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--students", required=True, help="the pipeline's training cache holding the trained students")
    ap.add_argument("--families", nargs="+", default=["mamba"])
    ap.add_argument("--conversions", nargs="+", default=list(CONVERSIONS), help="TARGET:SCHEME pairs, run in order")
    ap.add_argument("--code", default=str(ROOT), help="checkout whose SDK is imported (default: this one)")
    ap.add_argument("--json", metavar="PATH")
    return measure(ap.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
