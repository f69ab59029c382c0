"""Installed size and import time: the runtime wheel alone against the full SDK.

Builds both wheels from this checkout, installs each configuration into its own fresh venv
(`python -m venv --without-pip`, then pip with this repository's constraints.txt, so every venv gets
the same exact versions), and measures, side by side in one run:

- download: the files `pip download` fetches for the same requirements and constraints, in MB;
- installed: the venv's site-packages on disk (`du`, 1 MB = 2^20 bytes);
- import: wall time of a fresh interpreter running `import edgesdk.runtime` (what an app does),
  and `import edgesdk.converters` (what `edgesdk.convert` loads on first use) where installed,
  minus a fresh `python -c "import sys"`, median [min, max] of --repeats runs; every venv is timed
  in the same loop, interleaved.

    python benchmarks/install_size.py                 # prints a table (about 5 minutes, ~6 GB of disk)
    python benchmarks/install_size.py --markdown      # the same as a Markdown table

Needs the package index (pip's cache makes repeats quick).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from build_wheels import build_wheels  # noqa: E402

CONSTRAINTS = ROOT / "constraints.txt"

CONFIGS = [  # name, requirement of the runtime wheel (None: both wheels, full SDK), imports to time
    ("edge-sdk-runtime[onnx]", "[onnx]", ("edgesdk.runtime",)),
    ("edge-sdk-runtime[onnx,litert]", "[onnx,litert]", ("edgesdk.runtime",)),
    ("edge-sdk (full)", None, ("edgesdk.runtime", "edgesdk.converters")),
]


def run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    return r


def pip(*args) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *map(str, args)])


def du_mb(path: Path) -> float:
    total = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total / 2**20


def clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "EDGESDK_LOG")}


def import_ms(python: Path, module: str, repeats: int, cwd: Path) -> list[float]:
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run([str(python), "-c", f"import {module}"], env=clean_env(), cwd=cwd)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="fresh interpreters per import timing (default 7)")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--keep", help="build in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="edgesdk-install-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        wheels = build_wheels(work)
        rows = []
        venvs = []
        for name, extras, modules in CONFIGS:
            env_dir = work / f"venv{len(venvs)}"
            run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
            python = env_dir / "bin" / "python"
            reqs = [f"{wheels['runtime']}{extras}"] if extras is not None else \
                   [f"{wheels['runtime']}[onnx,litert,executorch,qnn,signing]", str(wheels["sdk"])]
            house = work / f"wheels{len(venvs)}"
            t0 = time.perf_counter()
            pip("download", "-d", house, "-c", CONSTRAINTS, *reqs)   # what a user downloads
            pip("--python", python, "install", "-c", CONSTRAINTS, *reqs)
            install_s = time.perf_counter() - t0
            site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                            env=clean_env()).stdout.strip())
            has_torch = (site / "torch").is_dir()
            ndists = len(list(site.glob("*.dist-info")))
            rows.append({"name": name, "dists": ndists, "torch": has_torch,
                         "download_mb": sum(p.stat().st_size for p in house.iterdir()) / 2**20,
                         "installed_mb": du_mb(site), "install_s": install_s})
            venvs.append((python, modules))
        # import timings, interleaved across venvs so drift hits all alike
        cwd = work  # no checkout on the path: the installed wheels are what is imported
        base: list[float] = []
        times = [{m: [] for m in mods} for _, mods in venvs]
        for _ in range(args.repeats):
            base += import_ms(venvs[0][0], "sys", 1, cwd)
            for i, (python, mods) in enumerate(venvs):
                for m in mods:
                    times[i][m] += import_ms(python, m, 1, cwd)
        b = statistics.median(base)
        for row, t in zip(rows, times):
            row["import"] = {m: (statistics.median(v) - b, min(v) - b, max(v) - b) for m, v in t.items()}
        print_table(rows, b, args.markdown)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _ms(t: tuple[float, float, float]) -> str:
    return f"{t[0]:.0f} [{t[1]:.0f}, {t[2]:.0f}]"


def print_table(rows: list[dict], base_ms: float, markdown: bool) -> None:
    head = ["install", "distributions", "torch", "download MB", "installed MB",
            "import edgesdk.runtime ms", "import edgesdk.converters ms"]
    body = []
    for r in rows:
        conv = r["import"].get("edgesdk.converters")
        body.append([r["name"], str(r["dists"]), "yes" if r["torch"] else "no", f"{r['download_mb']:.0f}",
                     f"{r['installed_mb']:.0f}", _ms(r["import"]["edgesdk.runtime"]),
                     "-" if conv is None else _ms(conv)])
    full = next(r for r in rows if r["name"].startswith("edge-sdk (full)"))
    if markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for b in body:
            print("| " + " | ".join(b) + " |")
    else:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
        print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
        for b in body:
            print("  ".join(c.ljust(w) for c, w in zip(b, widths)))
    print(f"\nimport times are wall time of a fresh interpreter minus `python -c 'import sys'` ({base_ms:.0f} ms), "
          "median [min, max] of the runs; installed = the venv's site-packages")
    for r in rows:
        if r is not full:
            print(f"{r['name']}: {r['installed_mb'] / full['installed_mb'] * 100:.1f}% of the full SDK's installed "
                  f"size ({full['installed_mb'] / r['installed_mb']:.0f}x smaller)")


if __name__ == "__main__":
    main()
