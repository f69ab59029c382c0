"""A conversion worker process of the local executor: ``python -m edgesdk.pipeline.worker IN OUT``.

It reads requests from the pipe ``IN`` and answers on ``OUT`` (`multiprocessing.connection`
framing; both ends are this machine's own processes). Entries arrive once each (cloudpickle,
so a model class defined in the user's script travels by value) and jobs name them; a job runs
`edgesdk.pipeline.execute.convert` exactly as the serial executor does and answers with its row.
Requests: ``("init", sys_path)``, ``("entry", id, blob)`` (`dump_entry`), ``("job", id, entry_id, blob)``,
``("score", id, blob)`` (`dump_entry` of a quality function, an artifact path and a thread count:
the score of an artifact on an emulated device, `LocalExecutor.evaluator`; answered ``("done", id,
("value", float))``, or ``("unloadable", why)`` when it cannot be loaded here), ``("train", id, blob)``
(`dump_entry` of a ``distill`` entry, the config, the quick flag and the parent's torch thread count:
the family trains here, with that count, into the shared training cache, `LocalExecutor.train_ahead`;
answered ``("done", id, ("value", {"trained": [names], "pid": pid}))``), ``("forget",)``, ``("exit",)``.
Answers: ``("ready", pid)``, ``("say", job_id, text)``, ``("done", job_id, blob)``, ``("error", job_id, blob)``.

The worker runs at a lower priority than its parent (which trains the next family meanwhile),
ignores SIGINT (the parent cancels it) and exits when its parent closes the pipe.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection


def dumps_error(err: BaseException) -> bytes:
    """The exception itself when it pickles, else a RuntimeError carrying its type and message."""
    import cloudpickle
    try:
        blob = cloudpickle.dumps(err)
        cloudpickle.loads(blob)
        return blob
    except Exception:
        return cloudpickle.dumps(RuntimeError(f"{type(err).__name__}: {err}"))


# Imported before the worker says it is ready (while the parent still trains): what the first
# conversion to each common target would otherwise load.
PRELOAD = ("torch.export", "torch.onnx", "onnxscript", "onnxruntime", "onnxruntime.quantization", "executorch.exir",
           "litert_torch")


def dump_entry(entry) -> bytes:
    """An entry for another process: the user's files it needs (imported there under the same
    names, so its classes travel by reference) and the entry itself (cloudpickle)."""
    import cloudpickle

    from edgesdk.loaders import user_module_sources
    return cloudpickle.dumps((list(sys.path), user_module_sources(), cloudpickle.dumps(entry)))


def load_entry(blob: bytes):
    import cloudpickle

    from edgesdk.loaders import import_user_modules
    path, mods, entry = cloudpickle.loads(blob)
    for p in reversed(path):
        if p not in sys.path and os.path.isdir(p):
            sys.path.insert(0, p)
    import_user_modules(mods)
    return cloudpickle.loads(entry)


def serve(inp: Connection, out: Connection) -> None:
    import importlib

    import cloudpickle

    from edgesdk.pipeline import execute
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # an optional backend missing here: its conversions will say so
            pass
    entries: dict = {}
    out.send(("ready", os.getpid()))
    while True:
        try:
            msg = inp.recv()
        except (EOFError, OSError):
            return
        kind = msg[0]
        if kind == "init":
            for p in reversed(msg[1]):
                if p not in sys.path:
                    sys.path.insert(0, p)
        elif kind == "entry":
            entries[msg[1]] = load_entry(msg[2])
        elif kind == "forget":
            entries.clear()
        elif kind == "exit":
            return
        elif kind == "score":
            try:
                quality, path, threads = load_entry(msg[2])
            except BaseException as err:  # noqa: BLE001  (the parent scores it itself)
                out.send(("done", msg[1], cloudpickle.dumps(("unloadable", f"{type(err).__name__}: {err}"))))
                continue
            try:
                out.send(("done", msg[1], cloudpickle.dumps(("value", execute.evaluate_here(quality, path, threads)))))
            except BaseException as err:  # noqa: BLE001  (the quality function's own error: the row records it)
                out.send(("error", msg[1], dumps_error(err)))
        elif kind == "train":
            train_id = msg[1]

            def say(text: str, train_id=train_id) -> None:
                out.send(("say", train_id, text))
            try:
                spec, cfg, quick, threads = load_entry(msg[2])
                from edgesdk.families import torch_threads
                from edgesdk.pipeline.entries import train_ahead
                with torch_threads(threads):  # the parent's count, as if it trained there
                    trained = train_ahead(spec, cfg, quick, say)
                out.send(("done", train_id, cloudpickle.dumps(("value", {"trained": trained, "pid": os.getpid()}))))
            except BaseException as err:  # noqa: BLE001  (the parent trains the family itself)
                out.send(("error", train_id, dumps_error(err)))
        elif kind == "job":
            job_id, entry_id = msg[1], msg[2]
            job, cfg, art_dir, key, exports = cloudpickle.loads(msg[3])

            def say(text: str, job_id=job_id) -> None:
                out.send(("say", job_id, text))
            try:
                row, art = execute.convert(entries[entry_id], job, cfg, art_dir, say, key, exports)
                out.send(("done", job_id, cloudpickle.dumps((row, str(art.path) if art is not None else None))))
            except BaseException as err:  # noqa: BLE001  (handed to the parent, which decides)
                out.send(("error", job_id, dumps_error(err)))


# Conversions fill the cores the parent's training leaves: the training of the next family is
# the run's critical path, its students' conversions cannot start before it ends. At nice 5 the
# encdec student trained in 218 s beside two converting workers against 120 s alone (fresh demos,
# RESULTS.md "Executors"); nice 19 leaves the trainer nearly its whole core.
NICE = 19


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        os.nice(NICE)
    except OSError:
        pass
    serve(Connection(int(argv[0]), writable=False), Connection(int(argv[1]), readable=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
