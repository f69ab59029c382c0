"""`edgesdk worker --ray HEAD:PORT`: join a Ray cluster as a worker node that advertises the
devices this machine has (`edgesdk.pipeline.devices.detect_resources`: its CPU for profiling,
``qnn-htp`` when the QNN libraries load, ``vulkan-gpu`` with a Vulkan driver, and
``device:adb:SERIAL`` per phone on adb), so that profiling jobs that need them land here.

Example (on each machine of the lab, then a deploy from any machine)::

    ray start --head --port 6379                  # once, on the head machine
    edgesdk worker --ray HEAD:6379                # on every worker machine
    RAY_ADDRESS=HEAD:6379 edgesdk deploy deploy.yaml --executor ray
    edgesdk deploy deploy.yaml --executor ray://HEAD:10001   # from a machine outside the cluster
"""

from __future__ import annotations

import json
import shutil
import sys

from edgesdk.runtime.errors import ConfigError


def parse_resources(items: list[str] | None) -> dict[str, float]:
    """``["qnn-htp=1", "device:adb:X=1"]`` -> {name: amount}."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, amount = item.rpartition("=")
        try:
            value = float(amount) if sep else None
        except ValueError:
            value = None
        if not name or value is None or value < 0:
            raise ConfigError(f"--resource {item!r}: expected NAME=AMOUNT, e.g. --resource qnn-htp=1")
        out[name] = value
    return out


def worker_command(address: str, *, num_cpus: int | None = None, extra: dict | None = None, detect: bool = True,
                   block: bool = True, node_ip: str | None = None) -> tuple[list[str], dict]:
    """(the ``ray start`` command line, the resources it advertises)."""
    from edgesdk.pipeline.devices import detect_resources
    if not address or address.startswith("ray://"):
        raise ConfigError(f"--ray {address!r}: give the head's HOST:PORT (the GCS address `ray start --head` printed), "
                          "not a ray:// client address")
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ConfigError("edgesdk worker needs Ray: pip install 'edge-sdk[cluster]'") from None
    resources = detect_resources() if detect else {}
    resources.update(extra or {})
    exe = shutil.which("ray")
    argv = ([exe] if exe else [sys.executable, "-c", "import sys; from ray.scripts.scripts import main; "
                                                    "sys.argv[0] = 'ray'; main()"])
    argv += ["start", f"--address={address}", f"--resources={json.dumps(resources)}", "--disable-usage-stats"]
    if num_cpus is not None:
        argv.append(f"--num-cpus={num_cpus}")
    if node_ip:
        argv.append(f"--node-ip-address={node_ip}")
    if block:
        argv.append("--block")
    return argv, resources


def task_env() -> dict[str, str]:
    """Environment variables of the run's Ray worker processes: OpenMP threads that sleep while they
    wait, as the local executor's workers have them (`edgesdk.pipeline.pool`). A conversion task's
    torch threads share the node's cores with the other tasks, and libgomp's default spinning wait
    then burns those cores and stalls every parallel op on a descheduled thread
    (`benchmarks/omp_wait.py`). The user's own ``OMP_WAIT_POLICY`` wins."""
    import os
    return {"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}


def connect_driver(ray, address: str, kw: dict) -> None:
    """Join an existing cluster: ``HOST:PORT`` (a driver on one of its nodes) or ``ray://HOST:PORT``
    (the Ray client: this machine need not be part of the cluster). The run's worker processes get
    `task_env` (a job-level runtime environment)."""
    runtime_env = {"env_vars": task_env()}
    if not address.startswith("ray://"):
        ray.init(address=address, runtime_env=runtime_env, **kw)
        return
    try:  # the client passes unknown ray.init options on to the server: only what it understands
        ray.init(address=address, logging_level=kw.get("logging_level", "warning"), runtime_env=runtime_env)
    except (ConnectionError, RuntimeError) as err:
        why = " ".join(str(err).split())[:300]
        raise ConfigError(
            f"executor {address!r}: the Ray client could not start a session on the head ({type(err).__name__}: "
            f"{why}). Start the head with a client server port and a fixed runtime-env agent port, e.g. "
            "`ray start --head --port 6379 --ray-client-server-port 10001 --runtime-env-agent-port 6380`, "
            "with edgesdk importable there (its ray_client_server*.err log says more); or run on a node of "
            "the cluster with --executor ray and RAY_ADDRESS=HEAD:6379") from None
