"""The import rules that keep the layers honest (checked in fresh interpreters)."""

import subprocess
import sys

import pytest

from conftest import ROOT, layer


def _modules_after(stmt: str) -> set[str]:
    code = f"import sys; {stmt}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def _ours(mods):
    """The layers (sdk, models, converters, runtime) and torch that these modules belong to."""
    return {layer(m) for m in mods} & {"sdk", "models", "converters", "runtime", "torch"}


@pytest.mark.parametrize("stmt,allowed", [
    ("from edgesdk import runtime", {"runtime"}),
    # the ORT and LiteRT backends stay torch-free when they are actually used
    ("import edgesdk.runtime.ort, edgesdk.runtime.litert, edgesdk.runtime.profile", {"runtime"}),
    ("from edgesdk import models", {"models", "torch"}),
    ("from edgesdk import converters", {"converters", "runtime", "torch"}),
])
def test_import_rules(stmt, allowed):
    assert _ours(_modules_after(stmt)) <= allowed


def test_runtime_runs_onnx_and_tflite_without_torch(converted):
    """Loading, running and profiling ONNX and LiteRT artifacts never imports torch."""
    onnx_art = converted("mlp", "onnx-cpu")[0]
    tfl_art = converted("mlp", "litert-cpu")[0]
    stmt = (f"from edgesdk import runtime; [runtime.profile(p, iters=3, warmup=1) for p in ({str(onnx_art.path)!r}, "
            f"{str(tfl_art.path)!r})]")
    assert "torch" not in _ours(_modules_after(stmt))
