"""Quantization per target: every scheme converts, runs and passes its accuracy gate; calibration
API; the gate fails on a quantization-hostile layer and auto-fallback repairs it by name."""

import copy
import json

import numpy as np
import pytest
import torch
from torch import nn

from edgesdk import converters
from edgesdk import runtime
import edgesdk
from edgesdk.converters.qat import convert_qat, prepare_qat
from edgesdk.cli import main

# the gate runs the artifact: targets that cannot run here are covered by test_convert_only.py
SCHEMES = [(t.name, q) for t in edgesdk.targets() if t.runs_here for q in t.quantization[1:] if q != "int8-qat"]


class DigitsConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, image):  # (B, 1, 8, 8)
        h = torch.relu(self.conv1(image))
        h = torch.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


def _digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.data / 16.0, dtype=torch.float32)
    return x, torch.tensor(d.target)


def _train(model, x, y, steps=150):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for i in range(steps):
        idx = torch.randint(0, len(x), (64,))
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits_models():
    """A trained MLP and conv net on sklearn's digits, with real calibration / held-out data."""
    x, y = _digits()
    torch.manual_seed(0)
    mlp = _train(nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)), x, y)
    conv = _train(DigitsConv(), x.view(-1, 1, 8, 8), y)
    acc = (mlp(x).argmax(1) == y).float().mean().item()
    assert acc > 0.9, acc
    batch = 8
    cal = [(x[i:i + batch],) for i in range(0, 256, batch)]            # 32 samples
    ev = [(x[i:i + batch],) for i in range(1000, 1256, batch)]         # 32 held-out samples
    return {
        "mlp": (mlp, (x[:batch],), cal, ev),
        "conv": (conv, (x[:batch].view(-1, 1, 8, 8),), [(c.view(-1, 1, 8, 8),) for (c,) in cal],
                 [(e.view(-1, 1, 8, 8),) for (e,) in ev]),
    }


@pytest.mark.parametrize("kind", ["mlp", "conv"])
@pytest.mark.parametrize("target,scheme", SCHEMES)
def test_every_scheme_converts_runs_and_passes_the_gate(digits_models, tmp_path, target, scheme, kind):
    model, ex, cal, ev = digits_models[kind]
    art = edgesdk.convert(model, ex, target, quantize=scheme, calibration=cal if scheme.endswith("static") else None,
                      eval_data=ev, max_drop=0.03, out_dir=tmp_path)
    q = art.manifest.quantization
    assert q["scheme"] == scheme and q["gate"]["passed"] and q["gate"]["drop"] <= 0.03
    assert q["eval"]["samples"] == 32 and len(q["eval"]["sha256"]) == 64
    assert (q["calibration"] is not None) == scheme.endswith("static")
    out = art.verification["outputs"][0]
    assert out["top1_agreement"] >= 0.97 and out["cosine_min"] > 0.99
    # the artifact runs on float inputs whatever its internal (or LiteRT I/O) quantization
    sess = runtime.load(art.path)
    (logits,) = sess.run([ev[0][0].numpy()])
    assert logits.dtype == np.float32 and logits.shape == (8, 10)
    agree = (logits.argmax(1) == model(ev[0][0]).argmax(1).numpy()).mean()
    assert agree >= 0.875


def test_calibration_forms_agree_and_are_hashed(digits_models, tmp_path):
    model, ex, cal, _ = digits_models["mlp"]
    stacked = np.stack([c[0].numpy() for c in cal])                   # (32, 8, 64)
    np.savez(tmp_path / "named.npz", input=stacked)
    np.savez(tmp_path / "positional.npz", stacked)
    hashes = set()
    for form in (cal, lambda: iter(cal), str(tmp_path / "named.npz"), tmp_path / "positional.npz"):
        art = edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-static", calibration=form, out_dir=tmp_path / "o")
        c = art.manifest.quantization["calibration"]
        assert c["samples"] == 24  # a quarter held out for the gate by default
        hashes.add(c["sha256"])
        assert art.manifest.quantization["eval"]["samples"] == 8
    assert len(hashes) == 1


def test_calibration_errors_are_clear(digits_models, tmp_path):
    model, ex, cal, _ = digits_models["mlp"]
    with pytest.raises(edgesdk.errors.ConfigError, match="int8-static needs calibration data"):
        edgesdk.convert(model, ex, "litert-cpu", quantize="int8-static", out_dir=tmp_path)
    with pytest.raises(edgesdk.errors.ConfigError, match="needs at least 8 calibration samples, got 3"):
        edgesdk.convert(model, ex, "executorch-xnnpack", quantize="int8-static", calibration=cal[:3], out_dir=tmp_path)
    with pytest.raises(edgesdk.errors.ConfigError, match=r"calibration sample 0, input 'input': shape \[2, 64\]"):
        edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-static", calibration=[(torch.zeros(2, 64),)] * 9,
                    out_dir=tmp_path)
    np.savez(tmp_path / "wrong.npz", pixels=np.zeros((9, 8, 64), np.float32))
    with pytest.raises(edgesdk.errors.ConfigError, match=r"arrays \['pixels'\] do not match the model inputs \['input'\]"):
        edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-static", calibration=tmp_path / "wrong.npz",
                    out_dir=tmp_path)


class Hostile(nn.Module):
    """A classifier with one quantization-hostile layer: `spike` emits 4 channels ~2000x larger
    than the rest, which the prediction does not use; per-tensor int8 crushes the others."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.spike, self.head = nn.Linear(32, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        with torch.no_grad():
            self.spike.weight[:4] *= 2000.0
            self.head.weight[:, :4] = 0.0

    def forward(self, x):
        return self.head(torch.relu(self.spike(torch.relu(self.fc1(x)))))


@pytest.mark.parametrize("target", ["onnx-cpu", "executorch-xnnpack", "litert-cpu"])
def test_hostile_layer_fails_the_gate_and_auto_fallback_repairs_it(tmp_path, target):
    model = Hostile().eval()
    torch.manual_seed(1)
    x = torch.randn(4, 32)
    cal = [(torch.randn(4, 32),) for _ in range(32)]
    with pytest.raises(edgesdk.errors.ToleranceError) as e:
        edgesdk.convert(model, (x,), target, quantize="int8-static", calibration=cal, max_drop=0.05, out_dir=tmp_path)
    msg = str(e.value)
    assert "exceeds max_drop 0.05" in msg and "Most sensitive layers (simulated relative error): spike" in msg
    assert list(tmp_path.iterdir()) == []
    art = edgesdk.convert(model, (x,), target, quantize="int8-static", calibration=cal, max_drop=0.05,
                      auto_fallback=True, out_dir=tmp_path)
    q = art.manifest.quantization
    assert q["gate"]["passed"] and q["gate"]["drop"] <= 0.05
    assert q["kept_float"][0]["layer"] == "spike" and "auto-fallback" in q["kept_float"][0]["reason"]
    assert q["attempts"][0]["passed"] is False and q["attempts"][-1]["passed"] is True
    assert q["sensitivity"][0]["layer"] == "spike"


def test_user_metric_drives_the_gate(digits_models, tmp_path):
    model, ex, cal, ev = digits_models["mlp"]
    x, y = _digits()
    ev_labels = [y[1000 + i * 8: 1008 + i * 8].numpy() for i in range(len(ev))]

    def accuracy(outputs, inputs):
        return float(np.mean([(o[0].argmax(1) == lab).mean() for o, lab in zip(outputs, ev_labels)]))

    art = edgesdk.convert(model, ex, "onnx-cpu", quantize="int8-dynamic", eval_data=ev, metric=accuracy,
                      max_drop=0.02, out_dir=tmp_path)
    v = art.verification
    assert v["drop_basis"] == "metric" and v["metric_fp32"] > 0.85 and abs(v["drop"]) <= 0.02


def test_qat_hook_exports_int8_without_calibration(tmp_path):
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    x = torch.randn(4, 16)
    qat = prepare_qat(copy.deepcopy(teacher), (x,))
    opt = torch.optim.AdamW(qat.parameters(), 1e-3)
    for _ in range(20):  # distillation loss on fake-quantized weights and activations
        b = torch.randn(4, 16)
        loss = nn.functional.mse_loss(qat(b), teacher(b).detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    int8 = convert_qat(qat)
    art = edgesdk.convert(int8, (x,), "executorch-xnnpack", quantize="int8-qat", max_drop=0.05, out_dir=tmp_path)
    assert art.manifest.quantization["calibration"] is None and art.verification["min_cosine"] > 0.99
    delegated = art.manifest.extra["partition"]["forward"]
    assert delegated["delegated_nodes"] > 0
    with pytest.raises(edgesdk.errors.ConfigError, match="convert_qat"):
        edgesdk.convert(teacher, (x,), "executorch-xnnpack", quantize="int8-qat", out_dir=tmp_path)


def test_cli_quantize_with_calib_file(digits_models, tmp_path, capsys):
    model, ex, cal, _ = digits_models["conv"]
    (tmp_path / "m.py").write_text(
        "import torch\nfrom torch import nn\n"
        "def build():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10)).eval(), "
        "(torch.rand(8, 1, 8, 8),)\n")
    np.savez(tmp_path / "calib.npz", np.stack([c[0].numpy() for c in cal]))
    assert main(["convert", f"{tmp_path}/m.py:build", "-t", "onnx-cpu", "--quantize", "int8-static",
                 "--calib", str(tmp_path / "calib.npz"), "--max-drop", "0.5", "-o", str(tmp_path), "--json", "-q"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["quantize"] == "int8-static" and r["gate"]["passed"] and r["calibration"]["samples"] == 24
    assert main(["convert", f"{tmp_path}/m.py:build", "-t", "litert-cpu", "--quantize", "int8-dynamic",
                 "-o", str(tmp_path), "-q"]) == 0
    assert "int8-dynamic: drop" in capsys.readouterr().out
    assert main(["convert", f"{tmp_path}/m.py:build", "-t", "onnx-cpu", "--quantize", "int3", "-q"]) == 2
    assert "Available for onnx-cpu: fp32, int8-dynamic, int8-static, fp16" in capsys.readouterr().err


def test_targets_list_their_schemes():
    by = {t.name: t.quantization for t in edgesdk.targets()}
    assert by["onnx-cpu"] == ("fp32", "int8-dynamic", "int8-static", "fp16")
    assert by["executorch-xnnpack"][:4] == ("fp32", "int8-static", "int8-dynamic", "int4-weight")
    assert by["litert-cpu"] == ("fp32", "int8-dynamic", "int8-static", "int8-weight", "fp16")
    assert converters.get_converter("onnx-cpu").calibrated == ("int8-static",)


def test_carried_state_outputs_are_judged_by_cosine_not_top1():
    """A generation program's K/V outputs are state, not class scores: the gate must not take their
    argmax (a fresh demo rejected encdec int8-dynamic on 'top-1 agreement' of cross_k_1 at cosine 0.9999)."""
    from edgesdk.converters.accuracy import _classifier_like
    kv = np.zeros((2, 32, 64), np.float32)
    for name in ("cross_k_1", "cross_v_0", "new_k_3", "kv_2", "encode.cross_k_0", "past_key_values"):
        assert not _classifier_like(kv, name), name
    for name in ("logits", "step.logits", "output", "output_0", "classifier"):
        assert _classifier_like(kv, name), name


def test_cosines_read_the_same_whatever_the_blas_thread_count():
    """Ray gives a one-CPU task OMP_NUM_THREADS=1, the serial and local executors convert with every
    core; a verification's or gate's cosine must read the same to the last digit either way
    (`lockfile.comparable` compares results.json exactly). A BLAS dot product splits its sum by
    thread count: with it, this pair's cosine differed in the 16th digit between 1 and 2 threads."""
    import os
    import subprocess
    import sys
    code = ("import numpy as np, torch; from edgesdk.converters.convert import compare; "
            "rng = np.random.default_rng(0); r = rng.standard_normal(300_000); g = r + 1e-3 * rng.standard_normal(300_000); "
            "print(repr(compare([torch.from_numpy(r)], [g], ['y'])[0]['cosine']))")
    got = {t: subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                             env={**os.environ, "OMP_NUM_THREADS": t, "OPENBLAS_NUM_THREADS": t}).stdout
           for t in ("1", "2")}
    assert got["1"] == got["2"] and float(got["1"]) > 0.99999
