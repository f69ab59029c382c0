"""`edgesdk profile --device adb:SERIAL`: the adb command sequence and its parsing, replayed from a transcript.

No phone is attached to the machines this project is built on, so every test here replays
adb's answers (tests/transcripts/) through `AdbDevice`'s injectable runner and checks the
exact commands issued; the one test with the real `subprocess` runner checks the message
when adb itself is missing.
"""

import json
import math

import pytest

from conftest import ROOT, layer
from edgesdk.runtime.devices import (
    AdbDevice, CommandResult, describe_phone, parse_adb_devices, parse_device, parse_getprop, profile_on_device,
)
from edgesdk.runtime.errors import ConfigError, ExecutionError, IntegrityError, TargetUnavailableError
from edgesdk.runtime.manifest import Manifest, ProgramSpec, TensorSpec, file_entry
from edgesdk.runtime.stats import summarize

TRANSCRIPT = json.loads((ROOT / "tests/transcripts/adb_profile_pixel8.json").read_text())
SERIAL = TRANSCRIPT["serial"]
STEPS = TRANSCRIPT["commands"]
# the same session with the app's adaptive warm-up and thread sweep (`--es warmup auto --es threads auto`)
AUTO = json.loads((ROOT / "tests/transcripts/adb_profile_pixel8_auto.json").read_text())


class Replay:
    """A runner that answers each adb command from a transcript, refusing any other command."""

    def __init__(self, steps, artifact=None):
        sub = (lambda s: s.replace("{ARTIFACT}", str(artifact))) if artifact else (lambda s: s)
        self.steps = [dict(s, argv=[sub(a) for a in s["argv"]], stdout=sub(s["stdout"])) for s in steps]
        self.calls = []

    def __call__(self, argv, timeout):
        assert timeout > 0
        i = len(self.calls)
        self.calls.append(list(argv))
        assert i < len(self.steps), f"unexpected command #{i + 1}: {argv}"
        want = self.steps[i]
        assert list(argv) == want["argv"], f"command #{i + 1} differs from the transcript"
        return CommandResult(want["rc"], want["stdout"], want.get("stderr", ""))

    @property
    def done(self) -> bool:
        return len(self.calls) == len(self.steps)


class FakeClock:
    def __init__(self):
        self.t, self.sleeps = 0.0, []

    def __call__(self):
        return self.t

    def sleep(self, s):
        self.sleeps.append(s)
        self.t += s


def make_artifact(root, name="mlp-executorch-xnnpack", fmt="pte", file="model.pte"):
    root.mkdir(parents=True)
    (root / file).write_bytes(bytes(range(256)) * 5 + b"x" * 20)  # 1300 bytes
    spec = ProgramSpec("forward", file, "forward", (TensorSpec("x", (1, 256), "float32"),),
                       (TensorSpec("output", (1, 10), "float32"),))
    m = Manifest(name=name, target="executorch-xnnpack" if fmt == "pte" else "litert-cpu", format=fmt,
                 programs={"forward": spec}, files=[file_entry(root, file)], created_at="2026-12-01T09:00:00+00:00")
    (root / "manifest.json").write_text(m.to_json())
    return root


def device(runner, clock=None, serial=SERIAL):
    clock = clock or FakeClock()
    return AdbDevice(serial, adb="adb", runner=runner, sleep=clock.sleep, clock=clock)


# ------------------------------------------------------------------ the recorded session

def test_profile_on_a_phone_replays_the_transcript(tmp_path):
    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    replay, clock, lines = Replay(STEPS, art), FakeClock(), []
    rep = profile_on_device(art, device(replay, clock), warmup=TRANSCRIPT["warmup"], iters=TRANSCRIPT["iters"],
                            log=lines.append)
    assert replay.done, f"{len(replay.calls)} of {len(replay.steps)} commands issued"
    assert clock.sleeps == [0.5, 0.5]  # two "running" answers before "done"
    app = json.loads(STEPS[-1]["stdout"])
    assert rep.device == TRANSCRIPT["expected_device"]   # the phone's model from getprop, not the app's string
    assert rep.artifact == str(art)
    assert rep.samples_ms == app["samples_ms"] and rep.iters == 50 and rep.warmup == 10
    assert (rep.backend, rep.backend_version, rep.threads, rep.target) == ("executorch", "1.5.1", 4, "executorch-xnnpack")
    assert rep.verified is True and rep.load_ms == app["load_ms"]
    # the statistics the app wrote agree with the Python profiler's on the same samples
    st = summarize(app["samples_ms"])
    for k in ("p50", "p90", "p99", "mean", "std"):
        assert math.isclose(app["stats"][f"{k}_ms"], st[k], rel_tol=1e-12, abs_tol=1e-12)
    assert rep.p99_ms == st["p99"]
    assert "Pixel 8" in rep.table() and json.loads(rep.to_json())["device"] == rep.device
    assert any("pushing 2 files" in line for line in lines)


def test_a_phone_profile_gets_the_adaptive_warmup_and_the_thread_sweep(tmp_path):
    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    replay, lines = Replay(AUTO["commands"], art), []
    rep = profile_on_device(art, device(replay), warmup="auto", threads="auto", iters=50, log=lines.append)
    assert replay.done  # `--es warmup auto ... --es threads auto` in the am start command, nothing else changed
    warm = rep.steady_state["warmup"]
    assert warm["mode"] == "auto" and warm["settled"] and rep.warmup == warm["runs"] == 3 + 4 * warm["window"]
    assert rep.settled is True
    sweep = rep.extra["threads_sweep"]
    assert sweep["chosen"] == rep.threads == 2 and [r["threads"] for r in sweep["rows"]] == list(range(1, 9))
    table = rep.table()
    assert "warm-up settled after 331 runs" in table and "threads auto: 1: p50 0.4412 ms" in table and "→ 2" in table
    assert any("adaptive warm-up + 50 timed runs" in ln and "thread sweep" in ln for ln in lines)
    for bad, needle in (({"warmup": -1}, "warmup must be a non-negative int or 'auto'"),
                        ({"threads": "all"}, "threads must be a positive int, 'auto'")):
        with pytest.raises(ConfigError, match=needle):
            profile_on_device(art, device(Replay([])), iters=5, **bad)


def test_the_cli_prints_a_phone_profile_like_a_local_one(tmp_path, monkeypatch, capsys):
    import edgesdk.runtime.devices as devices
    from edgesdk.cli import main

    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    replay, clock = Replay(AUTO["commands"], art), FakeClock()  # the CLI's default warm-up is adaptive
    real_init = devices.AdbDevice.__init__

    def init(self, serial=None, **kw):
        real_init(self, serial, adb="adb", runner=replay, sleep=clock.sleep, clock=clock)
    monkeypatch.setattr(devices.AdbDevice, "__init__", init)
    out = tmp_path / "phone.json"
    assert main(["profile", str(art), "--device", f"adb:{SERIAL}", "--iters", "50", "--threads", "auto", "--json",
                 "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert replay.done
    assert printed["threads"] == printed["extra"]["threads_sweep"]["chosen"] == 2
    assert printed["schema"] == "edgesdk.profile/1" and printed["device"] == TRANSCRIPT["expected_device"]
    assert json.loads(out.read_text()) == printed


# ------------------------------------------------------------------ failures: one actionable line each

def _first(n, **override):
    """The transcript's first n commands, the last one answered differently."""
    steps = [dict(s) for s in STEPS[:n]]
    steps[-1].update(override)
    return steps


def _fails(tmp_path, steps, exc, fragment, serial=SERIAL, clock=None):
    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    replay = Replay(steps, art)
    with pytest.raises(exc) as e:
        profile_on_device(art, device(replay, clock, serial=serial), warmup=10, iters=50)
    assert fragment in str(e.value)
    assert "\n" not in str(e.value)
    assert replay.done, "stopped before the transcript ended"
    return str(e.value)


def test_no_adb_binary(tmp_path):
    art = make_artifact(tmp_path / "a")
    with pytest.raises(TargetUnavailableError, match="not found: install Android platform-tools"):
        profile_on_device(art, AdbDevice("X", adb=str(tmp_path / "no-such-adb")))


def test_cli_without_adb_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    from edgesdk.cli import main
    monkeypatch.setenv("ADB", str(tmp_path / "no-such-adb"))
    assert main(["profile", str(make_artifact(tmp_path / "a")), "--device", "adb:X"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "install Android platform-tools" in err


def test_no_such_device(tmp_path):
    msg = _fails(tmp_path, _first(1, stdout="List of devices attached\nemulator-5554\tdevice\n\n"),
                 TargetUnavailableError, "no device '39081FDJH00B12' connected")
    assert "adb sees: emulator-5554 (device)" in msg


def test_no_device_at_all(tmp_path):
    steps = [dict(STEPS[0], argv=["adb", "devices"], stdout="List of devices attached\n\n")]
    _fails(tmp_path, steps, TargetUnavailableError, "no Android device connected", serial=None)


def test_several_devices_need_a_serial(tmp_path):
    steps = [dict(STEPS[0], stdout=f"List of devices attached\n{SERIAL}\tdevice\nR58M1\tdevice\n")]
    _fails(tmp_path, steps, TargetUnavailableError, "pick one with --device adb:SERIAL", serial=None)


def test_plain_adb_picks_the_only_ready_phone(tmp_path):
    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    steps = [dict(s) for s in STEPS]
    replay = Replay(steps, art)
    dev = device(replay, serial=None)
    rep = profile_on_device(art, dev, warmup=10, iters=50)
    assert dev.serial == SERIAL and replay.done and rep.device == TRANSCRIPT["expected_device"]


def test_unauthorized_phone(tmp_path):
    _fails(tmp_path, _first(1, stdout=f"List of devices attached\n{SERIAL}\tunauthorized\n"),
           TargetUnavailableError, "accept the 'Allow USB debugging' prompt")


def test_adb_server_failure(tmp_path):
    _fails(tmp_path, _first(1, rc=1, stdout="", stderr="* cannot start server: address in use\n"),
           TargetUnavailableError, "adb kill-server")


def test_app_not_installed(tmp_path):
    msg = _fails(tmp_path, _first(3, rc=1, stdout=""), TargetUnavailableError,
                 "app dev.edgesdk.demo is not installed on 39081FDJH00B12")
    assert "./gradlew :app:installRelease" in msg


def test_activity_missing_is_reported_as_not_installed(tmp_path):
    _fails(tmp_path, _first(8, stdout="Starting: Intent { cmp=dev.edgesdk.demo/.MainActivity }\n"
                               "Error type 3\nError: Activity class {dev.edgesdk.demo/dev.edgesdk.demo.MainActivity} "
                               "does not exist.\n"),
           TargetUnavailableError, "is not installed")


def test_push_failure(tmp_path):
    _fails(tmp_path, _first(5, rc=1, stdout="", stderr="adb: error: failed to copy: No space left on device\n"),
           ExecutionError, "No space left on device")


def test_the_phones_integrity_error_comes_back_as_integrity_error(tmp_path):
    err = ("IntegrityError: /data/local/tmp/edgesdk/mlp-executorch-xnnpack/model.pte: size 1024 bytes, manifest "
           "says 1300 (truncated or replaced file)\n")
    msg = _fails(tmp_path, _first(9, stdout="failed\n" + err), IntegrityError, "(truncated or replaced file)")
    assert msg.startswith("on 39081FDJH00B12: /data/local/tmp")


def test_app_crash(tmp_path):
    _fails(tmp_path, _first(9, stdout="gone\n"), ExecutionError, "logcat -s EdgeSdkBench")


def test_no_result_in_time(tmp_path):
    steps = STEPS[:9] + [STEPS[8]] * 3
    art = make_artifact(tmp_path / "mlp-executorch-xnnpack")
    replay, clock = Replay(steps, art), FakeClock()
    with pytest.raises(ExecutionError, match="no result from the app on 39081FDJH00B12 after 1 s"):
        profile_on_device(art, device(replay, clock), warmup=10, iters=50, timeout_s=1.0)
    assert replay.done and clock.sleeps == [0.5, 0.5, 0.5]


def test_unreadable_report(tmp_path):
    _fails(tmp_path, STEPS[:11] + [dict(STEPS[11], stdout='{"schema": "something/else"}')], ExecutionError,
           "unreadable report")


def test_corrupt_local_artifact_is_never_pushed(tmp_path):
    art = make_artifact(tmp_path / "a")
    (art / "model.pte").write_bytes(b"corrupt")
    replay = Replay([])
    with pytest.raises(IntegrityError):
        profile_on_device(art, device(replay))
    assert replay.calls == []


def test_formats_the_app_cannot_run_and_bare_files(tmp_path):
    art = make_artifact(tmp_path / "lite", fmt="tflite", file="model.tflite")
    with pytest.raises(TargetUnavailableError, match="'tflite' does not run in the Android app"):
        profile_on_device(art, device(Replay([])))
    with pytest.raises(ConfigError, match="not an artifact directory"):
        profile_on_device(art / "model.tflite", device(Replay([])))


# ------------------------------------------------------------------ parsing

def test_parse_device():
    assert parse_device("local") == "local"
    assert parse_device("adb").serial is None
    assert parse_device("adb:emulator-5554").serial == "emulator-5554"
    with pytest.raises(ConfigError, match="Unknown device 'phone'. Available: local, adb"):
        parse_device("phone")
    with pytest.raises(ConfigError, match="not valid"):
        parse_device("adb:")


def test_parse_adb_devices_and_getprop():
    assert parse_adb_devices("* daemon not running; starting now at tcp:5037\n* daemon started successfully\n"
                             "List of devices attached\nA1\tdevice\nB2\toffline\n\n") == {"A1": "device", "B2": "offline"}
    props = parse_getprop(STEPS[1]["stdout"])
    assert props["ro.product.model"] == "Pixel 8" and props["ro.soc.model"] == "Tensor G3"
    assert describe_phone(props) == TRANSCRIPT["expected_device"]
    assert describe_phone({"ro.product.manufacturer": "samsung", "ro.product.model": "SM-S918B",
                           "ro.board.platform": "kalama"}) == "samsung SM-S918B (SoC kalama)"
    assert describe_phone({"ro.product.manufacturer": "OnePlus", "ro.product.model": "OnePlus 12"}) == "OnePlus 12"
    assert describe_phone({}) == "Android device"


def test_devices_stay_in_the_runtime_layer():
    """runtime.devices imports nothing of ours outside runtime/, and never torch."""
    import subprocess
    import sys
    code = "import sys, edgesdk.runtime.devices; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert not {layer(m) for m in out.split()} & {"sdk", "models", "converters", "torch"}
