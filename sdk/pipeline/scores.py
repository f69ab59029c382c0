"""Quality scores of profiled artifacts, several at once, after every timing.

A score is correctness (the family's metric through the runtime), not timing, so it needs no quiet
machine: the local executor times every artifact alone, one at a time, then scores them on
``workers`` threads (the runtimes release the GIL while a program runs; a generation step on the
HTP emulator is ~0.1 s of native code). Scores of one chain (the caller's key: one per runtime
library, which may keep process-wide state, e.g. ExecuTorch's thread pool) never run at once, and
chains holding an emulated device (one generation takes seconds there) start first, as they are
the longest. Inside a chain, scores marked ``early`` (whole generations on an emulated device:
seconds of native code per call) run before the others (per-sample loops of small models, which
take the GIL at every call): those then run once the other chains are done instead of waiting on
them. In a demo, mlp-small's qnn-htp score took 0.4 s alone and 6.7 s while another chain ran, and
that chain (the HTP emulator's) bounds the scoring phase (RESULTS.md, #21 eighth session).

>>> calls = []
>>> score_all([("qnn-htp", True, lambda: calls.append("npu")),
...            ("onnx-cpu", False, lambda: calls.append("cpu"))], workers=1)
>>> calls
['npu', 'cpu']
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


def score_all(scores: list[tuple], workers: int, offload: list | tuple = ()) -> None:
    """Run each ``(chain, emulated, score[, early])``'s ``score()``: the scores of one chain one after
    another, its ``early`` ones first, otherwise in the given order; chains on ``workers`` threads
    (those with an emulated device first). The first error raised by a score (or Ctrl-C) is raised
    here at once, and no further score starts.

    ``offload``: evaluators that each run a quality function in another process (the local
    executor's idle conversion workers). The emulated scores are then taken off their chains and
    shared out among them, ``early`` ones first, each called as ``score(evaluator)``. In one process an
    emulator hardly runs two programs at once: a Mamba uint16 prefill on the HTP emulator took 0.68 s
    alone, 1.23 / 1.16 s each from two threads of one process, 0.73 / 0.62 s each from two processes
    (benchmarks/emulator_processes.py), so separate processes are what let two emulated scores
    progress at once."""
    remote: list = []
    if offload:
        remote = sorted((s for s in scores if s[1]), key=lambda s: not (len(s) > 3 and s[3]))
        scores = [s for s in scores if not s[1]]
    chains: dict[str, list] = {}
    emulated: set[str] = set()
    for chain, emu, fn, *early in scores:
        chains.setdefault(chain, []).append((not (early and early[0]), len(chains.get(chain, [])), fn))
        if emu:
            emulated.add(chain)
    chains = {t: [fn for *_, fn in sorted(c, key=lambda x: x[:2])] for t, c in chains.items()}
    order = sorted(chains, key=lambda t: (t not in emulated, -len(chains[t])))

    stop = threading.Event()

    def run(chain: list) -> None:
        for fn in chain:
            if stop.is_set():
                return
            fn()
    taken = threading.Lock()

    def pull(evaluate) -> None:
        while not stop.is_set():
            with taken:
                if not remote:
                    return
                fn = remote.pop(0)[2]
            fn(evaluate)
    if not remote and (workers <= 1 or len(chains) <= 1):
        for t in order:
            run(chains[t])
        return
    pullers = list(offload)[:len(remote)]
    pool = ThreadPoolExecutor(max_workers=max(1, workers) + len(pullers), thread_name_prefix="edgesdk-score")
    try:
        futures = [pool.submit(pull, ev) for ev in pullers] + [pool.submit(run, chains[t]) for t in order]
        for f in futures:
            f.result()
    except BaseException:
        stop.set()  # Ctrl-C or an error: no further score starts (a running one ends on its own)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
