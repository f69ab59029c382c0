"""Profiles an app developer can trust: the artifact's own memory (isolated child process),
threads="auto", FLOPs / GFLOP/s / % of the GEMM peak, adaptive warm-up and unsettled-timing
flags with their causes. Real artifacts and real backends throughout."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesdk import runtime
from edgesdk.runtime import machine
from edgesdk.runtime.errors import ConfigError, InputError, IntegrityError
from edgesdk.runtime.profile import steady_state, warm_up

CONVNET_FLOPS = 2 * (16 * 32 * 32 * 3 * 9 + 32 * 16 * 16 * 16 * 9) + 2 * 32 * 10
TRANSFORMER_FLOPS = 2 * 16 * 64 * (3 * 64 + 64 + 4 * 64 + 4 * 64) + 2 * 2 * 4 * 16 * 16 * 16


@pytest.fixture(autouse=True)
def _peak_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "edgesdk-cache"))


def test_flops_are_counted_per_program_with_attention_as_matmuls(converted):
    conv = converted("convnet", "onnx-cpu")[0].manifest.extra["flops"]
    assert conv["per_program"] == {"forward": CONVNET_FLOPS}
    assert set(conv["by_op"]["forward"]) == {"convolution", "addmm"} and "2 per multiply-accumulate" in conv["method"]
    tr = converted("transformer", "litert-cpu")[0].manifest.extra["flops"]
    assert tr["per_program"]["forward"] == TRANSFORMER_FLOPS  # projections, MLP and both attention matmuls


@pytest.mark.parametrize("target", ["onnx-cpu", "litert-cpu"])
def test_isolated_profile_holds_only_the_runtime_and_reports_the_artifacts_own_memory(converted, target):
    art = converted("convnet", target)[0]
    rep = runtime.profile(art.path, iters=40, isolate=True)
    iso = rep.extra["isolation"]
    assert iso["pid"] != os.getpid() and iso["torch_loaded"] is False  # an app embedding the runtime has no torch
    m = rep.memory
    assert m["mode"] == "isolated" and m["hwm_resettable"]
    assert 0 < m["init_mb"] <= m["overall_peak_mb"] and 0 < m["run_peak_mb"] <= m["overall_peak_mb"] < 100
    assert m["rss_before_load_mb"] < machine.rss_mb()  # this test process holds torch, the child does not
    assert rep.peak_rss_mb == pytest.approx(m["rss_before_load_mb"] + m["overall_peak_mb"])
    c = rep.compute
    assert rep.flops == CONVNET_FLOPS and c["per"] == "run"
    assert rep.gflops_per_s == pytest.approx(CONVNET_FLOPS / (rep.p50_ms * 1e6))
    assert c["peak_gflops"] > 1 and c["peak_threads"] == rep.threads
    assert rep.pct_of_peak == pytest.approx(100 * rep.gflops_per_s / c["peak_gflops"])
    st = rep.steady_state
    assert st["warmup"]["mode"] == "auto" and rep.warmup == st["warmup"]["runs"] >= 3
    assert isinstance(st["settled"], bool) and len(st["segment_medians_ms"]) == 4
    assert rep.extra["host"]["wall_s"] >= 0.3
    text = rep.table()
    assert "isolated child process: the artifact's own" in text and "% of this machine's fp32 GEMM peak" in text
    back = runtime.ProfileReport.from_json(rep.to_json())
    assert back.memory == json.loads(json.dumps(m)) and back.flops == rep.flops


def test_in_process_profile_says_so(converted):
    rep = runtime.profile(converted("convnet", "onnx-cpu")[0].path, iters=20, warmup=3)
    assert rep.memory["mode"] == "in-process" and "isolation" not in rep.extra
    assert rep.warmup == 3 and rep.steady_state["warmup"] == {"mode": "fixed", "runs": 3}
    assert "in-process: deltas of this process" in rep.table()


def test_threads_auto_sweeps_every_count_and_records_it(converted):
    rep = runtime.profile(converted("mlp", "litert-cpu")[0].path, iters=20, threads="auto", isolate=True,
                          per_op=False)
    sw = rep.extra["threads_sweep"]
    cores = machine.usable_cores()
    assert [r["threads"] for r in sw["rows"]] == list(range(1, cores + 1))
    assert all(r["runs"] >= 5 * (2 if cores > 1 else 1) and r["p50_ms"] > 0 for r in sw["rows"])
    best = min(r["p50_ms"] for r in sw["rows"])
    chosen = next(r for r in sw["rows"] if r["threads"] == sw["chosen"])
    assert rep.threads == sw["chosen"] and chosen["p50_ms"] <= best * 1.03
    assert all(r["p50_ms"] > best * 1.03 for r in sw["rows"] if r["threads"] < sw["chosen"])  # fewer threads lost
    assert "threads auto:" in rep.table()


def test_isolated_profile_takes_inputs_and_raises_typed_errors(converted, tmp_path):
    import shutil
    art, model, ex = converted("mlp", "onnx-cpu")
    x = np.ones((2, 32), np.float32)
    rep = runtime.profile(art.path, iters=5, warmup=1, inputs={"input": x}, isolate=True, per_op=False)
    assert len(rep.samples_ms) == 5
    with pytest.raises(InputError, match=r"shape \[2, 31\]"):
        runtime.profile(art.path, iters=5, inputs=[np.ones((2, 31), np.float32)], isolate=True)
    bad = tmp_path / "tampered"
    shutil.copytree(art.path, bad)
    payload = bad / art.manifest.files[0].path
    payload.write_bytes(payload.read_bytes()[:-1] + b"\0")
    with pytest.raises(IntegrityError, match="sha256"):
        runtime.profile(bad, iters=5, isolate=True)
    with pytest.raises(ConfigError, match="threads must be"):
        runtime.profile(art.path, threads="many")


def test_isolated_profiles_fork_from_one_server_per_backend_and_weigh_what_a_fresh_child_weighs(converted,
                                                                                                monkeypatch):
    from edgesdk.runtime import isolate
    art = converted("convnet", "onnx-cpu")[0]
    monkeypatch.setattr(isolate, "FORK_SERVER", False)
    fresh = runtime.profile(art.path, iters=20, warmup=3, isolate=True, per_op=False)
    monkeypatch.setattr(isolate, "FORK_SERVER", True)
    isolate.close_servers()
    a = runtime.profile(art.path, iters=20, warmup=3, isolate=True, per_op=False)
    [server] = isolate._servers.values()
    b = runtime.profile(art.path, iters=20, warmup=3, isolate=True, per_op=False)
    assert list(isolate._servers.values()) == [server] and server.alive() and server.module == "edgesdk.runtime.ort"
    fi, ia, ib = fresh.extra["isolation"], a.extra["isolation"], b.extra["isolation"]
    assert fi["process"] == "a fresh Python"
    assert ia["process"] == ib["process"] == "forked from a server that imported the backend"
    assert len({ia["pid"], ib["pid"], server.proc.pid, os.getpid()}) == 4 and ia["torch_loaded"] is False
    assert abs(ia["modules_loaded"] - fi["modules_loaded"]) <= 5
    # the server's shared-library pages are mapped into the child again: without that, its RSS before
    # load read ~20 MB low here and its load took the re-faults as the artifact's memory
    for f in ("rss_before_load_mb", "init_mb", "run_peak_mb"):
        assert a.memory[f] == pytest.approx(fresh.memory[f], rel=0.1, abs=2), f
    isolate.close_servers()
    assert not isolate._servers and server.proc.poll() is not None


def test_a_dead_fork_server_is_replaced_and_a_killed_child_is_a_clear_error(converted, monkeypatch):
    from edgesdk.runtime import isolate
    from edgesdk.runtime.errors import ExecutionError
    monkeypatch.setattr(isolate, "FORK_SERVER", True)
    art = converted("mlp", "onnx-cpu")[0]
    runtime.profile(art.path, iters=5, warmup=1, isolate=True, per_op=False)
    mod = isolate.backend_module_name(art.path)
    old = isolate._server_for(mod)
    old.proc.kill()
    old.proc.wait()
    rep = runtime.profile(art.path, iters=5, warmup=1, isolate=True, per_op=False)
    server = isolate._server_for(mod)
    assert server is not old and server.alive() and rep.extra["isolation"]["process"].startswith("forked")

    def kill_the_child(done, total):  # as the OOM killer would, mid-run
        for pid in Path(f"/proc/{server.proc.pid}/task/{server.proc.pid}/children").read_text().split():
            os.kill(int(pid), 9)
    with pytest.raises(ExecutionError, match="ended with signal 9 and no report"):
        runtime.profile(art.path, iters=10 ** 6, warmup=1, isolate=True, per_op=False, progress=kill_the_child)
    assert server.alive() and isolate._server_for(mod) is server  # the server outlives its child
    assert len(runtime.profile(art.path, iters=5, warmup=1, isolate=True, per_op=False).samples_ms) == 5


def test_executorch_planned_arena_matches_executorchs_own_reader(converted):
    from executorch.exir._serialize._program import deserialize_pte_binary
    from edgesdk.runtime.executorch import planned_memory
    art = converted("mlp", "executorch-xnnpack")[0]
    pte = art.path / art.manifest.programs["forward"].file
    want = {p.name: sum(p.non_const_buffer_sizes) for p in deserialize_pte_binary(pte.read_bytes()).program.execution_plan}
    assert planned_memory(pte) == want and want["forward"] > 0
    rep = runtime.profile(art.path, iters=10, warmup=2, per_op=False)
    assert rep.memory["backend"]["planned_arena_bytes"] == want["forward"]


# ---------------------------------------------------------------- steady state

def test_adaptive_warmup_stops_when_the_median_settles_and_is_bounded():
    w = warm_up(lambda: None, "auto")
    assert w["settled"] and w["bound"] is None and w["runs"] == 3 + len(w["medians_ms"]) * w["window"]
    k = [0]

    def slowing():  # every run is slower than the last: the median never settles
        k[0] += 1
        t = time.perf_counter() + 2e-5 * k[0]
        while time.perf_counter() < t:
            pass
    w = warm_up(slowing, "auto", max_s=0.3)
    assert not w["settled"] and w["bound"] == "0.3 s" and len(w["medians_ms"]) >= 2
    assert w["medians_ms"][-1] > w["medians_ms"][0] * 1.05
    st = steady_state([1.0] * 40, w, None)
    assert not st["settled"] and "warm-up never settled within 0.3 s" in st["flags"][0]


def test_unsettled_timings_name_their_cause():
    rng = np.random.default_rng(0)
    warm = {"mode": "auto", "settled": True, "runs": 50}
    steady = rng.normal(1.0, 0.01, 200).tolist()
    assert steady_state(steady, warm, None)["settled"]
    drifting = np.linspace(1.0, 1.4, 200).tolist()
    st = steady_state(drifting, warm, {"others_cores": 1.3, "steal_cores": 0.0, "freq_mhz": None})
    assert not st["settled"] and "drifted" in st["flags"][0]
    assert st["causes"] == ["load from other processes: 1.30 of a core busy outside this profile on average "
                            f"({machine.usable_cores()} usable cores)"]
    bimodal = rng.permutation(np.r_[rng.normal(1.0, 0.01, 140), rng.normal(1.6, 0.01, 60)]).tolist()
    st = steady_state(bimodal, warm, {"others_cores": 0.0, "steal_cores": 0.0,
                                      "freq_mhz": {"min": 1800.0, "max": 3000.0, "source": "/sys"}})
    assert not st["settled"] and st["bimodal"]["slow_share"] == pytest.approx(0.3)
    assert "CPU frequency changed between 1800 and 3000 MHz" in st["causes"][0] and "bimodal" in st["causes"][1]
    st = steady_state(drifting, warm, {"others_cores": 0.01, "steal_cores": 0.0, "freq_mhz": None})
    assert st["causes"][0].startswith("none observed") and "not observable" in st["causes"][0]


def test_host_sampler_sees_other_processes_and_sysfs_frequency(tmp_path):
    burner = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time() + 3\nwhile time.time() < t: pass"])
    try:
        time.sleep(0.2)
        s = machine.HostSampler().start()
        time.sleep(0.6)
        h = s.stop()
    finally:
        burner.kill()
        burner.wait()
    assert h["others_cores"] >= 0.5 and h["own_cores"] < 0.2  # the busy loop is another process's CPU
    freq = tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"
    freq.parent.mkdir(parents=True)
    freq.write_text("3000000\n")
    s = machine.HostSampler(root=tmp_path).start()
    freq.write_text("1800000\n")
    h = s.stop(min_wall_s=0)
    assert h["freq_mhz"]["min"] == 1800 and h["freq_mhz"]["max"] == 3000 and "cpufreq" in h["freq_mhz"]["source"]
    assert any("frequency changed" in c for c in machine.causes(h, 2))


# ---------------------------------------------------------------- GEMM peak

def test_gemm_peak_is_measured_once_per_machine_and_thread_count(tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    from edgesdk.runtime import peak
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm",
                          [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["m", "k"]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, ["k", "n"])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["m", "n"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8, producer_name="edgesdk")
    assert m.SerializeToString() == peak.GEMM_ONNX  # the embedded model is exactly this one MatMul
    monkeypatch.setenv("EDGESDK_CACHE_DIR", str(tmp_path))
    first = peak.gemm_peak(1)
    assert not first["cached"] and first["gflops"] > 1 and set(first["per_size_gflops"]) == {"256", "512", "1024"}
    assert first["gflops"] == max(first["per_size_gflops"].values())
    if (first["others_cores"] or 0) < 0.25:
        again = peak.gemm_peak(1)
        assert again["cached"] and again["gflops"] == first["gflops"]
    cached = json.loads((tmp_path / "gemm_peak.json").read_text())
    assert len(cached) == 1 and next(iter(cached)).endswith("| 1 threads") and math.isfinite(first["gflops"])


def test_interleaved_times_artifacts_side_by_side(converted):
    from edgesdk.runtime.profile import interleaved
    a = converted("mlp", "onnx-cpu")[0].path
    b = converted("mlp", "litert-cpu")[0].path
    blocks = interleaved([(a, 1), (b, 1)], rounds=3, block_s=0.02)
    assert [len(x) for x in blocks] == [3, 3] and all(v > 0 for x in blocks for v in x)
