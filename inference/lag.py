"""How old the oldest unanswered task of a partition is: the lag in seconds that autoscaling wants.

Lag in records says little when one model's frame costs ten times another's. The age of the
oldest task taken and not yet answered is read from its record's timestamp. A partition with
records waiting in Kafka and none taken (paused for priority or at the in-flight bound) has no
record in hand to read it from: its age then counts from when it was first seen waiting, which
is a lower bound.
"""

from __future__ import annotations


class TaskAge:
    """One partition's tasks taken and not yet answered, by offset, with their timestamps (ms)."""

    def __init__(self) -> None:
        self._open: dict[int, float] = {}
        self._waiting_since: float | None = None

    def taken(self, offset: int, timestamp_ms: float) -> None:
        self._open[offset] = timestamp_ms

    def answered(self, offset: int) -> None:
        self._open.pop(offset, None)

    def seconds(self, now_ms: float, records_waiting: int) -> float:
        """Age of the oldest unanswered task at `now_ms`; 0 when nothing is taken and nothing waits."""
        if self._open:
            self._waiting_since = None
            return max(0.0, (now_ms - min(self._open.values())) / 1000)
        if records_waiting <= 0:
            self._waiting_since = None
            return 0.0
        if self._waiting_since is None:
            self._waiting_since = now_ms
        return (now_ms - self._waiting_since) / 1000
