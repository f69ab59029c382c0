"""The distillation trainer: determinism, staged recipes, resume after a kill, teacher cache,
data parallelism (2 gloo processes), the quantization-aware option and the CLI."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import edgesdk
from conftest import ROOT
from distill_fixtures import agreement, data, student, teacher
from edgesdk.models.distill import DistillConfig, LossSpec, Stage, distill

FIXTURES = str(ROOT / "tests" / "distill_fixtures.py")
KD = [{"name": "kl", "weight": 0.9, "kwargs": {"temperature": 2.0}}, {"name": "ce", "weight": 0.1}]


def _cfg(**kw):
    base = dict(losses=KD, steps=60, batch_size=32, lr=1e-2, progress=False, seed=3)
    base.update(kw)
    return DistillConfig(**base)


def _losses(model):
    return [h["loss"] for h in model.distill_history]


def test_distillation_learns_and_is_deterministic():
    a = distill(teacher(), student(), data(), _cfg(eval_every=60), eval_fn=agreement())
    b = distill(teacher(), student(), data(), _cfg(eval_every=60))
    assert _losses(a) == _losses(b)
    assert _losses(a)[-1] < 0.7 * _losses(a)[0]
    assert a.distill_history[-1]["metrics"]["agreement"] > 0.6
    assert set(a.distill_history[0]["terms"]) == {"kl", "ce"}


def test_config_is_validated_with_the_fix():
    with pytest.raises(ValueError, match="optimizer 'adam2' is not one of"):
        DistillConfig(optimizer="adam2")
    with pytest.raises(ValueError, match="unknown DistillConfig keys \\['stepz'\\]"):
        DistillConfig.from_dict({"stepz": 3})
    with pytest.raises(ValueError, match="resume=True needs checkpoint_dir"):
        DistillConfig(resume=True)


def test_staged_recipe_freezes_per_stage():
    s = student()
    first = s[0].weight.detach().clone()
    cfg = _cfg(stages=[Stage("head-only", 20, [LossSpec("mse")], freeze=["0"]),
                       Stage("all", 20, [LossSpec("kl")])])
    out = distill(teacher(), s, data(), cfg)
    stages = [h["stage"] for h in out.distill_history]
    assert stages == ["head-only"] * 20 + ["all"] * 20
    s2 = student()
    distill(teacher(), s2, data(), _cfg(stages=[Stage("head-only", 20, [LossSpec("mse")], freeze=["0"])]))
    assert torch.equal(s2[0].weight, first)            # frozen during the stage
    assert not torch.equal(out[0].weight, first)        # trained in the next one


def test_checkpoints_are_safetensors_and_resume_matches(tmp_path):
    ck = tmp_path / "ck"
    full = distill(teacher(), student(), data(), _cfg(checkpoint_dir=str(ck), checkpoint_every=20))
    files = sorted(p.name for p in ck.iterdir())
    assert "latest.json" in files and all(f.endswith((".safetensors", ".json")) for f in files)
    # kill -9 at step 47 (after the checkpoint at 40), then resume
    script = textwrap.dedent(f'''
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, {str(ROOT / "tests")!r})
        from distill_fixtures import teacher, student, data
        from edgesdk.models.distill import DistillConfig
        from edgesdk.models.distill.trainer import distill
        cfg = DistillConfig(losses={KD!r}, steps=60, batch_size=32, lr=1e-2, progress=False, seed=3,
                            checkpoint_dir={str(tmp_path / "ck2")!r}, checkpoint_every=20)
        def die(log):
            if log.step == 47:
                os.kill(os.getpid(), signal.SIGKILL)
        distill(teacher(), student(), data(), cfg, on_step=die)
    ''')
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert r.returncode == -9, r.stderr[-2000:]
    assert json.loads((tmp_path / "ck2" / "latest.json").read_text())["step"] == 40
    resumed = distill(teacher(), student(), data(),
                      _cfg(checkpoint_dir=str(tmp_path / "ck2"), checkpoint_every=20, resume=True))
    assert len(resumed.distill_history) == 60
    assert abs(_losses(resumed)[-1] - _losses(full)[-1]) < 1e-5
    for a, b in zip(resumed.state_dict().values(), full.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


class _Counting(torch.nn.Module):
    """The fixture teacher, counting its forward calls."""

    def __init__(self):
        super().__init__()
        self.inner, self.calls = teacher(), 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_stage_of_label_losses_skips_the_teacher_and_trains_the_same(monkeypatch):
    from edgesdk.models.distill.losses import CrossEntropyLoss
    stages = [Stage("ce-warmup", 10, [LossSpec("ce")]), Stage("kd", 10, [LossSpec(**k) for k in KD])]
    t_skip, s_skip = _Counting(), student()
    distill(t_skip, s_skip, data(), _cfg(stages=stages))
    monkeypatch.setattr(CrossEntropyLoss, "reads_teacher", True)  # as before: the teacher runs every step
    t_all, s_all = _Counting(), student()
    distill(t_all, s_all, data(), _cfg(stages=stages))
    assert (t_skip.calls, t_all.calls) == (10, 20)
    assert _losses(s_skip) == _losses(s_all)
    assert all(torch.equal(a, b) for a, b in zip(s_skip.state_dict().values(), s_all.state_dict().values()))


def test_teacher_outputs_are_cached(tmp_path):
    cfg = _cfg(steps=10, cache_teacher=str(tmp_path / "cache"))
    a = distill(teacher(), student(), data(), cfg)
    b = distill(teacher(), student(), data(), cfg)
    assert a.distill_cache_stats == {"hits": 0, "misses": 10}
    assert b.distill_cache_stats == {"hits": 10, "misses": 0}
    assert _losses(a) == _losses(b)


def test_feature_distillation_through_hooks():
    cfg = _cfg(steps=10, losses=[LossSpec("hidden_mse", 1.0, {"student_dim": 16, "teacher_dim": 64})],
               student_features={"hidden": "1"}, teacher_features={"hidden": "1"})
    out = distill(teacher(), student(), data(), cfg)
    assert _losses(out)[-1] < _losses(out)[0]


def test_quantize_aware_distillation_exports_int8(tmp_path):
    q = edgesdk.distill(teacher(), student(), data(), _cfg(steps=20, quantize_aware="int8"), progress=False)
    x = data().tensors["x"][:32]
    art = edgesdk.convert(q, (x,), "executorch-xnnpack", quantize="int8-qat", out_dir=tmp_path)
    assert art.verification["min_cosine"] > 0.99 and art.manifest.quantization["calibration"] is None


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "edgesdk.cli", "distill", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_cli_distill_and_two_process_ddp_match_one_process_with_the_doubled_batch(tmp_path):
    common = ["--teacher", f"{FIXTURES}:teacher", "--student", f"{FIXTURES}:student", "--data", f"{FIXTURES}:data",
              "--steps", "15", "--lr", "0.01", "--seed", "3", "--json", "-q"]
    one = _cli(*common, "--batch-size", "64", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-3000:]
    assert json.loads(one.stdout)["world_size"] == 1
    two = _cli(*common, "--batch-size", "32", "--nproc", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    h1 = json.loads((tmp_path / "one" / "history.json").read_text())
    h2 = json.loads((tmp_path / "two" / "history.json").read_text())
    assert len(h1) == len(h2) == 15
    for a, b in zip(h1, h2):
        assert abs(a["loss"] - b["loss"]) < 1e-4 * max(1.0, abs(a["loss"]))
    assert (tmp_path / "two" / "student.safetensors").is_file()


def test_cli_distill_errors_are_one_line(tmp_path):
    r = _cli("--teacher", "nomod_x:teacher", "--student", f"{FIXTURES}:student", "--data", f"{FIXTURES}:data")
    assert r.returncode == 2 and r.stderr.strip().startswith("error: teacher: cannot import 'nomod_x'")
    (tmp_path / "c.json").write_text(json.dumps({"optimizer": "lion"}))
    r = _cli("--teacher", f"{FIXTURES}:teacher", "--student", f"{FIXTURES}:student", "--data", f"{FIXTURES}:data",
             "--config", str(tmp_path / "c.json"))
    assert r.returncode == 2 and "optimizer 'lion' is not one of" in r.stderr
