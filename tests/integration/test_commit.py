"""The commit stage against a real broker: where a newly assigned partition is taken up."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from inference.commit import TransactionalCheckpoint
from inference.config import Delivery, KafkaSettings
from inference.metrics import Metrics
from inference.publish import Outgoing
from scripts import devstack
from tests.stack import Endpoints
from tests.support import Topics, produce, read_to_end


def kafka_settings(stack: Endpoints, topics: Topics) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=stack.bootstrap_servers, tasks_topic=topics.tasks, results_topic=topics.results,
        dlq_topic=topics.dlq, group_id=topics.group, delivery=Delivery.EXACTLY_ONCE,
    )  # fmt: skip


@pytest.fixture
async def consumer(stack: Endpoints, topics: Topics) -> AsyncIterator[AIOKafkaConsumer]:
    """A member of the test's group (no subscription: the checkpoint is driven by hand)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, group_id=topics.group)
    await consumer.start()
    yield consumer
    await consumer.stop()


async def test_a_partition_is_taken_up_where_the_previous_owner_left_it_after_the_fence(
    stack: Endpoints, topics: Topics, consumer: AIOKafkaConsumer
) -> None:
    """The previous owner commits its last transaction while the new owner sets up.

    Whichever wins (its commit, or the new owner's fence, which aborts it), the new owner
    must start from the offset that ends up committed: from before that commit it would
    answer 4 tasks again.
    """
    taken, untouched = TopicPartition(topics.tasks, 0), TopicPartition(topics.tasks, 1)
    await produce(stack.bootstrap_servers, topics.tasks, [(b"k", b"task")] * 3)
    checkpoint = TransactionalCheckpoint(consumer, Metrics(), kafka_settings(stack, topics), interval_s=0.1)
    previous = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap_servers, transactional_id=checkpoint.transactional_id(taken)
    )
    await previous.start()
    try:
        await commit_offset(previous, taken, 5, topics)
        await previous.begin_transaction()
        await previous.send_and_wait(topics.results, b"answer", key=b"previous-owner")
        await previous.send_offsets_to_transaction({taken: 9}, topics.group)
        start, last_commit = await asyncio.gather(
            checkpoint.assign({taken, untouched}), previous.commit_transaction(), return_exceptions=True
        )
        assert isinstance(start, dict)
        assert start[taken] == (5 if isinstance(last_commit, BaseException) else 9)
        assert start[taken] == await consumer.committed(taken)
        assert start[untouched] == 0  # nothing committed there: its log start
        assert checkpoint.partitions[taken].position == start[taken]
    finally:
        await checkpoint.close()
        with contextlib.suppress(KafkaError):
            await previous.stop()


async def test_a_zombie_whose_partition_was_taken_over_commits_nothing_more(
    stack: Endpoints, topics: Topics, consumer: AIOKafkaConsumer
) -> None:
    """A transaction times out while the broker is frozen; before it is retried, another owner commits.

    The retry restarts the producer, and that fences the other owner. The committed offset
    then shows that this replica is a zombie: it fences itself rather than publish answers the
    other owner already has (the committed offset is 7, these answers are 0-9).
    """
    if stack.state_dir is None:
        pytest.skip(f"freezing the broker needs the local-process stack, not {stack.origin}")
    broker = devstack.read_state(stack.state_dir)
    assert broker is not None
    tp = TopicPartition(topics.tasks, 0)
    checkpoint = TransactionalCheckpoint(consumer, Metrics(), kafka_settings(stack, topics), interval_s=0.1)
    try:
        await checkpoint.assign({tp})
        offsets = checkpoint.partitions[tp]
        answer = Outgoing(topics.results, b"zombie", b"answer")
        for offset in range(10):
            offsets.start(offset)
        for offset in range(3):
            offsets.finish(offset, answer)
        os.killpg(broker.kafka_pid, signal.SIGSTOP)
        try:
            assert await checkpoint.commit() == {}  # gave up after STEP_TIMEOUT_S, outcome unknown
        finally:
            os.killpg(broker.kafka_pid, signal.SIGCONT)
        other_owner = AIOKafkaProducer(
            bootstrap_servers=stack.bootstrap_servers, transactional_id=checkpoint.transactional_id(tp)
        )
        await other_owner.start()
        await commit_offset(other_owner, tp, 7, topics)
        await other_owner.stop()
        for offset in range(3, 10):
            offsets.finish(offset, answer)
        assert await checkpoint.commit() == {}
        assert await checkpoint.commit() == {}
        assert await consumer.committed(tp) == 7
        assert await read_to_end(stack.bootstrap_servers, topics.results) == []
    finally:
        await checkpoint.close()


async def commit_offset(producer: AIOKafkaProducer, tp: TopicPartition, offset: int, topics: Topics) -> None:
    await producer.begin_transaction()
    await producer.send_offsets_to_transaction({tp: offset}, topics.group)
    await producer.commit_transaction()
