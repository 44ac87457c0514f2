"""The group's committed offsets, read so that "cannot tell" is never taken for "none committed".

aiokafka (0.14) sends OffsetFetch v2+ but never reads the answer's top-level error code: a
group coordinator that is loading the group's offsets, has moved, or is not available answers
with that code and no partitions, and `consumer.committed()` returns None, as for a partition
never committed. Taken at its word, a worker would start a partition from its log start (every
retained task answered again) or read a committed transaction as aborted. Checking the code
needs the answer itself, so the request is sent here, through the consumer's own group
coordinator connection; both error levels are raised as aiokafka's error classes.
"""

from __future__ import annotations

import collections
from collections.abc import Collection
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.protocol.commit import OffsetFetchRequest

# Answers that mean the coordinator is elsewhere: the next request must look it up again.
COORDINATOR_GONE: tuple[type[kafka_errors.KafkaError], ...] = (
    kafka_errors.NotCoordinatorForGroupError,
    kafka_errors.GroupCoordinatorNotAvailableError,
)


class OffsetsUnanswered(kafka_errors.KafkaError):  # type: ignore[misc]
    """The coordinator's answer left out a partition asked for: its offset is unknown, not absent."""

    retriable = True


async def committed_offsets(
    consumer: AIOKafkaConsumer, partitions: Collection[TopicPartition]
) -> dict[TopicPartition, int | None]:
    """The group's committed offset of each partition; None only where the coordinator said none is.

    One OffsetFetch round trip (after a coordinator look-up when none is known, which aiokafka
    retries without end: bound the call). Errors are aiokafka's: GroupLoadInProgressError,
    NotCoordinatorForGroupError and GroupCoordinatorNotAvailableError are retriable (the
    coordinator is marked dead first where it moved), GroupAuthorizationFailedError is a denial.
    """
    if not partitions:
        return {}
    coordinator = consumer._coordinator
    await coordinator.ensure_coordinator_known()
    by_topic: dict[str, list[int]] = collections.defaultdict(list)
    for tp in partitions:
        by_topic[tp.topic].append(tp.partition)
    answer = await coordinator._send_req(OffsetFetchRequest(coordinator.group_id, list(by_topic.items())))
    # v0 and v1 answers have no top-level code: their group errors come per partition.
    _raise_for(getattr(answer, "error_code", 0), coordinator)
    offsets: dict[TopicPartition, int | None] = {}
    for topic, answered in answer.topics:
        for partition, offset, _metadata, error_code in answered:
            _raise_for(error_code, coordinator)
            offsets[TopicPartition(topic, partition)] = offset if offset >= 0 else None
    missing = [tp for tp in partitions if tp not in offsets]
    if missing:
        raise OffsetsUnanswered(f"no committed offset in the answer for {sorted(missing)}")
    return {tp: offsets[tp] for tp in partitions}


def _raise_for(error_code: int, coordinator: Any) -> None:
    if error_code == 0:
        return
    error = kafka_errors.for_code(error_code)
    if issubclass(error, COORDINATOR_GONE):
        coordinator.coordinator_dead()
    if error is kafka_errors.GroupAuthorizationFailedError:
        raise error(coordinator.group_id)
    raise error()
