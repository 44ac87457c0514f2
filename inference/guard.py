"""The DLQ guard: a replica stops taking work when most recent tasks went to the DLQ.

A burst of unreadable tasks is a producer's bug, not bad frames: answering it would move a
whole topic into the DLQ and commit past it. When more than `WORKER_DLQ_MAX_RATIO` of the last
`WORKER_DLQ_WINDOW` tasks were dead-lettered, the replica pauses every partition and reports
not ready, naming why; what it already answered is committed, the rest waits in Kafka for a
restart once the producer is fixed (or the bad records are skipped, or the ratio raised).
"""

from __future__ import annotations

from collections import deque


class DlqGuard:
    def __init__(self, max_ratio: float, window: int) -> None:
        self._max_ratio = max_ratio
        self._window = window
        self._recent: deque[bool] = deque(maxlen=window)
        self._dead = 0
        self.tripped: str | None = None

    def answered(self, dead_lettered: bool) -> bool:
        """Count one answered task; True when this one trips the guard."""
        if len(self._recent) == self._window and self._recent[0]:
            self._dead -= 1
        self._recent.append(dead_lettered)
        self._dead += dead_lettered
        # A full window only: the first tasks of a run are too few to call it a producer's bug.
        if self.tripped is None and len(self._recent) == self._window and self._dead > self._max_ratio * self._window:
            self.tripped = (
                f"{self._dead} of the last {self._window} tasks went to the DLQ, over WORKER_DLQ_MAX_RATIO="
                f"{self._max_ratio:g}: a producer writes tasks the worker cannot read"
            )
            return True
        return False
