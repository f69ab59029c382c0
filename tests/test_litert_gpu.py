"""litert-gpu: convert, run on the software GPU (Mesa lavapipe), compare with PyTorch and with the
CPU twin on the same .tflite, profile; and say why (with the fix) when the driver is missing."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgesdk import runtime
import edgesdk
from conftest import ROOT, make_model
from edgesdk.runtime import gpu_sim, litert_gpu

WHY = litert_gpu.unavailable()
needs_gpu = pytest.mark.skipif(WHY is not None, reason=f"litert-gpu cannot run here: {WHY}")
# max |GPU - PyTorch| <= TOL * max(1, max|PyTorch|); measured: fp16 ~2e-3, fp32 ~5e-7 (transformer)
TOL = {"fp16": 1e-2, "fp32": 1e-5}
KINDS = ("convnet", "transformer")
_ARTS: dict = {}


@pytest.fixture(scope="module")
def gpu_art(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")

    def get(kind, scheme):
        if (kind, scheme) not in _ARTS:
            model, ex = make_model(kind)
            art = edgesdk.convert(model, ex, "litert-gpu", quantize=scheme, out_dir=out, name=f"{kind}-{scheme}")
            _ARTS[kind, scheme] = (art, model, ex)
        return _ARTS[kind, scheme]
    return get


def _err(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@needs_gpu
@pytest.mark.parametrize("scheme", ["fp32", "fp16"])
@pytest.mark.parametrize("kind", KINDS)
def test_runs_on_the_software_gpu_within_its_precision(gpu_art, kind, scheme):
    art, model, ex = gpu_art(kind, scheme)
    m = json.loads((art.path / "manifest.json").read_text())
    assert m["target"] == "litert-gpu" and m["device"] == "gpu" and m["gpu_precision"] == scheme
    assert m["verification"]["passed"] is True
    assert m["gpu"]["compiled_here"] is True and m["gpu"]["fully_accelerated"] is True
    assert m["runs_label"] == "software GPU (lavapipe)" and "Mesa 25" in m["device_label"]
    assert m["gpu"]["driver"]["packages"]["mesa-vulkan-drivers"].startswith("25.")

    sess = runtime.load(art.path)
    cpu = runtime.load(art.path / "model.tflite")  # the same file on LiteRT's CPU runtime (litert-cpu)
    assert sess.backend_name == "litert-gpu" and cpu.backend_name == "litert"
    rng = np.random.default_rng(7)
    for x in ([t.numpy() for t in ex], [rng.standard_normal(t.shape).astype(np.float32) for t in ex]):
        (y,) = sess.run(x)
        with torch.no_grad():
            ref = model(*[torch.from_numpy(a) for a in x]).numpy()
        bound = TOL[scheme] * max(1.0, float(np.abs(ref).max()))
        assert _err(y, ref) <= bound, (kind, scheme, _err(y, ref))
        assert _err(y, cpu.run(x)[0]) <= bound
        if scheme == "fp16":
            assert _err(y, ref) > 0  # half precision really is in use


@needs_gpu
def test_enforce_f32_is_more_precise_than_the_fp16_default(gpu_art):
    errs = {}
    for scheme in ("fp16", "fp32"):
        art, model, ex = gpu_art("transformer", scheme)
        with torch.no_grad():
            ref = model(*ex).numpy()
        errs[scheme] = _err(runtime.load(art.path).run([t.numpy() for t in ex])[0], ref)
    assert errs["fp32"] * 100 < errs["fp16"], errs


@needs_gpu
@pytest.mark.parametrize("kind", KINDS)
def test_profile_says_software_gpu(gpu_art, kind):
    art = gpu_art(kind, "fp16")[0]
    rep = runtime.profile(art.path, warmup=2, iters=10)
    assert rep.label == "software GPU (lavapipe)" and rep.target == "litert-gpu"
    assert rep.device.startswith("litert-gpu: software GPU (lavapipe, Mesa 25")
    assert len(rep.samples_ms) == 10 and rep.p50_ms > 0
    assert rep.ops == [] and "no per-op" in rep.ops_note
    assert rep.extra["gpu_precision"] == "fp16" and rep.extra["gpu_fully_accelerated"] is True
    assert json.loads(rep.to_json())["label"] == "software GPU (lavapipe)"


def test_without_the_driver_it_says_why_and_how_to_fix(tmp_path):
    """A fresh process that cannot find the driver: convert-only, the reason names `make gpu-sim`."""
    code = f"""
import json, sys, torch, edgesdk
from edgesdk import runtime
t = {{x.name: x for x in edgesdk.targets()}}["litert-gpu"]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4)).eval()
art = edgesdk.convert(model, (torch.randn(1, 8),), "litert-gpu", out_dir={str(tmp_path / 'out')!r}, name="m")
try:
    runtime.load(art.path)
    load = None
except runtime.TargetUnavailableError as e:
    load = str(e)
print(json.dumps({{"runs_here": t.runs_here, "runs": t.runs, "why_not": t.why_not, "load": load,
                  "verification": art.verification, "gpu": art.manifest.extra["gpu"]}}))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")}
    env["EDGESDK_GPU_SIM"] = str(tmp_path / "no-driver")
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["runs_here"] is False and r["runs"] == "convert-only"
    assert "make gpu-sim" in r["why_not"] and "no-driver" in r["why_not"]
    assert "make gpu-sim" in r["load"]
    v = r["verification"]
    assert v["passed"] is True and v["kind"].startswith("structural only")
    assert v["programs"]["forward"]["cpu_max_abs_err"] < 1e-5 and "FULLY_CONNECTED" in v["ops"]
    assert r["gpu"]["compiled_here"] is False and "make gpu-sim" in r["gpu"]["why_not"]


def test_a_moved_folder_or_an_old_mesa_is_explained(tmp_path, monkeypatch):
    (tmp_path / "gpu-sim.json").write_text(json.dumps({
        "icd": str(tmp_path / "lvp_icd.json"), "driver_library": str(tmp_path / "libvulkan_lvp.so"),
        "loader": str(tmp_path / "libvulkan.so.1"), "libdir": str(tmp_path), "mesa": "25.0.7-2~bpo12+1"}))
    monkeypatch.setenv("EDGESDK_GPU_SIM", str(tmp_path))
    why = gpu_sim.find()
    assert isinstance(why, str) and "incomplete or was moved" in why
    assert f"make gpu-sim GPU_SIM_DIR={tmp_path}" in why
    # bookworm's own Mesa 22 lavapipe: Dawn finds no adapter on it, so it is refused up front
    old = tmp_path / "old"
    old.mkdir()
    (old / "libvulkan_lvp.so").write_bytes(b"\x7fELF...Mesa 22.3.6 (LLVM 15.0.6)\x00")
    (old / "icd.json").write_text(json.dumps({"ICD": {"library_path": str(old / "libvulkan_lvp.so")}}))
    monkeypatch.delenv("EDGESDK_GPU_SIM")
    monkeypatch.setenv("VK_ICD_FILENAMES", str(old / "icd.json"))
    why = gpu_sim.find()
    assert isinstance(why, str) and "Mesa 22.3.6" in why and "make gpu-sim" in why


@needs_gpu
def test_a_fresh_process_finds_the_driver_and_stays_torch_free(gpu_art):
    art = gpu_art("convnet", "fp16")[0]
    code = (f"import sys; from edgesdk import runtime; r = runtime.profile({str(art.path)!r}, warmup=1, iters=3); "
            "print(r.label, 'torch' in sys.modules)")
    # our activation exported VK_ICD_FILENAMES: drop it, the child must find the folder by itself
    env = {k: v for k, v in os.environ.items() if k not in ("VK_ICD_FILENAMES", "VK_DRIVER_FILES")}
    if gpu_sim.active() is None or gpu_sim.active().folder is None:  # a driver the user selected
        env = dict(os.environ)
    p = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip().splitlines()[-1] == "software GPU (lavapipe) False"


def test_preload_order_puts_dependencies_first():
    import ai_edge_litert
    lib = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRtWebGpuAccelerator.so")
    assert "libc.so.6" in gpu_sim.elf_needed(lib)  # Dawn dlopens libvulkan.so.1: it is not linked
    assert "libvulkan.so.1" not in gpu_sim.elf_needed(lib)
    d = gpu_sim.find()
    if isinstance(d, gpu_sim.Driver) and d.folder:
        names = [os.path.basename(p) for p in d.preload]
        assert names[-1] == "libvulkan.so.1"
        if "libdrm2" in d.packages:  # bookworm's libdrm is older than Mesa 25 wants: ours loads first
            assert "libdrm.so.2" in names
