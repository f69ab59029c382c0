"""What the machine is doing while we measure: memory of this process, CPU time used by other
processes, hypervisor steal, CPU frequency. Linux `/proc` and `/sys`; elsewhere the readings
are None and profiles say they could not tell.

Example::

    from edgesdk.runtime.machine import HostSampler
    s = HostSampler().start()
    ...                      # the timed runs
    s.sample()               # optional: a frequency reading mid-way
    print(s.stop())          # {'others_cores': 0.02, 'steal_cores': 0.0, 'freq_mhz': None, ...}
"""

from __future__ import annotations

import math
import os
import platform
import time
from pathlib import Path

from edgesdk.runtime.errors import ConfigError

# A series is blamed on other processes when they kept at least this much of a core busy, on the
# hypervisor when it stole this much, on frequency scaling when the clock moved by this much.
OTHERS_CORES = 0.25
STEAL_CORES = 0.05
FREQ_CHANGE = 0.05
MIN_WALL_S = 0.3


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# CPU features that give int8 matrix products a dot-product instruction (x86: VNNI, AMX; Arm: dotprod, i8mm).
# Without one, x86 int8 GEMMs multiply-add byte pairs into int16 and ran no faster than fp32 SGEMM
# (ONNX Runtime on an AVX2 EPYC: 0.74-1.39x on 29 of 34 zoo models; benchmarks/onnx_int8_headroom.py, RESULTS.md "#17, ninth session").
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")
# "1" / "0": the CPU the artifacts will run on has / lacks them, where it is not this one
INT8_DOT_ENV = "EDGESDK_CPU_INT8_DOT"


def int8_dot_product(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool | None:
    """Whether the deployment CPU has int8 dot-product instructions: ``EDGESDK_CPU_INT8_DOT`` (``1`` or
    ``0``) when set, else this machine's ``/proc/cpuinfo`` flags (`INT8_DOT_FLAGS`); None where it
    cannot tell (no /proc)."""
    v = os.environ.get(INT8_DOT_ENV)
    if v is not None:
        if v.strip() not in ("0", "1"):
            raise ConfigError(f"{INT8_DOT_ENV} must be 1 (the deployment CPU has int8 dot-product instructions: "
                              f"x86 VNNI/AMX, Arm dotprod) or 0 (it has not), got {v!r}")
        return v.strip() == "1"
    try:
        with open(cpuinfo) as f:
            flags = {w for line in f if line.split(":", 1)[0].strip() in ("flags", "Features")
                     for w in line.split(":", 1)[1].split()}
    except OSError:
        return None
    return any(f in flags for f in INT8_DOT_FLAGS) if flags else None


def usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


# ---------------------------------------------------------------- memory of this process

def status_kb(key: str, pid: int | str = "self") -> float | None:
    """A ``/proc/<pid>/status`` field in KiB (VmRSS, VmHWM...), None where there is no /proc."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = status_kb("VmRSS")
    return kb / 1024 if kb is not None else math.nan


def hwm_mb() -> float:
    """The process's resident high-water mark (what LiteRT's benchmark_model reports through
    getrusage's ru_maxrss)."""
    kb = status_kb("VmHWM")
    if kb is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def reset_hwm() -> bool:
    """Reset the kernel's high-water mark to the current RSS so the next peak covers only what
    follows (``/proc/self/clear_refs``); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------- CPU time of everyone else

def _proc_stat() -> tuple[float, float] | None:
    """(busy seconds, steal seconds) over all CPUs since boot."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    v = [int(x) for x in fields[1:]]
    v += [0] * (8 - len(v))
    hz = os.sysconf("SC_CLK_TCK")
    user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
    return (user + nice + system + irq + softirq) / hz, steal / hz


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


# ---------------------------------------------------------------- CPU frequency

def cpu_mhz(root: str | os.PathLike = "/", cpus: list[int] | None = None) -> tuple[list[float], str] | None:
    """Current frequency of the usable CPUs and where it came from: cpufreq in ``/sys`` first,
    else the ``cpu MHz`` lines of ``/proc/cpuinfo``; None when neither tells."""
    root = Path(root)
    if cpus is None:
        try:
            cpus = sorted(os.sched_getaffinity(0))
        except AttributeError:
            cpus = list(range(os.cpu_count() or 1))
    out = []
    for c in cpus:
        p = root / f"sys/devices/system/cpu/cpu{c}/cpufreq/scaling_cur_freq"
        try:
            out.append(int(p.read_text().strip()) / 1000)
        except (OSError, ValueError):
            pass
    if out:
        return out, "/sys/devices/system/cpu/*/cpufreq/scaling_cur_freq"
    try:
        text = (root / "proc/cpuinfo").read_text()
    except OSError:
        return None
    mhz = []
    for line in text.splitlines():
        if line.startswith("cpu MHz"):
            try:
                mhz.append(float(line.split(":", 1)[1]))
            except ValueError:
                pass
    wanted = [mhz[c] for c in cpus if c < len(mhz)]
    return (wanted, "/proc/cpuinfo") if wanted else None


class HostSampler:
    """CPU time of other processes, hypervisor steal and CPU frequency over an interval."""

    def __init__(self, root: str | os.PathLike = "/"):
        self.root = root
        self._t0 = self._stat0 = self._own0 = None
        self._freqs: list[float] = []
        self._freq_source: str | None = None

    def start(self) -> "HostSampler":
        self.sample()
        self._t0 = time.perf_counter()
        self._stat0 = _proc_stat()
        self._own0 = _own_cpu_s()
        return self

    def sample(self) -> None:
        got = cpu_mhz(self.root)
        if got:
            self._freqs += got[0]
            self._freq_source = got[1]

    def stop(self, min_wall_s: float = MIN_WALL_S) -> dict:
        """The reading since `start`. /proc/stat counts in 10 ms ticks, so a shorter interval is
        extended (by sleeping: this process then adds nothing) to ``min_wall_s``."""
        self.sample()
        wall = time.perf_counter() - self._t0
        if wall < min_wall_s:
            time.sleep(min_wall_s - wall)
            wall = time.perf_counter() - self._t0
        stat1, own = _proc_stat(), _own_cpu_s() - self._own0
        out: dict = {"wall_s": wall, "others_cores": None, "steal_cores": None, "own_cores": own / wall if wall else None}
        if self._stat0 and stat1 and wall > 0:
            busy = stat1[0] - self._stat0[0]
            out["others_cores"] = max(0.0, (busy - own) / wall)
            out["steal_cores"] = max(0.0, (stat1[1] - self._stat0[1]) / wall)
        if self._freqs:
            out["freq_mhz"] = {"min": min(self._freqs), "max": max(self._freqs), "source": self._freq_source}
        else:
            out["freq_mhz"] = None
        return out


def causes(host: dict | None, usable_cores: int) -> list[str]:
    """Plain-language reasons a series may not have settled, from a `HostSampler` reading."""
    if not host:
        return []
    out = []
    others = host.get("others_cores")
    if others is not None and others >= OTHERS_CORES:
        out.append(f"load from other processes: {others:.2f} of a core busy outside this profile on average "
                   f"({usable_cores} usable cores)")
    steal = host.get("steal_cores")
    if steal is not None and steal >= STEAL_CORES:
        out.append(f"CPU time stolen by the hypervisor: {steal:.2f} of a core")
    f = host.get("freq_mhz")
    if f and f["max"] > 0 and (f["max"] - f["min"]) / f["max"] >= FREQ_CHANGE:
        out.append(f"CPU frequency changed between {f['min']:.0f} and {f['max']:.0f} MHz ({f['source']})")
    return out
