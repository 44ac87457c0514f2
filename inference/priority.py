"""Priorities: three task topics consumed by one group, and the share of slots lower levels may hold.

On Kafka a partition is a FIFO, so a priority is a topic: `<tasks>.high`, `<tasks>`, `<tasks>.low`.
While a higher level has tasks waiting in Kafka, the levels below it may hold at most
`WORKER_LOW_PRIORITY_SHARE` of the in-flight slots: their partitions are paused whenever taking
more could pass that share, so they slow down but never stop. Frames of every level then meet in
the detector pool, whose queue serves the higher level first (pool.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from enum import IntEnum

from aiokafka import TopicPartition


class Priority(IntEnum):
    """Lower value, served first."""

    HIGH = 0
    NORMAL = 1
    LOW = 2


SUFFIX = {Priority.HIGH: ".high", Priority.NORMAL: "", Priority.LOW: ".low"}
NAMES = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}


def topic_for(tasks_topic: str, priority: Priority) -> str:
    return tasks_topic + SUFFIX[priority]


def priority_topics(tasks_topic: str) -> dict[str, Priority]:
    """Each task topic of the three levels, with its level."""
    return {topic_for(tasks_topic, level): level for level in Priority}


def low_share_slots(limit: int, share: float) -> int:
    """In-flight slots the lower levels may hold while a higher one waits: at least one, so none starves."""
    return max(1, math.floor(limit * share))


def partitions_to_hold(
    assigned: Iterable[TopicPartition],
    levels: Mapping[str, Priority],
    waiting: Mapping[Priority, bool],
    in_flight: Mapping[Priority, int],
    free_slots: int,
    share_slots: int,
) -> set[TopicPartition]:
    """The partitions to pause so that the levels below the highest waiting one stay within their share.

    A poll may hand out as many records as there are free slots, so a lower level is held once its
    frames in flight plus those free slots could pass the share. At saturation few slots are free,
    and the lower levels go on taking work within the share.
    """
    waiting_levels = [level for level in Priority if waiting.get(level, False)]
    if not waiting_levels:
        return set()
    top = min(waiting_levels)
    below = sum(count for level, count in in_flight.items() if level > top)
    if below + free_slots <= share_slots:
        return set()
    return {tp for tp in assigned if levels.get(tp.topic, Priority.NORMAL) > top}
