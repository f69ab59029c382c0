"""Where a profile runs: this machine (``local``) or an Android phone over adb (``adb:SERIAL``).

The phone side is the android_demo app (package ``dev.edgesdk.demo``): it verifies the artifact
against its manifest, runs the same measuring loop as `runtime.profile` and writes a report in
the same ``edgesdk.profile/1`` schema. This module drives it with adb:

1. ``adb devices`` — adb is installed, the phone is connected and has authorized this computer;
2. ``adb -s SERIAL shell getprop`` — the phone's model, Android version, ABI and SoC;
3. ``adb -s SERIAL shell pm path dev.edgesdk.demo`` — the app is installed;
4. ``adb push`` of the payload files and ``manifest.json`` to ``/data/local/tmp/edgesdk/NAME``
   (checked locally first: a corrupt artifact is never pushed);
5. ``adb shell am start -W -S -n dev.edgesdk.demo/.MainActivity --es artifact DIR --ei warmup W
   (or ``--es warmup auto``: the app's adaptive warm-up; ``--es threads auto``: its thread sweep)
   --ei iters N --es out OUT --ez finish true`` — the app's headless benchmark;
6. a status probe until the app has written ``OUT`` (or ``OUT.error``, or died);
7. ``adb exec-out cat OUT`` — the JSON, read with `ProfileReport.from_json`; ``device`` is set
   to the phone's model from ``getprop``.

Every command goes through an injectable runner, so tests replay a recorded transcript
(tests/transcripts/) and check the exact command sequence. Like the rest of `runtime`, this
module imports nothing of ours outside `runtime/` and never torch.

Example::

    from edgesdk.runtime.devices import parse_device, profile_on_device
    rep = profile_on_device("out/mlp-executorch-xnnpack", parse_device("adb:R58M123ABC"), iters=200)
    print(rep.device, rep.p50_ms)
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgesdk.runtime.errors import (
    ConfigError, ExecutionError, InputError, IntegrityError, SdkError, TargetUnavailableError,
)
from edgesdk.runtime.manifest import MANIFEST_NAME, MAX_MANIFEST_BYTES, Manifest, parse_manifest, verify_payload
from edgesdk.runtime.profile import ProfileReport

APP_PACKAGE = "dev.edgesdk.demo"
APP_ACTIVITY = f"{APP_PACKAGE}/.MainActivity"
REMOTE_ROOT = "/data/local/tmp/edgesdk"
# the app's external files dir: written by the app without permissions, readable by adb
REMOTE_OUT_DIR = f"/sdcard/Android/data/{APP_PACKAGE}/files/profiles"
LOG_TAG = "EdgeSdkBench"
ON_DEVICE_FORMATS = ("pte", "onnx")
INSTALL_HINT = ("build and install it with `cd android_demo && ./gradlew :app:installRelease` "
                "(see android_demo/README.md)")

_ERRORS = {c.__name__: c for c in (ConfigError, InputError, IntegrityError, ExecutionError, TargetUnavailableError)}


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str = ""


Runner = Callable[[list, float], CommandResult]


def subprocess_runner(argv: list, timeout: float) -> CommandResult:
    """Run a command, capturing text output. A missing binary becomes TargetUnavailableError."""
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, errors="replace")
    except FileNotFoundError:
        raise TargetUnavailableError(
            f"{argv[0]!r} not found: install Android platform-tools (Debian: `apt-get install adb`) "
            "or point the ADB environment variable at the adb binary") from None
    except subprocess.TimeoutExpired:
        raise ExecutionError(f"`{shlex.join(argv)}` did not finish within {timeout:.0f} s") from None
    return CommandResult(p.returncode, p.stdout, p.stderr)


class AdbDevice:
    """An Android phone reached through adb. ``serial=None``: the only connected phone."""

    kind = "adb"

    def __init__(self, serial: str | None = None, *, adb: str | None = None, runner: Runner | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        if serial is not None and (not serial or any(c.isspace() for c in serial)):
            raise ConfigError(f"adb serial {serial!r} is not valid; see `adb devices` for the serials")
        self.serial = serial
        self.adb_path = adb or os.environ.get("ADB") or "adb"
        self.runner = runner or subprocess_runner
        self.sleep = sleep
        self.clock = clock

    def __repr__(self) -> str:
        return f"AdbDevice({self.serial!r})"

    @property
    def name(self) -> str:
        return f"adb:{self.serial}" if self.serial else "adb"

    # ------------------------------------------------------------------ commands

    def adb(self, *args: str, timeout: float = 60.0) -> CommandResult:
        argv = [self.adb_path] + (["-s", self.serial] if self.serial else []) + list(args)
        return self.runner(argv, timeout)

    def shell(self, *words: str, timeout: float = 60.0) -> CommandResult:
        """Run one command on the phone; ``words`` are quoted for the phone's shell."""
        return self.shell_script(shlex.join(words), timeout=timeout)

    def shell_script(self, script: str, timeout: float = 60.0) -> CommandResult:
        """Run a shell script (already quoted) on the phone."""
        return self.adb("shell", script, timeout=timeout)

    # ------------------------------------------------------------------ checks

    def connect(self) -> None:
        """Make sure adb runs and sees this phone, authorized; pick the serial when none was given."""
        r = self.runner([self.adb_path, "devices"], 30.0)
        if r.rc != 0:
            raise TargetUnavailableError(
                f"`adb devices` failed ({_first_line(r.stderr or r.stdout)}); restart the server with "
                "`adb kill-server && adb start-server`")
        devices = parse_adb_devices(r.stdout)
        seen = ", ".join(f"{s} ({st})" for s, st in devices.items()) or "none"
        if self.serial is None:
            ready = [s for s, st in devices.items() if st == "device"]
            if not devices:
                raise TargetUnavailableError(
                    "no Android device connected: plug in a phone with USB debugging enabled "
                    "(Settings > Developer options) and check `adb devices`")
            if len(ready) != 1:
                raise TargetUnavailableError(
                    f"{len(ready)} ready devices (adb sees: {seen}); pick one with --device adb:SERIAL")
            self.serial = ready[0]
            return
        state = devices.get(self.serial)
        if state is None:
            raise TargetUnavailableError(
                f"no device {self.serial!r} connected (adb sees: {seen}); connect it with USB debugging "
                "enabled, or use a serial from `adb devices`")
        if state == "unauthorized":
            raise TargetUnavailableError(
                f"device {self.serial} has not authorized this computer: unlock it and accept the "
                "'Allow USB debugging' prompt, then retry")
        if state != "device":
            raise TargetUnavailableError(
                f"device {self.serial} is {state}: reconnect the cable (or `adb reconnect`) and retry")

    def properties(self) -> dict[str, str]:
        r = self.shell("getprop")
        if r.rc != 0:
            raise TargetUnavailableError(f"cannot read {self.serial}'s properties: {_first_line(r.stderr or r.stdout)}")
        return parse_getprop(r.stdout)

    def require_app(self) -> None:
        r = self.shell("pm", "path", APP_PACKAGE)
        if r.rc != 0 or "package:" not in r.stdout:
            raise TargetUnavailableError(f"app {APP_PACKAGE} is not installed on {self.serial}: {INSTALL_HINT}")


def _first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return "no output"


def parse_adb_devices(text: str) -> dict[str, str]:
    """``adb devices`` output -> {serial: state} (``device``, ``unauthorized``, ``offline``...)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("List of devices") or line.startswith("*"):
            continue
        parts = line.split()
        if len(parts) >= 2:
            out[parts[0]] = parts[1]
    return out


_PROP = re.compile(r"^\[([^\]]+)\]: \[(.*)\]$")


def parse_getprop(text: str) -> dict[str, str]:
    """``getprop`` output (``[key]: [value]`` lines) -> dict."""
    props = {}
    for line in text.splitlines():
        m = _PROP.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def describe_phone(props: dict[str, str]) -> str:
    """``Google Pixel 8 (Android 14 / API 34, arm64-v8a, SoC Tensor G3)`` from getprop values."""
    maker = props.get("ro.product.manufacturer", "").strip()
    model = props.get("ro.product.model", "").strip() or "Android device"
    name = model if not maker or model.lower().startswith(maker.lower()) else f"{maker} {model}"
    details = []
    release, sdk = props.get("ro.build.version.release", ""), props.get("ro.build.version.sdk", "")
    if release or sdk:
        details.append(f"Android {release}" + (f" / API {sdk}" if sdk else ""))
    if props.get("ro.product.cpu.abi"):
        details.append(props["ro.product.cpu.abi"])
    soc = props.get("ro.soc.model") or props.get("ro.board.platform") or props.get("ro.hardware")
    if soc:
        details.append(f"SoC {soc}")
    return f"{name} ({', '.join(details)})" if details else name


def parse_device(spec: str):
    """``local`` -> "local"; ``adb`` / ``adb:SERIAL`` -> AdbDevice. Anything else: ConfigError."""
    if spec in (None, "", "local"):
        return "local"
    if spec == "adb":
        return AdbDevice(None)
    if spec.startswith("adb:"):
        return AdbDevice(spec[4:])
    raise ConfigError(f"Unknown device {spec!r}. Available: local, adb (the only connected phone), "
                      "adb:SERIAL (a serial from `adb devices`)")


# ------------------------------------------------------------------ profiling on a phone

def _local_artifact(path) -> tuple[Path, Manifest]:
    p = Path(path)
    root = p.parent if p.name == MANIFEST_NAME else p
    m = root / MANIFEST_NAME
    if not m.is_file():
        raise ConfigError(f"{p}: not an artifact directory (no {MANIFEST_NAME}); profiling on a phone needs an "
                          "artifact from `edgesdk convert` (the app checks the payload against its manifest)")
    if m.stat().st_size > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{m}: too large for a manifest")
    manifest = parse_manifest(m.read_bytes())
    if manifest.format not in ON_DEVICE_FORMATS:
        raise TargetUnavailableError(
            f"{root}: format {manifest.format!r} does not run in the Android app yet (it runs "
            f"{', '.join(ON_DEVICE_FORMATS)}: targets executorch-xnnpack, onnx-cpu, qnn-htp)")
    verify_payload(root, manifest)
    return root, manifest


def _remote_name(manifest: Manifest) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", manifest.name)[:100] or "artifact"


def _status_probe(out: str) -> str:
    """A phone-side script printing done / failed + the app's error line / running / gone."""
    err = out + ".error"
    q = shlex.quote
    return (f"if [ -f {q(out)} ]; then echo done; elif [ -f {q(err)} ]; then echo failed; cat {q(err)}; "
            f"elif pidof {APP_PACKAGE} >/dev/null; then echo running; else echo gone; fi")


def _app_error(text: str, serial: str) -> SdkError:
    """The app's error file holds ``Kind: message``; map it back to our error classes."""
    line = _first_line(text)
    kind, _, msg = line.partition(": ")
    cls = _ERRORS.get(kind)
    if cls is None:
        return ExecutionError(f"on {serial}: {line}")
    return cls(f"on {serial}: {msg}")


def profile_on_device(artifact, device: AdbDevice, *, warmup: int | str = 10, iters: int = 100,
                      threads: int | str | None = None, program: str | None = None, timeout_s: float = 600.0,
                      poll_s: float = 0.5, log: Callable[[str], None] | None = None) -> ProfileReport:
    """Profile an artifact on an Android phone with the android_demo app; returns its ProfileReport.

    Raises TargetUnavailableError (with the fix) when adb is missing, no phone is connected or
    authorized, or the app is not installed; IntegrityError when the local artifact is corrupt
    (nothing is pushed) or the phone's copy fails the app's check; ExecutionError when the app
    fails or gives no result within ``timeout_s``.
    """
    if not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"iters must be a positive int, got {iters!r}")
    if warmup != "auto" and (isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0):
        raise ConfigError(f"warmup must be a non-negative int or 'auto' (until the timings settle), got {warmup!r}")
    if threads is not None and threads != "auto" and (isinstance(threads, bool) or not isinstance(threads, int)
                                                     or threads < 1):
        raise ConfigError(f"threads must be a positive int, 'auto' (the app times 1..the phone's cores and uses the "
                          f"fastest) or None (the library's default), got {threads!r}")
    say = log or (lambda _msg: None)
    root, manifest = _local_artifact(artifact)

    device.connect()
    props = device.properties()
    phone = describe_phone(props)
    device.require_app()

    remote = f"{REMOTE_ROOT}/{_remote_name(manifest)}"
    files = [f.path for f in manifest.files] + [MANIFEST_NAME]
    total_mb = sum((root / f).stat().st_size for f in files) / 2**20
    say(f"pushing {len(files)} files ({total_mb:.1f} MB) to {device.serial}:{remote}")
    dirs = sorted({remote} | {f"{remote}/{Path(f).parent}" for f in files if Path(f).parent != Path(".")})
    r = device.shell_script(f"rm -rf {shlex.quote(remote)} && mkdir -p {shlex.join(dirs)}")
    if r.rc != 0:
        raise ExecutionError(f"cannot create {remote} on {device.serial}: {_first_line(r.stderr or r.stdout)}")
    for f in files:  # payload first, manifest last
        r = device.adb("push", str(root / f), f"{remote}/{f}", timeout=max(120.0, total_mb))
        if r.rc != 0:
            raise ExecutionError(f"adb push {root / f} failed: {_first_line(r.stderr or r.stdout)}")

    out = f"{REMOTE_OUT_DIR}/{_remote_name(manifest)}.json"
    device.shell("rm", "-f", out, out + ".error")
    say(f"running {'adaptive' if warmup == 'auto' else warmup} warm-up + {iters} timed runs on {phone}"
        + (" after a thread sweep" if threads == "auto" else ""))
    cmd = ["am", "start", "-W", "-S", "-n", APP_ACTIVITY, "--es", "artifact", remote,
           *(("--es", "warmup", "auto") if warmup == "auto" else ("--ei", "warmup", str(warmup))),
           "--ei", "iters", str(iters), "--es", "out", out, "--ez", "finish", "true"]
    if threads:
        cmd += ["--es", "threads", "auto"] if threads == "auto" else ["--ei", "threads", str(threads)]
    if program:
        cmd += ["--es", "program", program]
    r = device.shell(*cmd)
    text = r.stdout + r.stderr
    if "does not exist" in text or "Activity not started, unable to resolve" in text:
        raise TargetUnavailableError(f"app {APP_PACKAGE} is not installed on {device.serial}: {INSTALL_HINT}")
    if r.rc != 0 or re.search(r"^Error", text, re.M):
        raise ExecutionError(f"`am start` failed on {device.serial}: {_first_line(text)}")

    deadline = device.clock() + timeout_s
    while True:
        r = device.shell_script(_status_probe(out))
        status, _, rest = r.stdout.strip().partition("\n")
        if status == "done":
            break
        if status == "failed":
            raise _app_error(rest, device.serial)
        if status == "gone":
            raise ExecutionError(
                f"the app on {device.serial} exited without a result (crashed?); see "
                f"`adb -s {device.serial} logcat -s {LOG_TAG} AndroidRuntime`")
        if device.clock() > deadline:
            raise ExecutionError(
                f"no result from the app on {device.serial} after {timeout_s:.0f} s; see "
                f"`adb -s {device.serial} logcat -s {LOG_TAG}`")
        device.sleep(poll_s)

    r = device.adb("exec-out", "cat", out)
    if r.rc != 0:
        raise ExecutionError(f"cannot read {out} from {device.serial}: {_first_line(r.stderr or r.stdout)}")
    try:
        rep = ProfileReport.from_json(r.stdout)
    except (ValueError, TypeError) as e:
        raise ExecutionError(f"the app on {device.serial} wrote an unreadable report: {e}") from None
    for key in ("load_ms", "first_run_ms", "peak_rss_mb", "baseline_rss_mb"):
        if getattr(rep, key) is None:  # NaN travels as null in JSON
            setattr(rep, key, float("nan"))
    rep.device = phone
    rep.artifact = str(root)
    return rep
