"""Why the local executor's worker processes wait for OpenMP passively, and why a student's fp32
quality runs at one torch thread: the per-call time of a batch-1 op (GELU on a (1, 128) tensor,
as in the mlp students) at 1 and 2 torch threads, under libgomp's default (spinning) wait policy
and under ``OMP_WAIT_POLICY=PASSIVE``, each in a fresh process (the policy is read when libgomp
loads), all in one run side by side.

The gap shows up when other processes hold the cores (as the conversion workers do while the
pipeline's process scores a student): run it beside a load, e.g. during a demo::

    python benchmarks/omp_wait.py            # prints one row per (policy, threads)
"""

from __future__ import annotations

import os
import subprocess
import sys

CHILD = """
import time, torch
torch.set_num_threads({threads})
x, g = torch.randn(1, 128), torch.nn.GELU()
for _ in range(20):
    g(x)
t = time.perf_counter()
for _ in range({calls}):
    g(x)
print((time.perf_counter() - t) / {calls} * 1e3)
"""


def per_call_ms(threads: int, policy: str | None, calls: int = 200) -> float:
    env = dict(os.environ)
    env.pop("OMP_WAIT_POLICY", None)
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    out = subprocess.run([sys.executable, "-c", CHILD.format(threads=threads, calls=calls)], env=env,
                         capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main(rounds: int = 3) -> int:
    import statistics
    print(f"load average: {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores; median of {rounds} "
          "processes per row, rows interleaved")
    cases = [(p, t) for p in (None, "PASSIVE") for t in (1, 2)]
    got: dict = {c: [] for c in cases}
    for r in range(rounds):
        for c in (cases if r % 2 == 0 else cases[::-1]):
            got[c].append(per_call_ms(c[1], c[0], calls=2000))
    print(f"{'OMP_WAIT_POLICY':<16} {'threads':>7} {'ms per GELU(1x128)':>19}  all runs")
    for (policy, threads), v in got.items():
        print(f"{policy or 'default':<16} {threads:>7} {statistics.median(v):>19.4f}  "
              + ", ".join(f"{x:.4f}" for x in v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
