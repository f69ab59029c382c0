"""Executors: the local executor (process pool + one profiling queue) gives the serial
executor's results; a worker killed mid-conversion has its job run again on another worker and
the row says so; Ctrl-C cancels cleanly and keeps the artifacts already delivered. Real
conversions, real worker processes, real signals. The Ray cluster test is in test_cluster.py."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT, cli_in_process
from test_pipeline import UserNet

THIS = Path(__file__).resolve()
TRIGGER = "EDGESDK_TEST_TRIGGER"


class Fault(UserNet):
    """UserNet that, the first time a process runs it while ``self.trigger`` exists, removes the
    file and then dies (``die``) or sleeps (``hang``, after writing ``<trigger>.pid``). The
    parent never runs a user model's forward: only a conversion worker trips it."""

    def __init__(self, trigger: str, mode: str):
        super().__init__()
        self.trigger, self.mode = trigger, mode

    def forward(self, x):
        if self.trigger and os.path.exists(self.trigger):
            try:
                os.remove(self.trigger)
            except FileNotFoundError:  # another worker took it
                return super().forward(x)
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            Path(self.trigger + ".pid").write_text(str(os.getpid()))
            time.sleep(120)
        return super().forward(x)


def build():
    torch.manual_seed(0)
    return UserNet().eval(), (torch.randn(1, 16),)


def build_die_once():
    torch.manual_seed(0)
    return Fault(os.environ[TRIGGER], "die").eval(), (torch.randn(1, 16),)


def build_hang_once():
    torch.manual_seed(0)
    return Fault(os.environ[TRIGGER], "hang").eval(), (torch.randn(1, 16),)


def teacher():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 5)).eval()


def features():
    return torch.randn(400, 16, generator=torch.Generator().manual_seed(2))


def calibration():
    g = torch.Generator().manual_seed(3)
    return [(torch.randn(1, 16, generator=g),) for _ in range(32)]


SCORES = "EDGESDK_TEST_SCORES"


def pid_quality():
    """model.quality: the mean output on fixed inputs; each call also notes which process scored which
    artifact (a line in ``$EDGESDK_TEST_SCORES/scored.txt``, read when the config loads)."""
    x, log = features()[:8].numpy(), Path(os.environ[SCORES]) / "scored.txt"

    def quality(run) -> float:
        where = Path(run.session.path).name if run.kind == "artifact" else "pytorch"
        with open(log, "a") as f:
            f.write(f"{where} {os.getpid()}\n")
        return float(run.map([x])[0].mean())
    return quality


def _config(tmp: Path, name: str, source: str = "build", schemes=("fp32", "int8-static")) -> dict:
    return {"name": "executors", "model": {"source": f"{THIS}:{source}", "name": "usernet"},
            "distill": {"family": "mlp", "teacher": f"{THIS}:teacher", "data": f"{THIS}:features", "steps": 20,
                        "students": {"student": {"model": "mlp", "hidden": 32, "depth": 1}}},
            "targets": ["onnx-cpu"], "quantize": {"schemes": list(schemes), "max_drop": 0.5},
            "calibration": {"data": f"{THIS}:calibration"},
            "profile": {"warmup": 2, "iters": 10, "per_op": False},
            "output": {"dir": str(tmp / name), "cache": str(tmp / f"cache-{name}"), "report": False}}


def test_local_executor_matches_serial(tmp_path):
    """Same plan, same rows: the lockfiles agree on everything but timings, hosts and paths."""
    from edgesdk import lockfile
    from edgesdk.pipeline import pipeline
    serial = pipeline(_config(tmp_path, "serial"), progress=False, executor="serial")
    local = pipeline(_config(tmp_path, "local"), progress=False, executor="local")
    a, b = lockfile.read(serial.results_json), lockfile.read(local.results_json)
    assert [r["key"] for r in a["artifacts"]] == [r["key"] for r in b["artifacts"]]
    assert len(a["artifacts"]) == 4 and all(r["status"] == "ok" for r in a["artifacts"])
    assert lockfile.comparable(a) == lockfile.comparable(b)
    assert a["executor"]["name"] == "serial" and b["executor"]["name"] == "local" and b["executor"]["workers"] >= 1
    for art in b["artifacts"]:  # every artifact delivered once, into artifacts/, whole
        assert Path(art["path"]).parent == tmp_path / "local" / "artifacts"
        assert art["profiled_on"]["device"] == "cpu" and art["profiled_on"]["host"]
    delivered = sorted(p.name for p in (tmp_path / "local" / "artifacts").iterdir())
    assert delivered == sorted(art["artifact"] for art in b["artifacts"])
    assert not list((tmp_path / "local").glob(".work-*"))  # the scratch folder is gone
    # a second local run takes every conversion from the cache, in this process
    again = pipeline(_config(tmp_path, "local"), progress=False, executor="local")
    assert all(r.conversion_cached for r in again.rows)
    assert lockfile.comparable(lockfile.read(again.results_json)) == lockfile.comparable(b)


def test_worker_killed_mid_conversion_is_retried(tmp_path, monkeypatch):
    trigger = tmp_path / "trigger-die"
    trigger.write_text("")
    monkeypatch.setenv(TRIGGER, str(trigger))
    from edgesdk.pipeline import pipeline
    cfg = _config(tmp_path, "die", "build_die_once", schemes=("fp32",))
    cfg.pop("distill")
    res = pipeline(cfg, progress=False, executor="local")
    (row,) = res.rows
    assert not trigger.exists()  # a worker ran the model, and died
    assert row.status == "ok" and row.max_abs_err < 1e-4 and row.p50_ms > 0
    assert len(row.attempts) == 1 and "killed by SIGKILL" in row.attempts[0]["error"]
    results = json.loads(res.results_json.read_text())
    assert results["artifacts"][0]["attempts"] == row.attempts and results["executor"]["retried_jobs"] == 1


def test_phone_that_is_not_there_fails_only_its_own_jobs(tmp_path, monkeypatch):
    """profile.devices sends onnx-cpu's profile to a phone on adb; without adb (or the phone)
    that row fails with the reason and the fix, converted and verified all the same, and the
    other target's row is measured here as usual."""
    monkeypatch.setenv("ADB", str(tmp_path / "no-adb"))
    from edgesdk.pipeline import pipeline
    cfg = _config(tmp_path, "phone", schemes=("fp32",))
    cfg.pop("distill")
    cfg["targets"] = ["onnx-cpu", "litert-cpu"]
    cfg["profile"]["devices"] = {"onnx-cpu": "adb:NOPHONE1"}
    res = pipeline(cfg, progress=False, executor="serial")
    rows = {r.target: r for r in res.rows}
    phone = rows["onnx-cpu"]
    assert phone.status == "failed" and phone.message.startswith("profiling: TargetUnavailableError")
    assert "platform-tools" in phone.message and phone.profiled_on["device"] == "adb:NOPHONE1"
    assert phone.max_abs_err < 1e-4 and Path(phone.path).is_dir()
    assert rows["litert-cpu"].status == "ok" and rows["litert-cpu"].profiled_on["device"] == "cpu"
    from edgesdk.runtime.errors import ConfigError
    from edgesdk.pipeline import PipelineConfig
    with pytest.raises(ConfigError, match="profile.devices maps a target to local or adb:SERIAL"):
        PipelineConfig.from_dict({"model": "x:y", "profile": {"devices": {"onnx-cpu": "phone"}}})


def test_unknown_executor():
    from edgesdk.runtime.errors import ConfigError
    from edgesdk.pipeline import pipeline
    with pytest.raises(ConfigError, match="executor 'threads': expected one of local, serial, ray, ray://HOST:PORT"):
        pipeline({"model": f"{THIS}:build", "targets": ["onnx-cpu"]}, progress=False, executor="threads")


def test_edgesdk_executor_names_the_default_and_a_named_executor_wins(tmp_path, monkeypatch):
    from edgesdk.runtime.errors import ConfigError
    from edgesdk.pipeline import pipeline
    from edgesdk.pipeline.executor import default_executor
    monkeypatch.delenv("EDGESDK_EXECUTOR", raising=False)
    assert default_executor() == "local"
    monkeypatch.setenv("EDGESDK_EXECUTOR", "threads")
    with pytest.raises(ConfigError, match=r"executor 'threads' \(from EDGESDK_EXECUTOR\): expected one of local"):
        pipeline({"model": f"{THIS}:build", "targets": ["onnx-cpu"]}, progress=False)
    monkeypatch.setenv("EDGESDK_EXECUTOR", "serial")
    cfg = {"model": f"{THIS}:build", "targets": ["onnx-cpu"], "quantize": {"schemes": ["fp32"]},
           "profile": {"warmup": 1, "iters": 2, "per_op": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "report": False}}
    assert json.loads(pipeline(cfg, progress=False).results_json.read_text())["executor"]["name"] == "serial"
    monkeypatch.setenv("EDGESDK_EXECUTOR", "threads")  # a named executor does not read the variable
    cfg["output"]["dir"] = str(tmp_path / "named")
    res = pipeline(cfg, progress=False, executor="serial")
    assert json.loads(res.results_json.read_text())["executor"]["name"] == "serial"


def test_row_round_trip():
    """A Row writes the keys results.json always had (no latency keys on an unprofiled row) and
    reads back, unknown keys included."""
    from edgesdk.pipeline import Row
    r = Row(family="model", model="m", target="onnx-cpu", device="cpu", format="onnx", scheme="fp32", runs="yes",
            status="rejected", gate={"drop": 0.2, "passed": False})
    d = r.to_dict()
    assert "p50_ms" not in d and "path" not in d and d["gate"]["drop"] == 0.2 and d["quality"] is None
    assert r["gate"] is r.gate and "p50_ms" not in r and r.get("p50_ms", "none") == "none" and r.key == "model/m/onnx-cpu/fp32"
    back = Row.from_dict({**d, "key": r.key, "metrics": {}, "from_the_future": 1})
    assert back.to_dict() == {**d, "from_the_future": 1}
    with pytest.raises(AttributeError, match="no field 'p50'"):
        r.update(p50=1.0)


def test_worker_command_advertises_devices():
    pytest.importorskip("ray")
    r = cli_in_process("worker", "--ray", "127.0.0.1:6390", "--no-detect", "--resource", "device:adb:X1=1",
                       "--num-cpus", "0", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["resources"] == {"device:adb:X1": 1.0}
    assert "--address=127.0.0.1:6390" in out["command"] and "--num-cpus=0" in out["command"]
    from edgesdk.pipeline.devices import detect_resources, resources_for
    assert detect_resources()["edgesdk-profiler"] == 1
    assert resources_for("qnn-htp") == {"qnn-htp": 1, "edgesdk-profiler": 1}
    assert resources_for("adb:X1") == {"device:adb:X1": 1}
    bad = cli_in_process("worker", "--ray", "ray://h:10001", "--dry-run")
    assert bad.returncode == 2 and "not a ray:// client address" in bad.stderr


@pytest.mark.slow
def test_ctrl_c_cancels_and_keeps_delivered_artifacts(tmp_path):
    """SIGINT while one worker hangs in a conversion: exit 130, workers gone, no scratch
    folder, the artifact that was delivered stays whole."""
    trigger = tmp_path / "trigger-hang"
    trigger.write_text("")
    cfg = _config(tmp_path, "cancel", "build_hang_once")
    cfg.pop("distill")
    (tmp_path / "deploy.json").write_text(json.dumps(cfg))
    env = {**os.environ, TRIGGER: str(trigger), "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "edgesdk.cli", "deploy", str(tmp_path / "deploy.json"),
                             "--executor", "local"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    arts = tmp_path / "cancel" / "artifacts"
    deadline = time.time() + 240
    while time.time() < deadline and not (Path(str(trigger) + ".pid").exists() and arts.is_dir()
                                          and any(arts.iterdir())):
        time.sleep(0.5)
        assert proc.poll() is None, proc.communicate()
    assert Path(str(trigger) + ".pid").exists(), "no worker reached the hanging model"
    hung = int(Path(str(trigger) + ".pid").read_text())
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(hung, 0)
    assert not list((tmp_path / "cancel").glob(".work-*"))
    from edgesdk import runtime
    (done,) = list(arts.iterdir())
    runtime.load(done)  # payload hashes checked: whole
    assert not (tmp_path / "cancel" / "results.json").exists()


def test_quality_scores_run_chains_side_by_side():
    """The local executor's scores after the timings: two chains (runtimes) run at the same time,
    one chain's scores one after another in order, emulated devices first, errors come back."""
    import threading
    from edgesdk.pipeline.scores import score_all
    both, log, lock = threading.Barrier(2, timeout=10), [], threading.Lock()

    def score(name, meet=False):
        def fn():
            if meet:
                both.wait()  # only returns when the other target's chain is running too
            with lock:
                log.append(name)
        return fn
    score_all([("onnx-cpu", False, score("cpu-1", meet=True)), ("qnn-htp", True, score("npu-1", meet=True)),
               ("qnn-htp", True, score("npu-2")), ("onnx-cpu", False, score("cpu-2"))], workers=2)
    assert sorted(log) == ["cpu-1", "cpu-2", "npu-1", "npu-2"]
    assert log.index("npu-1") < log.index("npu-2") and log.index("cpu-1") < log.index("cpu-2")
    order = []
    score_all([("onnx-cpu", False, lambda: order.append("cpu")), ("litert-gpu", True, lambda: order.append("gpu"))],
              workers=1)
    assert order == ["gpu", "cpu"]
    order = []  # inside a chain, the early ones (whole generations on an emulated device) first
    score_all([("qnn-htp", True, lambda: order.append("mlp")), ("qnn-htp", True, lambda: order.append("gen-1"), True),
               ("qnn-htp", True, lambda: order.append("mlp-2"), False), ("qnn-htp", True, lambda: order.append("gen-2"), True)],
              workers=2)
    assert order == ["gen-1", "gen-2", "mlp", "mlp-2"]

    def boom():
        raise RuntimeError("a score failed")
    with pytest.raises(RuntimeError, match="a score failed"):
        score_all([("onnx-cpu", False, boom), ("qnn-htp", True, lambda: None)], workers=2)


def test_emulated_scores_are_shared_out_among_the_evaluators_side_by_side():
    """With evaluators (other processes), the emulated scores leave their chain: the early ones first,
    shared out among the evaluators, which run at the same time; the others stay on their chains."""
    import threading
    from edgesdk.pipeline.scores import score_all
    both, log, started, lock = threading.Barrier(2, timeout=10), [], [], threading.Lock()

    def emu(name, meet=False):
        def fn(evaluate):
            with lock:
                started.append(name)
            if meet:
                both.wait()  # returns only when the other evaluator is scoring too
            with lock:
                log.append((name, evaluate("q", name, 1)))
        return fn

    def here(name):
        def fn():
            with lock:
                log.append((name, "here"))
        return fn
    score_all([("qnn-htp", True, emu("mlp")), ("qnn-htp", True, emu("gen-1", meet=True), True),
               ("onnx-cpu", False, here("cpu")), ("qnn-htp", True, emu("gen-2", meet=True), True)],
              workers=2, offload=[lambda q, path, threads: "worker-a", lambda q, path, threads: "worker-b"])
    got = dict(log)
    assert got["cpu"] == "here" and {got["gen-1"], got["gen-2"]} == {"worker-a", "worker-b"}
    assert got["mlp"] in ("worker-a", "worker-b") and started[-1] == "mlp"  # after both early ones


def test_local_executor_scores_emulated_npu_rows_in_its_workers(tmp_path, monkeypatch):
    """A real run: the qnn-htp row's quality is computed in a conversion worker (another process),
    the onnx-cpu row's in this one, and both equal the serial executor's."""
    (tmp_path / "scores").mkdir()
    monkeypatch.setenv(SCORES, str(tmp_path / "scores"))
    from edgesdk.pipeline import pipeline
    rows = {}
    for ex in ("serial", "local"):
        cfg = _config(tmp_path, f"q-{ex}", schemes=("fp32",))
        cfg.pop("distill")
        cfg.pop("calibration")
        cfg.update(targets=["onnx-cpu", "qnn-htp"])
        cfg["model"]["quality"] = f"{THIS}:pid_quality"
        rows[ex] = {r.target: r for r in pipeline(cfg, progress=False, executor=ex).rows}
    for target in ("onnx-cpu", "qnn-htp"):
        assert rows["local"][target].status == "ok" and rows["local"][target].quality is not None
        assert rows["local"][target].quality == rows["serial"][target].quality
    scored = [line.split() for line in (tmp_path / "scores" / "scored.txt").read_text().splitlines()]
    local = {where: int(pid) for where, pid in scored if where in (rows["local"]["onnx-cpu"].artifact,
                                                                   rows["local"]["qnn-htp"].artifact)}
    assert local[rows["local"]["onnx-cpu"].artifact] == os.getpid()
    assert local[rows["local"]["qnn-htp"].artifact] != os.getpid()


def _two_families(tmp: Path, name: str) -> dict:
    """Two mlp entries on the family's own teacher and data: the last may train in a worker."""
    return {"name": "ahead", "quick": True,
            "distill": [{"family": "mlp", "steps": 20, "students": {"first": {"model": "mlp", "hidden": 16, "depth": 1}}},
                        {"family": "mlp", "steps": 20, "students": {"last": {"model": "mlp", "hidden": 24, "depth": 1}}}],
            "targets": ["onnx-cpu"], "quantize": {"schemes": ["fp32"]},
            "profile": {"warmup": 2, "iters": 10, "per_op": False},
            "output": {"dir": str(tmp / name), "cache": str(tmp / f"cache-{name}"), "report": False}}


def test_the_last_family_trains_in_a_worker_and_the_results_match_serial(tmp_path):
    """With two workers the last family trains in one of them from the start, beside this process
    training the first: its students reach the cache, this process finds them there, and the run
    records them as trained in this run, in that worker. The lockfile equals the serial run's."""
    from edgesdk import lockfile
    from edgesdk.pipeline import pipeline
    from edgesdk.pipeline.local import usable_cores
    if usable_cores() < 2:
        pytest.skip("one usable core: the local executor has one worker, which converts")
    serial = pipeline(_two_families(tmp_path, "serial"), progress=False, executor="serial")
    local = pipeline(_two_families(tmp_path, "local"), progress=False, executor="local")
    a, b = lockfile.read(serial.results_json), lockfile.read(local.results_json)
    assert lockfile.comparable(a) == lockfile.comparable(b)
    first, last = b["families"]
    assert "trained_in" not in first and last["trained_in"].startswith("worker process ")
    assert int(last["trained_in"].split()[-1]) != os.getpid()
    # trained in this run (by the worker), not cache hits: as the serial run records them
    assert last["cache_misses"] == ["teacher", "student-last"] and not last["cache_hits"]
    assert [f["cache_misses"] for f in a["families"]] == [f["cache_misses"] for f in b["families"]]


def test_a_worker_that_dies_while_training_leaves_the_family_to_this_process(tmp_path):
    """The worker training ahead is killed: `wait_trained` says so (None), and the pipeline then
    trains that family in this process as it would without a worker."""
    from edgesdk.pipeline.config import load_config
    from edgesdk.pipeline.executor import RunContext
    from edgesdk.pipeline.local import LocalExecutor
    from edgesdk.progress import Progress
    cfg = load_config(_two_families(tmp_path, "killed"))
    log = io.StringIO()
    ctx = RunContext(cfg=cfg, art_dir=tmp_path / "killed" / "artifacts", warmup=2, iters=10,
                     progress=Progress(True, stream=log))
    ex = LocalExecutor(ctx, workers=2)
    with ex:
        assert ex.train_ahead(cfg, True, [1]) == [1]
        deadline = time.time() + 120
        while not any(w.job == "train-1" for w in ex.pool.workers):
            assert time.time() < deadline, "no worker took the training"
            time.sleep(0.05)
        next(w for w in ex.pool.workers if w.job == "train-1").kill()
        assert ex.wait_trained(1) is None
    assert any("training in the worker failed" in t and "training it here" in t for t in log.getvalue().splitlines())
