"""Wall time of a fresh `make demo` (= `edgesdk demo`) per executor: serial, local, ray (a local
one-machine Ray cluster), each from an empty training/conversion cache, and whether their
reports agree apart from timings.

Each executor runs as its own process, one after another (never side by side: they would
compete for the cores). Run each step under `cpu-exclusive` (one step is ~5-10 min), then
print the table::

    python benchmarks/executors.py run serial --root /tmp/exec-bench
    python benchmarks/executors.py run local  --root /tmp/exec-bench
    python benchmarks/executors.py run ray    --root /tmp/exec-bench
    python benchmarks/executors.py table --root /tmp/exec-bench
    python benchmarks/executors.py timeline local --root /tmp/exec-bench   # where the wall time went
    python benchmarks/executors.py compare local --root /tmp/exec-bench --against /tmp/older-bench
                                        # results.json of two runs of one executor (before/after a change)
    python benchmarks/executors.py probe                                   # the host's speed now (below)

`table` prints, per executor: wall clock of the whole `edgesdk demo` process (interpreter start
to exit), the pipeline's own breakdown (distill / convert / profile), the artifacts by status,
the ratio to serial (same machine, same config, each from an empty cache), and how its
`results.json` differs from serial's once timings, memory, hosts and paths are set aside
(`edgesdk.lockfile.comparable`), and whether `report.md`'s table rows agree apart from latency and
memory columns.

The host's speed moves: on the 2-core cloud hosts here the same demo took 300 s and 528 s on one
day, and its encdec training, which no executor touches, 90 s and 160 s. `run` therefore times a
fixed probe on each usable core just before and just after the demo (`probe`: interpreter work
like a converter's graph passes, and an fp32 matrix product like training, one thread, best of 3),
and `table` prints it beside each wall: compare walls only at like probe seconds.

Each run starts with an empty Mesa shader cache (`--shader-cache fresh`, the default), as a new
machine does: the software GPU behind litert-gpu (lavapipe) compiles every kernel with LLVM the
first time it meets it and keeps it in ~/.cache/mesa_shader_cache_db, so a demo run after another
one skips that work (measured: 356.8 s fresh, 326.2 s warm, same code, back to back on 2 cores).
Runs recorded before this option used the user's cache, warm after the first run of a session.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
EXECUTORS = ("serial", "local", "ray")


PROBE_ROUNDS = 3


def _probe_python() -> float:
    """Seconds of pure interpreter work: dicts, strings, sorting (a converter's graph passes are this)."""
    t = time.perf_counter()
    nodes = {f"node_{i}": (i * 7919) % 10007 for i in range(200_000)}
    order = sorted(nodes, key=lambda k: (nodes[k], k))
    _ = sum(len(k) for k in order if nodes[k] % 3)
    return time.perf_counter() - t


def _probe_gemm() -> float:
    """Seconds of 120 fp32 512x512 matrix products on one thread (training and reference runs are this)."""
    import torch
    a, b, c = torch.randn(512, 512), torch.randn(512, 512), torch.empty(512, 512)
    t = time.perf_counter()
    for _ in range(120):
        torch.mm(a, b, out=c)
    return time.perf_counter() - t


def probe_here() -> dict:
    """The probe on each usable core in turn (this process pinned there), best of PROBE_ROUNDS."""
    import torch
    torch.set_num_threads(1)
    cores = sorted(os.sched_getaffinity(0))
    out = {}
    try:
        for c in cores:
            os.sched_setaffinity(0, {c})
            out[str(c)] = {"python_s": round(min(_probe_python() for _ in range(PROBE_ROUNDS)), 4),
                           "gemm_s": round(min(_probe_gemm() for _ in range(PROBE_ROUNDS)), 4)}
    finally:
        os.sched_setaffinity(0, cores)
    return {"cores": out, "python_s": round(max(v["python_s"] for v in out.values()), 4),
            "gemm_s": round(max(v["gemm_s"] for v in out.values()), 4),
            "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}


def probe(env: dict | None = None) -> dict:
    """`probe_here` in a fresh process (this one stays free of torch); {} when it fails."""
    p = subprocess.run([sys.executable, str(Path(__file__).resolve()), "probe", "--json"], env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        return json.loads(p.stdout)
    except ValueError:
        print(f"probe failed (exit {p.returncode}): {p.stderr.strip()[-300:]}", file=sys.stderr)
        return {}


def _probe_text(pr: dict) -> str:
    """'python 0.412 s, GEMM 0.301 s' (the slower core's), or '-'."""
    return f"python {pr['python_s']:.3f} s, GEMM {pr['gemm_s']:.3f} s" if pr else "-"


def run(executor: str, root: Path, shader_cache: str = "fresh") -> None:
    out, cache = root / executor / "out", root / executor / "cache"
    shutil.rmtree(root / executor, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "")
                                                                        .split(os.pathsep) if p])}
    if shader_cache == "fresh":
        # lavapipe compiles each GPU kernel with LLVM and keeps it in Mesa's shader cache
        # (~/.cache/mesa_shader_cache_db); a run after another one finds the demo's kernels there
        env["MESA_SHADER_CACHE_DIR"] = str(root / executor / "mesa-shader-cache")
    before = probe(env)
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "edgesdk.cli", "demo", "--out", str(out), "--cache", str(cache),
                        "--executor", executor], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    after = probe(env)
    (root / executor / "log.txt").write_text(p.stdout)
    (root / executor / "wall.json").write_text(json.dumps({"executor": executor, "wall_s": wall, "rc": p.returncode,
                                                           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                                                           "shader_cache": shader_cache,
                                                           "probe": {"before": before, "after": after}}))
    print(f"{executor}: exit {p.returncode}, wall {wall:.1f} s ({shader_cache} GPU shader cache); host probe before: "
          f"{_probe_text(before)}; after: {_probe_text(after)}")


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += [f"{path}/{k} (only one side)"] if (k in a) != (k in b) else _differences(a[k], b[k], f"{path}/{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


# Files whose bytes differ between any two processes converting the same model: Core ML
# packages carry fresh UUIDs (Manifest.json and the model's identifiers), and QNN's EPContext
# compile (*_ctx.onnx) differs run to run (same model, two processes: two hashes).
NONDETERMINISTIC = (".mlpackage/", "_ctx.onnx")   # model_ctx.onnx, and one <program>_ctx.onnx per generation program


def _converter_nondeterminism(path: str, base: dict, diffs: list[str]) -> bool:
    """A difference that comes from those files: their hash, or the artifact's graph hash / size
    when every differing file of that artifact is one of them."""
    if not path.startswith("/artifacts["):
        return False
    art = path.split("]")[0] + "]"
    files = [d for d in diffs if d.startswith(art + "/hashes/files/")]
    if not files or not all(any(n in f for n in NONDETERMINISTIC) for f in files):
        return False
    return path in files or path.endswith(("/hashes/graph", "/size_bytes"))


def _by_key(results: dict) -> dict:
    """Artifacts and families in a fixed order (by key / name): runs whose configs list the
    families in another order still compare row by row."""
    out = dict(results)
    out["artifacts"] = sorted(results["artifacts"], key=lambda a: a["key"])
    out["families"] = sorted(results["families"], key=lambda f: f["family"])
    out["config"] = {**results["config"], "distill": sorted(results["config"].get("distill", []),
                                                            key=lambda d: d["family"])}
    return out


TIMED_COLUMNS = ("p50", "p90", "p99", "cold", "memory", "GFLOP/s", "TTFT", "per token", "tokens/s")  # measured, not computed


def _report_rows(md: Path) -> list[list[str]]:
    """report.md's summary rows without the columns that come from timings or memory readings
    (p50, p90, p99, cold, memory, GFLOP/s; the generation table's TTFT, per token, tokens/s:
    found by their header)."""
    rows, keep = [], None
    for line in md.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| family"):
            keep = [i for i, h in enumerate(cells) if not h.startswith(TIMED_COLUMNS)]
        elif line.startswith("| ") and keep is not None and len(cells) >= len(keep):
            rows.append([cells[i] for i in keep if i < len(cells)])
    return rows


def table(root: Path) -> None:
    from edgesdk import lockfile
    res = {}
    for ex in EXECUTORS:
        w = root / ex / "wall.json"
        if w.is_file():
            res[ex] = json.loads(w.read_text())
            res[ex]["results"] = lockfile.read(root / ex / "out")
    if not res:
        raise SystemExit(f"no runs under {root}: run a step first")
    # without a serial run (~16 min on 2 cores) the table has no ratio and no comparison
    serial = res.get("serial")
    base = (serial or next(iter(res.values())))["results"]
    print(f"machine: {base['machine']['cpu']}, {base['machine']['usable_cores']} usable cores; "
          f"torch {base['versions']['torch']}")
    for ex, r in res.items():
        print(f"  {ex}: families trained in the order {', '.join(d['family'] for d in r['results']['config']['distill'])}")
    print(f"{'executor':<8} {'date':<21} {'wall':>9} {'vs serial':>9} {'distill s':>9} {'convert s':>9} "
          f"{'profile s':>9}  artifacts by status")
    for ex, r in res.items():
        t = r["results"]["timings"]
        status = Counter(a["status"] for a in r["results"]["artifacts"])
        print(f"{ex:<8} {r['date']:<21} {int(r['wall_s'] // 60):>5d}m{int(r['wall_s'] % 60):02d}s "
              + (f"{r['wall_s'] / serial['wall_s']:>9.2f}" if serial else f"{'-':>9}") + f" {t.get('distill_s', 0):>9.0f} {t.get('convert_s', 0):>9.0f} "
              f"{t.get('profile_s', 0):>9.0f}  " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    print("host probe (slower core; compare walls only at like probe seconds):")
    for ex, r in res.items():
        pr = r.get("probe") or {}
        shaders = r.get("shader_cache", "user (a run before --shader-cache)")
        print(f"  {ex:<8} before: {_probe_text(pr.get('before'))}; after: {_probe_text(pr.get('after'))}; "
              f"GPU shader cache: {shaders}")
    for ex, r in res.items():
        if ex == "serial" or serial is None:
            continue
        diffs = _differences(_by_key(lockfile.comparable(base)), _by_key(lockfile.comparable(r["results"])))
        known = [d for d in diffs if _converter_nondeterminism(d, base, diffs)]
        other = [d for d in diffs if d not in known]
        same_report = _report_rows(root / "serial" / "out" / "report.md") == _report_rows(root / ex / "out" / "report.md")
        print(f"{ex} vs serial: report.md rows {'identical' if same_report else 'DIFFER'} apart from latency/memory "
              f"columns; results.json apart from timings/memory/hosts/paths: {len(other)} field(s) differ, plus "
              f"{len(known)} from files the converters write differently in every process")
        for d in other:
            print(f"    {d}")
        keys = sorted({d.split("]")[0] + "]" for d in known}, key=lambda k: int(k[len("/artifacts["):-1]))
        arts = _by_key(base)["artifacts"]
        if keys:
            print("    differing every run: " + ", ".join(arts[int(k[len("/artifacts["):-1])]["key"] for k in keys))


_LINE = re.compile(r"^\[\s*([\d.]+)s\] (.*)$")
_CONV = re.compile(r"^\[\d+/\d+\] (\S+ \S+ \S+): (.*)$")
# "[profile 3] mlp-small litert-cpu fp32: measured in 0.5s (profile 0.4s, quality 0.1s)" (older logs: "(profile and quality)")
_MEASURED = re.compile(r"^\[profile \d+\] (\S+ \S+ \S+): measured in ([\d.]+)s \((?:profile ([\d.]+)s, quality ([\d.]+)s|profile and quality)\)$")


def compare(new: Path, old: Path) -> None:
    """Two runs of one executor (e.g. before and after a change): every field of ``results.json``
    that differs apart from timings, memory, hosts and paths, and the files the converters write
    differently in every process."""
    from edgesdk import lockfile
    a, b = lockfile.read(old / "out"), lockfile.read(new / "out")
    diffs = _differences(_by_key(lockfile.comparable(a)), _by_key(lockfile.comparable(b)))
    known = [d for d in diffs if _converter_nondeterminism(d, a, diffs)]
    other = [d for d in diffs if d not in known]
    arts_a, arts_b = _by_key(a)["artifacts"], _by_key(b)["artifacts"]
    print(f"{new} vs {old}: {len(other)} field(s) differ apart from timings/memory/hosts/paths, plus {len(known)} "
          f"from files the converters write differently in every process")
    for d in other:
        i = int(d[len("/artifacts["):].split("]")[0]) if d.startswith("/artifacts[") else None
        where = f" ({arts_b[i]['key']})" if i is not None and i < len(arts_b) else ""
        print(f"    {d}{where}")
    if len(arts_a) != len(arts_b):
        print(f"    artifacts: {len(arts_a)} -> {len(arts_b)}")


def timeline(log: Path) -> None:
    """Where a run's wall time went, from its progress log: each family's training, each
    conversion (start, end, worker), the profiling queue, and how busy the workers were."""
    train, conv, workers, prof, measured = {}, {}, {}, [None, None], []
    for line in log.read_text().splitlines():
        m = _LINE.match(line)
        if not m:
            continue
        t, msg = float(m.group(1)), m.group(2)
        if msg.endswith(": distilling") or ": distilling (" in msg:
            train[msg.split(":")[0]] = [t, None]
        elif " student(s) ready in " in msg:
            train.setdefault(msg.split(":")[0], [t, None])[1] = t
        elif msg.startswith("[profile "):
            prof[0] = prof[0] if prof[0] is not None else t
            if (pm := _MEASURED.match(msg)):
                measured.append(pm.groups())
        elif msg.startswith("writing the report"):
            prof[1] = t
        elif (c := _CONV.match(msg)):
            tag, what = c.groups()
            if what.startswith("converting"):
                w = re.search(r"worker (\d+)", what)
                conv[tag] = [t, None, w.group(1) if w else "this process"]
            elif tag in conv and conv[tag][1] is None and (what.startswith(("done in", "failed", "rejected"))):
                conv[tag][1] = t
    print(f"timeline of {log}")
    for fam, (a, b) in train.items():
        print(f"  train {fam:<10} {a:7.1f} -> {b:7.1f}  ({b - a:6.1f} s)" if b is not None else f"  train {fam} {a:.1f} ->")
    done = [(a, b, w, tag) for tag, (a, b, w) in conv.items() if b is not None]
    if done:
        first, last = min(d[0] for d in done), max(d[1] for d in done)
        for w in sorted({d[2] for d in done}):
            busy = sum(b - a for a, b, ww, _ in done if ww == w)
            workers[w] = busy
            print(f"  worker {w:<12} busy {busy:6.1f} s of the conversion span {first:.1f} -> {last:.1f} "
                  f"({busy / max(last - first, 1e-9):.0%})")
        print(f"  {'conversion':<44} {'start':>7} {'end':>7} {'s':>6}  worker")
        for a, b, w, tag in sorted(done):
            print(f"  {tag:<44} {a:7.1f} {b:7.1f} {b - a:6.1f}  {w}")
    if prof[0] is not None and prof[1] is not None:
        print(f"  profiling queue {prof[0]:7.1f} -> {prof[1]:7.1f}  ({prof[1] - prof[0]:6.1f} s)")
    if measured:
        print(f"  {'profile job':<44} {'s':>6} {'profile':>8} {'quality':>8}")
        for tag, total, timing, quality in measured:
            print(f"  {tag:<44} {float(total):6.1f} {timing or '-':>8} {quality or '-':>8}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["run", "table", "timeline", "compare", "probe"])
    ap.add_argument("executor", nargs="?", choices=EXECUTORS)
    ap.add_argument("--root", default="/tmp/exec-bench", type=Path)
    ap.add_argument("--against", type=Path, help="compare: the other run's --root")
    ap.add_argument("--json", action="store_true", help="probe: print the figures as JSON")
    ap.add_argument("--shader-cache", choices=["fresh", "user"], default="fresh",
                    help="run: 'fresh' (default) gives the demo an empty Mesa shader cache, as on a new machine, "
                         "so the software GPU compiles every kernel; 'user' keeps ~/.cache's, warm after any "
                         "earlier run (up to ~30 s faster on 2 cores)")
    args = ap.parse_args(argv)
    if args.step == "probe":
        pr = probe_here()
        print(json.dumps(pr) if args.json else f"host probe, slower of {len(pr['cores'])} cores: {_probe_text(pr)} "
              f"({', '.join(f'core {c}: ' + _probe_text(v) for c, v in pr['cores'].items())})")
    elif args.step == "run":
        if not args.executor:
            ap.error("run needs an executor: serial, local or ray")
        run(args.executor, args.root, args.shader_cache)
    elif args.step == "compare":
        if not (args.executor and args.against):
            ap.error("compare needs an executor and --against ROOT (the other run's --root)")
        compare(args.root / args.executor, args.against / args.executor)
    elif args.step == "timeline":
        for ex in ([args.executor] if args.executor else EXECUTORS):
            if (args.root / ex / "log.txt").is_file():
                timeline(args.root / ex / "log.txt")
    else:
        table(args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
