"""Commit stage: the checkpoint that turns finished frames into committed offsets.

A frame counts as finished only after its result (or DLQ record) was acknowledged by
the broker, so committing the contiguous finished prefix never skips an unanswered
task: a crash re-delivers, it never loses.
"""

from __future__ import annotations

import logging
import time

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from inference.logs import log_event
from inference.offsets import PartitionOffsets

logger = logging.getLogger(__name__)


class Checkpoint:
    """Per-partition offset trackers of the current assignment and the commit cycle over them."""

    def __init__(self, consumer: AIOKafkaConsumer, interval_s: float = 1.0) -> None:
        self._consumer = consumer
        self._interval_s = interval_s
        self._last_commit = time.monotonic()
        self.partitions: dict[TopicPartition, PartitionOffsets[None]] = {}
        self.commits = 0

    def assign(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions[tp] = PartitionOffsets()

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self.partitions.pop(tp, None)

    def due(self) -> bool:
        return time.monotonic() - self._last_commit >= self._interval_s

    async def commit(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Commit what is contiguous and finished.

        Steps:
        1. for every tracked partition (or those in `only`), find the commit point: the first
           offset whose result is not yet acknowledged;
        2. commit those points to the group coordinator in one request;
        3. only when that succeeded, forget the offsets below them.
        A failed commit (rebalance in progress, coordinator moving) leaves the trackers as
        they were: the next cycle or the next owner of the partition re-commits or
        re-delivers.
        """
        self._last_commit = time.monotonic()
        points = {
            tp: point
            for tp, offsets in self.partitions.items()
            if (only is None or tp in only) and (point := offsets.ready()) is not None
        }
        if not points:
            return {}
        try:
            await self._consumer.commit(points)
        except KafkaError as exc:
            log_event(logger, logging.WARNING, "commit_failed", error=repr(exc), partitions=_names(points))
            return {}
        for tp, point in points.items():
            self.partitions[tp].take(point)
        self.commits += 1
        return points


def _names(points: dict[TopicPartition, int]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]@{point}" for tp, point in points.items()]
