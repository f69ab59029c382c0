"""Capture what exporters print (Python and native code) so the CLI stays readable.

Exporters (torch.onnx, litert-torch, ExecuTorch) print progress banners and native log
lines straight to file descriptors 1 and 2. We redirect both descriptors into a log file
for the duration of an export; on failure the tail of that log goes into the error.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


class CapturedLog:
    def __init__(self):
        self.text = ""

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.text.strip().splitlines()[-lines:])


@contextlib.contextmanager
def captured_output(enabled: bool = True):
    log = CapturedLog()
    if not enabled:
        yield log
        return
    sys.stdout.flush()
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as f:
        saved = [os.dup(1), os.dup(2)]
        py_saved = (sys.stdout, sys.stderr)
        text = open(f.fileno(), "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
        try:
            os.dup2(f.fileno(), 1)
            os.dup2(f.fileno(), 2)
            sys.stdout = sys.stderr = text  # Python-level writers (when sys.stdout is not fd 1)
            yield log
        finally:
            text.flush()
            sys.stdout, sys.stderr = py_saved
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            f.seek(0)
            log.text = f.read().decode("utf-8", "replace")
