"""Per-partition tracker of finished offsets -> the highest contiguous commit point.

Frames of one partition finish out of order. Kafka's committed offset means "every
record below it is done", so the commit point is the first offset that is not yet
finished (or the next one to consume when all are). Each finished offset may carry
a payload (exactly-once mode keeps the result there until its transaction).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

P = TypeVar("P")


class OffsetError(RuntimeError):
    """An impossible transition: the caller has a bug."""


class OffsetWentBackwards(OffsetError):
    pass


class UnknownOffset(OffsetError):
    pass


class PartitionOffsets(Generic[P]):
    """Offsets consumed from one partition since it was assigned, until they are taken as committed."""

    def __init__(self, committed: int | None = None) -> None:
        """`committed`: where the partition was taken over; a record below it is refused as backwards."""
        self._pending: dict[int, bool] = {}
        self._payloads: dict[int, P] = {}
        self._next_to_consume: int | None = committed
        self._committed: int | None = committed

    def __len__(self) -> int:
        """Offsets started but not yet finished."""
        return sum(1 for done in self._pending.values() if not done)

    @property
    def tracked(self) -> int:
        """Offsets started and not yet taken as committed, finished or not."""
        return len(self._pending)

    @property
    def committed(self) -> int | None:
        """The commit point last taken, or where tracking began."""
        return self._committed

    @property
    def position(self) -> int | None:
        """The next offset to consume, once anything was consumed."""
        return self._next_to_consume

    def start(self, offset: int) -> None:
        if self._next_to_consume is not None and offset < self._next_to_consume:
            raise OffsetWentBackwards(f"offset {offset} after {self._next_to_consume - 1}")
        if self._committed is None:
            self._committed = offset
        self._pending[offset] = False
        self._next_to_consume = offset + 1

    def finish(self, offset: int, payload: P | None = None) -> None:
        if self._pending.get(offset) is not False:
            raise UnknownOffset(f"offset {offset} was not started or is already finished")
        self._pending[offset] = True
        if payload is not None:
            self._payloads[offset] = payload

    def commit_point(self) -> int | None:
        """The first unfinished offset, or the next one to consume when all are finished.

        Offsets may skip (compaction, transaction markers); a skipped offset holds no
        record, so only the consumed ones matter.
        """
        if self._next_to_consume is None:
            return None
        unfinished = [o for o, done in self._pending.items() if not done]
        return min(unfinished) if unfinished else self._next_to_consume

    def peek(self, point: int) -> list[P]:
        """The payloads below `point` in offset order, kept until `take`."""
        return [self._payloads[o] for o in sorted(self._payloads) if o < point]

    def take(self, point: int) -> list[P]:
        """Forget everything below `point` (now committed) and return its payloads in offset order."""
        if self._committed is not None and point < self._committed:
            raise OffsetWentBackwards(f"commit point {point} is below {self._committed}")
        below = sorted(o for o in self._pending if o < point)
        if any(not self._pending[o] for o in below):
            raise OffsetError(f"commit point {point} passes an unfinished offset")
        payloads = [self._payloads.pop(o) for o in below if o in self._payloads]
        for offset in below:
            del self._pending[offset]
        self._committed = point
        return payloads

    def ready(self) -> int | None:
        """The commit point when it is ahead of what was last taken, else None."""
        point = self.commit_point()
        if point is None or self._committed is None or point <= self._committed:
            return None
        return point

    def unfinished(self) -> Iterator[int]:
        return (o for o, done in sorted(self._pending.items()) if not done)
