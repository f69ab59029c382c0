"""Quiet by default: the backends' native log lines are captured unless asked for.

ONNX Runtime, LiteRT and ExecuTorch write INFO lines straight to file descriptors 1 and 2
(LiteRT's accelerator registry, ExecuTorch's cpuinfo probe, ONNX Runtime's warnings), which
drown a command's output and corrupt `--json` on stdout. The runtime wraps the calls that print
in `native_output()`, which hands what they wrote to the ``edgesdk.native`` logger at DEBUG
level instead, and mutes fd 2 at interpreter exit once LiteRT is loaded (its accelerator
registry logs from C++ destructors that run after the last line of Python).

``EDGESDK_LOG=debug`` (or ``edgesdk --verbose``, which sets it) lets everything through.
The SDK's own messages go through `logging` under the ``edgesdk`` logger; an app decides
where they go (the CLI prints WARNING and above, INFO with ``EDGESDK_LOG=info``).

Example::

    import logging
    logging.basicConfig(level=logging.DEBUG)   # the captured native lines, as DEBUG records
    from edgesdk import runtime
    runtime.load("out/mlp-litert-cpu")
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import sys
import tempfile
import threading

ENV = "EDGESDK_LOG"
LEVELS = ("debug", "info", "warning", "error")

logger = logging.getLogger("edgesdk")
logger.addHandler(logging.NullHandler())
native_logger = logging.getLogger("edgesdk.native")

_lock = threading.RLock()   # fd redirection is process-wide: one capture at a time
_depth = 0
_exit_muted = False


def level() -> str:
    """The level asked for by ``EDGESDK_LOG`` (``warning`` when unset or unknown)."""
    value = os.environ.get(ENV, "").strip().lower()
    return value if value in LEVELS else "warning"


def verbose() -> bool:
    """True when native backend logs should reach the terminal (``EDGESDK_LOG=debug``)."""
    return level() == "debug"


@contextlib.contextmanager
def native_output(what: str = "native", need_text: bool = False):
    """Capture what native code writes to fds 1 and 2 in this block (unless `verbose()`).

    The text goes to the ``edgesdk.native`` logger at DEBUG, one record per block, and into the
    yielded list's first item. ``need_text=True`` (a caller that explains failures with it)
    captures in verbose mode too, and then writes the text to stderr after the block.
    Nested blocks pass through to the outermost one; blocks in other threads wait.
    """
    global _depth
    captured = [""]
    loud = verbose()
    if loud and not need_text:
        yield captured
        return
    with _lock:
        if _depth:
            yield captured
            return
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        _depth += 1
        with tempfile.TemporaryFile() as f:
            saved = [os.dup(1), os.dup(2)]
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            try:
                yield captured
            finally:
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
                for fd in saved:
                    os.close(fd)
                _depth -= 1
                f.seek(0)
                captured[0] = f.read().decode("utf-8", "replace")
                if loud:
                    sys.stderr.write(captured[0])
                elif captured[0].strip():
                    native_logger.debug("%s:\n%s", what, captured[0].rstrip())


def mute_native_exit_logs() -> None:
    """Point fd 2 at /dev/null when the interpreter exits (unless `verbose()`).

    For backends that log from C++ static destructors, which run after Python has finished:
    nothing of ours can capture those lines later. Registered once, by the backend that needs
    it; Python's own stderr output after this handler (late atexit handlers registered before
    it, exceptions ignored during shutdown) is muted too.
    """
    global _exit_muted
    with _lock:
        if _exit_muted:
            return
        _exit_muted = True
    atexit.register(_mute_stderr)


def _mute_stderr() -> None:
    if verbose():
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
