"""The Ray executor on a real local cluster (127.0.0.1): a head with no CPUs and two workers
started with ``edgesdk worker``, each advertising a different fake device (``qnn-htp`` on A,
``vulkan-gpu`` on B), so the profiling jobs of qnn-htp and litert-gpu are pinned to them. Worker
B hangs in its first conversion and the test kills B's node (its raylet) mid-run: that job is
run again on A and says so, litert-gpu's profile fails alone with a clear error (its device
left), every artifact arrives once, and the lockfile is whole. Artifacts travel through Ray's
object store (no shared cache). Slow: ~3 min."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import ROOT

pytestmark = pytest.mark.slow
THIS = Path(__file__).resolve()
HANG = "EDGESDK_TEST_HANG"
OMP_LOG = "EDGESDK_TEST_OMP_LOG"


class Net(nn.Module):
    """An MLP that hangs (after writing its pid to ``$EDGESDK_TEST_HANG.pid``) the first time it
    runs in a process whose environment names an existing ``$EDGESDK_TEST_HANG`` file: only
    worker B's environment does."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 6))

    def forward(self, x):  # (1, 16) -> (1, 6)
        if log := os.environ.get(OMP_LOG):  # a Ray worker of the client test's head: its OpenMP wait policy
            Path(log).write_text(os.environ.get("OMP_WAIT_POLICY", "(unset)"))
        trigger = os.environ.get(HANG)
        if trigger and os.path.exists(trigger):
            try:
                os.remove(trigger)
                Path(trigger + ".pid").write_text(str(os.getpid()))
                time.sleep(600)
            except FileNotFoundError:
                pass
        return self.body(x)


def build():
    torch.manual_seed(0)
    return Net().eval(), (torch.randn(1, 16),)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> list[str]:
    exe = Path(sys.executable).with_name("ray")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "ray.scripts.scripts"]


@pytest.fixture()
def cluster(tmp_path):
    pytest.importorskip("ray")
    temp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))  # Ray's socket paths must stay short
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", "RAY_raylet_start_wait_time_s": "120"}
    env.pop("RAY_ADDRESS", None)
    procs = []

    def start(argv, extra_env=None):
        p = subprocess.Popen(argv, env={**env, **(extra_env or {})}, start_new_session=True,
                             stdout=open(tmp_path / f"node{len(procs)}.log", "w"), stderr=subprocess.STDOUT)
        procs.append(p)
        return p
    start(_ray_cli() + ["start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--num-cpus=0",
                        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}",
                        "--object-store-memory=200000000", "--block"])
    address = f"127.0.0.1:{port}"
    trigger = tmp_path / "hang"
    trigger.write_text("")
    worker = [sys.executable, "-m", "edgesdk.cli", "worker", "--ray", address, "--no-detect", "--num-cpus", "1",
              "--node-ip", "127.0.0.1", "--resource", "edgesdk-profiler=1"]
    import ray
    os.environ["RAY_AUTH_MODE"] = "disabled"
    deadline = time.time() + 120
    while True:  # the head is up when a driver can join
        try:
            ray.init(address=address, _node_ip_address="127.0.0.1", logging_level="warning", log_to_driver=False)
            break
        except Exception:
            if time.time() > deadline:
                raise
            time.sleep(2)
    start(worker + ["--resource", "qnn-htp=1"])  # one at a time: two raylets starting at once time out here
    _wait_nodes(ray, 2)
    start(worker + ["--resource", "vulkan-gpu=1"], {HANG: str(trigger)})
    _wait_nodes(ray, 3)
    yield address, trigger, temp
    ray.shutdown()
    for p in reversed(procs):  # ray start --block stops its node's processes on SIGTERM
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
    # anything of this cluster still alive (found by its session folder): ours, by pid
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True).stdout
    for line in out.splitlines():
        pid, _, args = line.strip().partition(" ")
        if str(temp) in args:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
    shutil.rmtree(temp, ignore_errors=True)


def _wait_nodes(ray, n: int, timeout: float = 120) -> list[dict]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        alive = [x for x in ray.nodes() if x.get("Alive")]
        if len(alive) >= n:
            return alive
        time.sleep(1)
    raise AssertionError(f"only {len(alive)} of {n} Ray nodes came up (logs: node*.log in the test's tmp folder)")


def test_ray_cluster_pins_devices_and_survives_a_dead_worker(cluster, tmp_path, monkeypatch):
    import threading

    import ray

    from edgesdk import lockfile
    from edgesdk.pipeline import pipeline
    address, trigger, _ = cluster
    monkeypatch.setenv("RAY_ADDRESS", address)
    nodes = _wait_nodes(ray, 3)
    node_of = {next(k for k in ("qnn-htp", "vulkan-gpu") if k in n["Resources"]): n["NodeID"]
               for n in nodes if {"qnn-htp", "vulkan-gpu"} & set(n["Resources"])}
    killed = {}

    def kill_b_when_it_hangs():  # B's worker process is stuck in a conversion: kill B's raylet
        pid_file = Path(str(trigger) + ".pid")
        deadline = time.time() + 300
        while time.time() < deadline and not pid_file.exists():
            time.sleep(0.5)
        if pid_file.exists():
            time.sleep(0.5)
            pid = int(pid_file.read_text())
            raylet = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
            killed.update(worker=pid, raylet=raylet)
            for p in (raylet, pid):
                os.kill(p, signal.SIGKILL)
    watcher = threading.Thread(target=kill_b_when_it_hangs, daemon=True)
    watcher.start()
    cfg = {"name": "cluster", "model": {"source": f"{THIS}:build", "name": "net"},
           "targets": ["onnx-cpu", "qnn-htp", "litert-gpu"], "quantize": {"schemes": ["fp32"]},
           "profile": {"warmup": 2, "iters": 10, "per_op": False},
           "output": {"dir": str(tmp_path / "out"), "cache": str(tmp_path / "cache"), "use_cache": False,
                      "report": False}}
    res = pipeline(cfg, progress=True, executor="ray")
    watcher.join(timeout=5)
    assert killed, "worker B never ran the hanging conversion"
    rows = {r.target: r for r in res.rows}
    assert set(rows) == {"onnx-cpu", "qnn-htp", "litert-gpu"}
    # the job B was converting ran again elsewhere, and its row says so
    retried = [r for r in res.rows if r.attempts]
    assert len(retried) == 1 and retried[0].attempts[0]["stage"] == "convert"
    # profiling jobs pinned by their device's resource
    assert rows["onnx-cpu"].status == "ok" and rows["qnn-htp"].status == "ok"
    assert rows["qnn-htp"].profiled_on["node"] == node_of["qnn-htp"]
    assert rows["onnx-cpu"].profiled_on["node"] == node_of["qnn-htp"]  # the only profiler left
    # B's device left with B: its job fails alone, with the reason and the fix
    gpu = rows["litert-gpu"]
    assert gpu.status == "failed" and "TargetUnavailableError" in gpu.message and "'vulkan-gpu'" in gpu.message
    assert gpu.path and Path(gpu.path).is_dir()  # converted and verified all the same
    # every artifact arrived once, whole; the lockfile lists every job
    from edgesdk import runtime
    delivered = sorted(p.name for p in (tmp_path / "out" / "artifacts").iterdir())
    assert delivered == sorted(r.artifact for r in res.rows)
    for r in res.rows:
        runtime.load(r.path)
    results = lockfile.read(res.results_json)
    assert [a["key"] for a in results["artifacts"]] == [r.key for r in res.rows]
    assert results["executor"]["name"] == "ray" and results["executor"]["retried_jobs"] == 1
    assert all(a["hashes"]["graph"] for a in results["artifacts"])


def _client_logs(temp: Path) -> str:
    """The tails of the head's Ray client server logs (its per-session servers' errors)."""
    logs = [p for ext in ("err", "out") for p in sorted(temp.glob(f"session_*/logs/ray_client_server*.{ext}"))]
    return "\n".join(f"--- {p.name}:\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:]) for p in logs)


def test_ray_client_address_runs_a_deploy(tmp_path, monkeypatch):
    """``executor="ray://HOST:PORT"``: a driver that is not a node of the cluster (the Ray
    client) runs a deploy on a local head started as the README says (client server port, fixed
    runtime-env agent port); the rows equal the serial executor's. The run's worker processes wait
    for OpenMP passively, as the local executor's do, and its shared-exports folder (in the cache)
    is gone when it ends."""
    pytest.importorskip("ray")
    from edgesdk import lockfile
    from edgesdk.pipeline import pipeline
    from edgesdk.runtime.errors import ConfigError
    temp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    port, client_port, agent_port = _free_port(), _free_port(), _free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled", OMP_LOG: str(tmp_path / "omp.txt")}
    env.pop("RAY_ADDRESS", None)
    env.pop("OMP_WAIT_POLICY", None)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the client's auth mode matches the head's
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    head = subprocess.Popen(
        _ray_cli() + ["start", "--head", f"--port={port}", f"--ray-client-server-port={client_port}",
                      f"--runtime-env-agent-port={agent_port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                      '--resources={"edgesdk-profiler": 1}', "--include-dashboard=false", "--disable-usage-stats",
                      f"--temp-dir={temp}", "--object-store-memory=200000000", "--block"],
        env=env, start_new_session=True, stdout=open(tmp_path / "head.log", "w"), stderr=subprocess.STDOUT)

    def cfg(name):
        return {"name": "client", "model": {"source": f"{THIS}:build", "name": "net"}, "targets": ["onnx-cpu"],
                "quantize": {"schemes": ["fp32"]}, "profile": {"warmup": 2, "iters": 10, "per_op": False},
                "output": {"dir": str(tmp_path / name), "cache": str(tmp_path / f"cache-{name}"), "report": False}}
    try:
        address = f"ray://127.0.0.1:{client_port}"
        deadline = time.time() + 120
        while True:  # the head is up when the client server answers
            try:
                with socket.create_connection(("127.0.0.1", client_port), timeout=2):
                    break
            except OSError:
                if time.time() > deadline or head.poll() is not None:
                    raise AssertionError(f"the Ray head did not come up; see {tmp_path / 'head.log'}")
                time.sleep(1)
        import ray
        while True:  # ... and can start a client session (its per-session server and environment)
            try:
                ray.init(address=address, logging_level="warning")
                ray.shutdown()
                break
            except (ConnectionError, RuntimeError) as err:
                ray.shutdown()
                if time.time() > deadline or head.poll() is not None:
                    raise AssertionError(f"the Ray head started no client session: {err}\n{_client_logs(temp)}")
                time.sleep(2)
        try:
            res = pipeline(cfg("client"), progress=False, executor=address)
        except ConfigError as err:  # the head's side of it, for whoever reads the failure
            raise AssertionError(f"{err}\n{_client_logs(temp)}") from None
        serial = pipeline(cfg("serial"), progress=False, executor="serial")
        assert not ray.is_initialized()  # the client connection was closed with the run
        a, b = lockfile.read(serial.results_json), lockfile.read(res.results_json)
        assert b["executor"]["name"] == "ray" and b["executor"]["address"] == address
        assert [r["status"] for r in b["artifacts"]] == ["ok"]
        assert b["artifacts"][0]["profiled_on"]["node"]  # profiled by a Ray task on the head's node
        assert lockfile.comparable(a) == lockfile.comparable(b)
        assert (tmp_path / "omp.txt").read_text() == "PASSIVE"
        assert not list((tmp_path / "cache-client").glob(".exports-*"))
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(temp, ignore_errors=True)
