"""The import rules that keep the layers honest (checked in fresh interpreters)."""

import subprocess
import sys

import pytest

from conftest import ROOT, layer

sys.path.insert(0, str(ROOT / "scripts"))
import arch_metrics as arch  # noqa: E402


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
    # models/ imports one module of ours, the stdlib-only registry (which loads runtime/'s package)
    ("from edgesdk import models", {"models", "runtime", "torch"}),
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


def test_models_import_only_the_registry_of_ours():
    """models/ stays plain PyTorch: of our code it imports the plug-in registry (stdlib only) and
    nothing else, so the runtime modules it loads are the registry, its errors and runtime/'s
    package."""
    after = _modules_after("from edgesdk import models")
    runtime_mods = {m for m in after if layer(m) == "runtime"}
    imported = {t for mod, path in arch.module_files().items() if mod.startswith("edgesdk.models")
                for t, _, _ in arch.imports_of(mod, path, arch.module_files()) if not t.startswith("edgesdk.models")}
    assert imported == {"edgesdk.runtime.registry"}
    assert not any(m.startswith(("edgesdk.runtime.ort", "edgesdk.runtime.litert", "edgesdk.runtime.executorch"))
                   for m in runtime_mods)


# Import cycles allowed (each would have to be closed only by an import inside a function). None
# is left; the set may only shrink: a new cycle fails, and so does an entry here that is gone.
KNOWN_CYCLES: set = set()


def test_import_graph_has_no_new_cycle():
    """Static import graph of sdk/, models/, converters/ and runtime/ (imports inside functions
    included): no strongly connected component beyond the known ones."""
    found = {tuple(c) for c in arch.cycles(arch.import_graph(arch.module_files()))}
    assert found - KNOWN_CYCLES == set(), f"new import cycle(s): {sorted(found - KNOWN_CYCLES)}"
    assert KNOWN_CYCLES - found == set(), f"fixed, remove from KNOWN_CYCLES: {sorted(KNOWN_CYCLES - found)}"


def test_no_module_imports_another_modules_private_name():
    """``from m import _x`` and ``m._x`` across our modules: a helper two modules share is public."""
    assert arch.private_imports(arch.module_files()) == []


def test_the_checks_catch_what_they_look_for(tmp_path):
    """The graph and private-import checks find a planted cycle (inside a function) and a planted
    private import."""
    for folder in arch.PACKAGES:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "runtime" / "a.py").write_text("from edgesdk.runtime.b import _hidden\n")
    (tmp_path / "runtime" / "b.py").write_text("def f():\n    import edgesdk.runtime.a\n_hidden = 1\n")
    mods = arch.module_files(tmp_path)
    assert arch.cycles(arch.import_graph(mods)) == [["edgesdk.runtime.a", "edgesdk.runtime.b"]]
    assert [p[:3] for p in arch.private_imports(mods)] == [("edgesdk.runtime.a", "edgesdk.runtime.b", "_hidden")]
