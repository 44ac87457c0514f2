"""Backpressure: which partitions the consume loop pauses, read against the consumer's own pause state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from inference.service import apply_backpressure

PARTITIONS = {TopicPartition("tasks", p) for p in range(6)}
STUCK = TopicPartition("tasks", 2)


@pytest.fixture
async def consumer() -> AsyncIterator[AIOKafkaConsumer]:
    """A real consumer, never started: assignment and pause state are its own, no broker needed."""
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:9")
    consumer.assign(sorted(PARTITIONS))
    yield consumer
    await consumer.stop()


async def test_at_the_in_flight_bound_every_partition_is_paused(consumer: AIOKafkaConsumer) -> None:
    apply_backpressure(consumer, at_bound=True, backlogged=set())
    assert consumer.paused() == PARTITIONS


async def test_below_the_bound_only_a_backlogged_partition_stays_paused(consumer: AIOKafkaConsumer) -> None:
    apply_backpressure(consumer, at_bound=True, backlogged=set())
    apply_backpressure(consumer, at_bound=False, backlogged={STUCK})
    assert consumer.paused() == {STUCK}


async def test_partitions_paused_while_an_assignment_was_set_up_are_resumed(consumer: AIOKafkaConsumer) -> None:
    # What the consume loop does when records of a new assignment fill the bound before the
    # rebalance listener has returned: nothing in the worker's hands remembers that pause.
    consumer.pause(*PARTITIONS)
    apply_backpressure(consumer, at_bound=False, backlogged=set())
    assert consumer.paused() == set()


async def test_a_backlogged_partition_no_longer_assigned_is_left_alone(consumer: AIOKafkaConsumer) -> None:
    gone = TopicPartition("tasks", 9)
    apply_backpressure(consumer, at_bound=False, backlogged={gone, STUCK})
    assert consumer.paused() == {STUCK}
