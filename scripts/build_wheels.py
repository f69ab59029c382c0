"""Build the edge-sdk-runtime and edge-sdk wheels from a clean copy of this checkout.

    python scripts/build_wheels.py OUT_DIR        # prints the two wheel paths

Builds with this environment's setuptools (`python -m build --no-isolation`, no index needed) from
a copy of the package folders, so the checkout gets no build/ or *.egg-info folders. The tests
(tests/test_packaging.py) and benchmarks/install_size.py install what it builds; `make dist`
builds the release files (wheels and sdists, isolated build) instead.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheels(out: Path) -> dict[str, Path]:
    """{"runtime": edge_sdk_runtime-*.whl, "sdk": edge_sdk-*.whl}, built into ``out/dist``."""
    src = out / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for d in ("sdk", "models", "converters", "runtime"):
        shutil.copytree(ROOT / d, src / d, ignore=ignore)
    for f in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / f, src / f)
    for project in (src / "runtime", src):
        r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--wheel", "--outdir",
                            str(out / "dist"), str(project)], capture_output=True, text=True)
        if r.returncode:
            raise RuntimeError(f"building {project.name} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return {"runtime": next((out / "dist").glob("edge_sdk_runtime-*.whl")),
            "sdk": next((out / "dist").glob("edge_sdk-*.whl"))}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.split("\n\n")[1].strip())
    for path in build_wheels(Path(sys.argv[1]).resolve()).values():
        print(path)
