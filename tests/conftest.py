"""Shared test models (ordinary layers the SDK has never seen) and converted-artifact fixtures."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Plug-in targets of the test suite: each is a converter in tests/plugins/targets/ and a runtime
# backend in tests/plugins/backends/, loaded through EDGESDK_TARGETS / EDGESDK_BACKENDS
# (`runtime.plugins`) here and in every subprocess a test starts, so each suite parametrized over
# `edgesdk.targets()` picks a new one up with no other edit.
PLUGINS = {kind: sorted(str(p) for p in (ROOT / "tests" / "plugins" / kind).glob("*.py"))
           for kind in ("targets", "backends")}


def _load_plugins() -> None:
    from edgesdk.runtime.plugins import KINDS, load_plugins
    for kind, files in PLUGINS.items():
        env = KINDS[kind][0]
        have = [s for s in os.environ.get(env, "").split(os.pathsep) if s]
        os.environ[env] = os.pathsep.join(have + [p for p in files if p not in have])
        load_plugins(kind, force=True)


def cpu_targets(**declares) -> list[str]:
    """Registered CPU targets that run natively here (plug-ins included), for suites parametrized
    over them; ``declares`` keeps those whose converter sets each attribute so
    (``cpu_targets(dynamic_shapes=True)``). Call at collection time (after `pytest_configure`)."""
    from edgesdk.converters import get_converter, targets
    return [t.name for t in targets() if t.device == "cpu" and t.runs == "yes"
            and all(getattr(get_converter(t.name), k) == v for k, v in declares.items())]


def _target_says_unsupported():
    """A target that cannot take a suite's model says so with UnsupportedModelError (its own
    `Converter.unsupported`): the test is skipped with that reason, in setup or in the test body."""
    from edgesdk.runtime.errors import UnsupportedModelError
    try:
        return (yield)
    except UnsupportedModelError as e:
        pytest.skip(str(e))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
    return (yield from _target_says_unsupported())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    return (yield from _target_says_unsupported())


LAYERS = ("runtime", "models", "converters", "sdk")


def layer(module: str) -> str:
    """Which of our layers a module belongs to: "runtime" for edgesdk.runtime.session, "sdk" for
    edgesdk.cli, "edgesdk" for the namespace package itself (a few lazy names, no imports), and
    the top-level name of anything else ("torch")."""
    parts = module.split(".")
    if parts[0] == "edgesdk" and len(parts) > 1:
        return parts[1] if parts[1] in LAYERS[:3] else "sdk"
    return parts[0]


class CliResult:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


def cli_in_process(*args) -> CliResult:
    """`edgesdk ARGS` through the CLI's entry point, in this process (no interpreter start-up)."""
    import contextlib
    import io
    from edgesdk.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(list(args))
    return CliResult(rc, out.getvalue(), err.getvalue())


class ConvNet(nn.Module):
    """conv / batch-norm / relu / pool / linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(32, 10)

    def forward(self, image):  # (B, 3, 32, 32) -> (B, 10)
        return self.head(torch.flatten(self.features(image), 1))


class TransformerBlock(nn.Module):
    """pre-norm self-attention + MLP, as in every small transformer."""

    def __init__(self, d=64, heads=4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x):  # (B, T, d) -> (B, T, d)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TokenClassifier(nn.Module):
    """int64 token ids + bool mask in, float logits and int64 argmax out."""

    def __init__(self, vocab=50, d=32):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.proj = nn.Linear(d, 5)

    def forward(self, ids, mask):  # (B, T) int64, (B, T) bool
        h = self.emb(ids) * mask.unsqueeze(-1).to(torch.float32)
        logits = self.proj(h.mean(dim=1))
        return logits, logits.argmax(dim=-1)


def _seeded(cls, *args):
    torch.manual_seed(0)
    return cls(*args).eval()


MODELS = {
    "mlp": lambda: (_seeded(nn.Sequential, nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 8)), (torch.randn(2, 32),)),
    "convnet": lambda: (_seeded(ConvNet), (torch.randn(1, 3, 32, 32),)),
    "transformer": lambda: (_seeded(TransformerBlock), (torch.randn(1, 16, 64),)),
}


def make_model(kind: str):
    torch.manual_seed(1)
    return MODELS[kind]()


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory):
    return tmp_path_factory.mktemp("artifacts")


_CACHE: dict = {}


@pytest.fixture(scope="session")
def converted(artifact_root):
    """converted(kind, target) -> (artifact, model, example_inputs), converted once per session."""
    import edgesdk

    def get(kind: str, target: str):
        key = (kind, target)
        if key not in _CACHE:
            model, ex = make_model(kind)
            art = edgesdk.convert(model, ex, target, out_dir=artifact_root, name=f"{kind}-{target}")
            _CACHE[key] = (art, model, ex)
        return _CACHE[key]
    return get


def pytest_configure(config):
    os.environ.setdefault("PYTHONHASHSEED", "0")
    _load_plugins()  # before collection: module-level target lists see the plug-ins
    _share_cores_between_workers()


def _share_cores_between_workers() -> None:
    """Under pytest-xdist (`make test` runs one worker per core, up to 4), each worker's torch gets
    its share of the cores: with every worker at torch's default (all cores) a 2-core machine ran
    4 compute threads, and the suite spent 17% more CPU time than serially (1830 vs 1557 core-s,
    2026-12-04). Runtimes' own thread settings (profiles, sessions) are unchanged."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers > 1:
        from edgesdk.runtime.machine import usable_cores
        torch.set_num_threads(max(1, usable_cores() // workers))
        # A pipeline that names no executor converts in its own process: a process pool per run
        # (workers importing torch) on cores the other test worker already uses took test_diff's
        # three pipelines 63 s of worker time against 21 s in-process (2026-12-04).
        # tests/test_executors.py names the local executor and checks it.
        os.environ.setdefault("EDGESDK_EXECUTOR", "serial")
