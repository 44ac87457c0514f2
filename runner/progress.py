"""Progress on stderr: one line redrawn in place on a terminal, plain lines every 10% otherwise.

Pipes and log collectors get a few whole lines instead of a stream of carriage returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

BAR_WIDTH = 30
REDRAW_INTERVAL_S = 0.1
PLAIN_STEP_PERCENT = 10


class Progress:
    """Progress of one phase with a known (or estimated) total; `stream=None` is silent."""

    def __init__(self, label: str, total: int, stream: TextIO | None) -> None:
        self._label = label
        self._total = max(total, 1)
        self._stream = stream
        self._tty = stream is not None and stream.isatty()
        self._done = 0
        self._last_draw = 0.0
        self._last_step = -1

    def update(self, done: int) -> None:
        self._done = done
        if self._stream is None:
            return
        if self._tty:
            now = time.monotonic()
            if now - self._last_draw >= REDRAW_INTERVAL_S or done >= self._total:
                self._last_draw = now
                self._stream.write("\r" + self.line())
                self._stream.flush()
            return
        step = self._percent() // PLAIN_STEP_PERCENT
        if step > self._last_step:
            self._last_step = step
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def advance(self, count: int = 1) -> None:
        self.update(self._done + count)

    def close(self) -> None:
        """End the phase: the final state stays on screen, and the next output starts on a new line."""
        if self._stream is None:
            return
        if self._tty:
            self._stream.write("\r" + self.line() + "\n")
        elif self._last_step < self._percent() // PLAIN_STEP_PERCENT:
            self._stream.write(self.line() + "\n")
        self._stream.flush()

    def line(self) -> str:
        filled = BAR_WIDTH * min(self._done, self._total) // self._total
        bar = "#" * filled + "-" * (BAR_WIDTH - filled)
        return f"{self._label} [{bar}] {self._done}/{self._total} {self._percent():3d}%"

    def _percent(self) -> int:
        return min(100, 100 * self._done // self._total)


ProgressFactory = Callable[[str, int], Progress]


def on_stderr(label: str, total: int) -> Progress:
    return Progress(label, total, sys.stderr)


def silent(label: str, total: int) -> Progress:
    return Progress(label, total, None)
