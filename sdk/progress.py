"""Progress display for the CLI: stage lines with elapsed time, a bar for long loops.

Everything goes to stderr so that `--json` output on stdout stays machine-readable.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.t0 = time.perf_counter()
        self._bar_open = False
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def _elapsed(self) -> str:
        return f"[{time.perf_counter() - self.t0:6.1f}s]"

    def stage(self, text: str) -> None:
        if not self.enabled:
            return
        self._close_bar()
        print(f"{self._elapsed()} {text}", file=self.stream, flush=True)

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
