"""Progress display for the CLI: stage lines with elapsed time, a bar for long loops.

Everything goes to stderr so that `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import sys
import threading
import time


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._bar_open = False
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._lock = threading.Lock()  # stage lines come from several threads (the local executor's)

    def _elapsed(self) -> str:
        return f"[{time.perf_counter() - self.t0:6.1f}s]"

    def stage(self, text: str) -> None:
        if not self.enabled:
            return
        with self._lock:  # one write per line: print() writes the text and its newline apart
            self._close_bar()
            self.stream.write(f"{self._elapsed()} {text}\n")
            self.stream.flush()

    def bar(self, label: str):
        """Return a callback ``(done, total)`` drawing a bar (only on a terminal)."""
        def update(done: int, total: int) -> None:
            if not (self.enabled and self._tty):
                return
            width = 30
            filled = int(width * done / max(total, 1))
            self.stream.write(f"\r{self._elapsed()} {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
            self.stream.flush()
            self._bar_open = done < total
            if done >= total:
                self.stream.write("\n")
        return update

    def _close_bar(self) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
