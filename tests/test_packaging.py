"""Installed like a library: one `edgesdk` namespace, two wheels, quiet commands.

The wheels are built from a copy of this checkout and installed into fresh virtual environments:
the runtime wheel with `[onnx,litert]` into one without torch (its dependencies from a local
wheelhouse, `.cache/wheelhouse`, filled by `pip download` on first use), both wheels into one
layered over this environment's dependencies, run from a folder holding decoy `models/`,
`runtime/`, `converters/` and `sdk/` packages.
"""
# rename_namespace: skip  (this file names the old top-level packages on purpose)

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

OLD_NAMES = ("sdk", "models", "converters", "runtime")
SOURCE_DIRS = ("sdk", "models", "converters", "runtime", "tests", "benchmarks", "scripts")
WHEELHOUSE = ROOT / ".cache" / "wheelhouse"


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(cmd, **kw)
    assert r.returncode == 0, f"{cmd} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _pip(*args, python: Path | None = None) -> subprocess.CompletedProcess:
    """pip of this environment; with ``python``, installing into that venv, which must not see
    this checkout (PYTHONPATH: its egg-info would pass for an installed edge-sdk)."""
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    if python is not None:
        cmd += ["--python", str(python)]
    return _run(cmd + list(args), env=_env(installed=python is not None))


# ----------------------------------------------------------------------------- static checks

def test_every_package_folder_is_mapped_into_the_namespace():
    """A new subpackage must be listed in the build configuration, or the wheel would lack it."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = {v: k for k, v in cfg["package-dir"].items()}  # folder -> package
    expected = set()
    for folder, package in mapping.items():
        for init in sorted((ROOT / folder).rglob("__init__.py")):
            rel = init.parent.relative_to(ROOT / folder).parts
            expected.add(".".join((package, *rel)))
    data_only = set(cfg["packages"]) - expected  # folders of package data (no __init__.py)
    assert expected <= set(cfg["packages"])
    assert data_only <= set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"])
    rt = tomllib.loads((ROOT / "runtime" / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert rt["packages"] == ["edgesdk.runtime"] and not [p for p in (ROOT / "runtime").rglob("__init__.py")
                                                          if p.parent != ROOT / "runtime"]


def _old_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                 else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in names if n.split(".")[0] in OLD_NAMES]
    return found


def test_code_imports_only_the_namespace():
    """No module imports `runtime`, `models`, ... by their folder names (a user's own `models/`
    folder would shadow them); run /work/helpers/rename_namespace.py-style rewrites otherwise."""
    bad = []
    for d in SOURCE_DIRS:
        for f in sorted((ROOT / d).rglob("*.py")):
            if "build" not in f.relative_to(ROOT).parts:
                bad += _old_imports(f)
    assert not bad, "old top-level imports:\n" + "\n".join(bad)
    pattern = re.compile(r"-m\s+[\"']?(?:%s)\.\w" % "|".join(OLD_NAMES))
    texts = [ROOT / "Makefile", ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("scripts/*"),
             *ROOT.glob(".ci/*"), *(f for d in SOURCE_DIRS for f in (ROOT / d).rglob("*.py"))]
    bad = [f"{f.relative_to(ROOT)}: {m.group(0)}" for f in texts if f.is_file()
           for m in pattern.finditer(f.read_text(errors="replace"))]
    assert not bad, "`-m` with an old module path:\n" + "\n".join(bad)


def test_the_runtime_namespace_imports_no_torch_and_no_sdk_layer():
    code = ("import sys, edgesdk.runtime; print(sorted(m for m in sys.modules "
            "if m.split('.')[0] in ('torch', 'edgesdk') and not m.startswith('edgesdk.runtime')))")
    out = _run([sys.executable, "-c", code], cwd=ROOT).stdout
    assert out.strip() == "['edgesdk']"  # the package itself: lazy names only


# ----------------------------------------------------------------------------- wheels

@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict:
    """Both wheels, built (no isolation, this environment's setuptools) from a copy of the sources."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from build_wheels import build_wheels
    return build_wheels(tmp_path_factory.mktemp("dist"))


def _metadata(whl: Path) -> tuple[list[str], str]:
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    return names, meta


def test_wheels_map_the_folders_into_one_namespace(wheels):
    names, meta = _metadata(wheels["runtime"])
    code = [n for n in names if ".dist-info/" not in n]
    assert code and all(n.startswith("edgesdk/runtime/") for n in code)  # no edgesdk/__init__.py
    assert "edgesdk/runtime/session.py" in code and "edgesdk/runtime/logs.py" in code
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    base = [r for r in requires if "extra ==" not in r]
    assert [r.split("<")[0].split(">")[0] for r in base] == ["numpy"]
    assert {e for e in re.findall(r"^Provides-Extra: (.+)$", meta, re.M)} >= {"onnx", "litert", "executorch", "qnn"}
    torch_reqs = [r for r in requires if r.startswith("torch")]
    assert torch_reqs and all('extra == "executorch"' in r for r in torch_reqs)
    assert not [r for r in requires if "==" in r.split(";")[0]], f"exact pins: {requires}"

    names, meta = _metadata(wheels["sdk"])
    assert {"edgesdk/__init__.py", "edgesdk/cli.py", "edgesdk/demo.yaml", "edgesdk/converters/onnx_cpu.py",
            "edgesdk/models/teachers/checkpoints/decoder.safetensors"} <= set(names)
    assert not [n for n in names if n.startswith("edgesdk/runtime/")]  # that is edge-sdk-runtime's
    assert not {n.split("/")[0] for n in names if ".dist-info/" not in n} - {"edgesdk"}
    requires = re.findall(r"^Requires-Dist: (.+)$", meta, re.M)
    assert any(r.startswith("edge-sdk-runtime[") and r.endswith("==0.1.0") for r in requires)
    assert [r for r in requires if "==" in r.split(";")[0]] == [r for r in requires if r.startswith("edge-sdk-runtime")]
    with zipfile.ZipFile(wheels["sdk"]) as z:
        ep = next(z.read(n).decode() for n in z.namelist() if n.endswith("entry_points.txt"))
    assert "edgesdk = edgesdk.cli:main" in ep


def _venv(path: Path) -> Path:
    _run([sys.executable, "-m", "venv", "--without-pip", str(path)])
    return path / "bin" / "python"


def _layer_over_this_env(python: Path) -> None:
    """This environment's dependencies (torch, ...) after the venv's own packages. Done after the
    installs: pip would otherwise find this environment's edge-sdk and skip the wheel."""
    site = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                env=_env(installed=True)).stdout.strip()
    Path(site, "zz_layer.pth").write_text(f"import site; site.addsitedir({sysconfig.get_paths()['purelib']!r})\n")


def _decoys(folder: Path) -> Path:
    """A user's project: its own models/, runtime/, converters/ and sdk/ packages."""
    for name in ("models", "runtime", "converters", "sdk"):
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(f"raise ImportError('the decoy {name}/ was imported')\n")
    return folder


DECOY_SCRIPT = r"""
import json, sys, torch, numpy as np
import edgesdk
from edgesdk import runtime
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
x = torch.randn(1, 8)
names = [t.name for t in edgesdk.targets()]
art = edgesdk.convert(model, (x,), "onnx-cpu", out_dir="out", name="tiny")
(y,) = runtime.load(art.path).run([x.numpy()])
rep = edgesdk.profile(art.path, iters=3, warmup=1)
print(json.dumps({"file": edgesdk.__file__, "targets": names, "err": float(np.abs(y - model(x).detach().numpy()).max()),
                  "p50": rep.p50_ms, "top": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def test_public_api_from_a_folder_with_decoy_packages(wheels, tmp_path):
    """Both wheels installed, run from a folder whose own models/, runtime/... must not interfere."""
    python = _venv(tmp_path / "venv")
    _pip("install", "--no-deps", "--no-index", str(wheels["runtime"]), str(wheels["sdk"]), python=python)
    _layer_over_this_env(python)
    work = _decoys(tmp_path / "project")
    r = _run([str(python), "-c", DECOY_SCRIPT], cwd=work, env=_env(installed=True))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["file"].startswith(str(tmp_path / "venv"))          # the installed wheel, not the checkout
    assert "onnx-cpu" in res["targets"] and res["err"] < 1e-4 and res["p50"] > 0
    assert not set(res["top"]) & set(OLD_NAMES)
    assert r.stderr.strip() == "" or "decoy" not in r.stderr

    # the console script of the wheel, from the same folder: its table and nothing else
    r = _run([str(tmp_path / "venv" / "bin" / "edgesdk"), "targets", "--json"], cwd=work, env=_env(installed=True))
    assert {t["name"] for t in json.loads(r.stdout)} >= {"onnx-cpu", "litert-cpu", "executorch-xnnpack"}
    assert r.stderr == ""


RUNTIME_SCRIPT = r"""
import importlib.util, json, sys
import numpy as np
from edgesdk import runtime
out = {}
for path in sys.argv[1:]:
    sess = runtime.load(path, require_verified=True)             # payload sha256 against the manifest
    ys = sess.run([np.zeros(s.shape, s.dtype) for s in sess.inputs])
    rep = runtime.profile(path, iters=5, warmup=1)
    out[sess.manifest.target] = {"shape": list(ys[0].shape), "p50": rep.p50_ms, "verified": sess.verified}
out["torch_installed"] = importlib.util.find_spec("torch") is not None
out["torch_imported"] = "torch" in sys.modules
print(json.dumps(out))
"""


def _wheelhouse() -> Path:
    """numpy, onnxruntime and ai-edge-litert wheels at the versions of constraints.txt (and their
    dependencies), downloaded once so that installs into fresh venvs need no index."""
    marker = WHEELHOUSE / ".complete"
    want = (ROOT / "constraints.txt").read_text()
    if not marker.is_file() or marker.read_text() != want:
        shutil.rmtree(WHEELHOUSE, ignore_errors=True)
        _pip("download", "--only-binary=:all:", "-d", str(WHEELHOUSE), "-c", str(ROOT / "constraints.txt"),
             "numpy", "onnxruntime", "ai-edge-litert")
        marker.write_text(want)
    return WHEELHOUSE


def test_runtime_wheel_runs_onnx_and_litert_without_torch(wheels, converted, tmp_path):
    """`pip install edge_sdk_runtime-*.whl[onnx,litert]` in a fresh venv: no torch, and artifacts
    made by the full SDK load, verify, run and profile."""
    arts = [converted("mlp", t)[0].path for t in ("onnx-cpu", "litert-cpu")]
    python = _venv(tmp_path / "venv")
    _pip("install", "--no-index", "--find-links", str(_wheelhouse()), f"{wheels['runtime']}[onnx,litert]",
         python=python)
    work = _decoys(tmp_path / "app")
    r = _run([str(python), "-c", RUNTIME_SCRIPT, *map(str, arts)], cwd=work, env=_env(installed=True))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res.pop("torch_installed") is False and res.pop("torch_imported") is False
    assert set(res) == {"onnx-cpu", "litert-cpu"}
    assert all(v["shape"] == [2, 8] and v["p50"] > 0 and v["verified"] for v in res.values())
    assert r.stderr == ""  # quiet: no LiteRT registry or delegate lines, even at exit


# ----------------------------------------------------------------------------- quiet output

def _env(installed: bool = False, **extra) -> dict:
    """The environment for a child; ``installed=True`` for a venv's own install (no PYTHONPATH)."""
    drop = {"EDGESDK_LOG"} | ({"PYTHONPATH", "PYTHONHOME"} if installed else set())
    env = {k: v for k, v in os.environ.items() if k not in drop}
    gpu = ROOT / ".cache" / "gpu-sim"
    if gpu.is_dir():
        env.setdefault("EDGESDK_GPU_SIM", str(gpu))  # litert-gpu's probe loads LiteRT's accelerators
    env.update(extra)
    return env


def _cli(*args, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=300)


def test_edgesdk_targets_prints_only_its_table():
    import edgesdk
    r = _cli("targets")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # no backend log lines, not even at exit
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["target", "device", "format"]
    assert [ln.split()[0] for ln in lines[1:]] == [t.name for t in edgesdk.targets()]


def test_native_logs_come_back_with_verbose(converted):
    """The silence is ours: --verbose (EDGESDK_LOG=debug) lets LiteRT's own lines through."""
    art = str(converted("mlp", "litert-cpu")[0].path)
    quiet = _cli("run", art)
    assert quiet.returncode == 0 and quiet.stderr.strip() == "(no --inputs given: ran on generated inputs, seed 0)"
    loud = _cli("run", art, "--verbose")
    assert loud.returncode == 0 and "XNNPACK delegate" in loud.stderr
    assert "XNNPACK delegate" in _cli("run", art, EDGESDK_LOG="debug").stderr
    assert _cli("run", art, "--quiet").stderr == ""  # the CLI's own notes are INFO records


@pytest.mark.slow
def test_runtime_at_the_lower_bounds_of_its_ranges(wheels, converted, tmp_path):
    """The oldest releases the runtime's ranges admit (numpy 2.0, onnxruntime 1.30) run its artifacts."""
    arts = [converted("mlp", t)[0].path for t in ("onnx-cpu", "litert-cpu")]
    python = _venv(tmp_path / "venv")
    _pip("install", f"{wheels['runtime']}[onnx,litert]", "numpy==2.0.*", "onnxruntime==1.30.*", python=python)
    r = _run([str(python), "-c", "import numpy, onnxruntime; print(numpy.__version__, onnxruntime.__version__)"],
             env=_env(installed=True))
    assert r.stdout.split()[0].startswith("2.0.") and r.stdout.split()[1].startswith("1.30.")
    r = _run([str(python), "-c", RUNTIME_SCRIPT, *map(str, arts)], cwd=_decoys(tmp_path / "app"),
             env=_env(installed=True))
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert {k for k in res if not k.startswith("torch")} == {"onnx-cpu", "litert-cpu"}
