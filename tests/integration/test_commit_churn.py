"""Churn the commit stage must outlive, on a real broker: a fence nobody rebalances, a DLQ record too big to send.

The library-answer cases (an OffsetFetch with a top-level error, a refused sequence number, a sender
that died) are in tests/unit/test_commit_churn.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from inference import commit
from inference.commit import AtLeastOnceCheckpoint, Checkpoint, TransactionalCheckpoint
from inference.config import Delivery, KafkaSettings
from inference.handler import Destinations, FrameHandler
from inference.metrics import Metrics
from inference.offsets import OffsetWentBackwards
from inference.publish import MAX_REQUEST_BYTES, TRUNCATED_HEADER, Outgoing, Publisher
from tests.stack import Endpoints
from tests.support import Topics, consume, eventually


def kafka_settings(stack: Endpoints, topics: Topics, delivery: Delivery) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=stack.bootstrap_servers, tasks_topic=topics.tasks, results_topic=topics.results,
        dlq_topic=topics.dlq, group_id=topics.group, delivery=delivery,
    )  # fmt: skip


def tasks_consumer(stack: Endpoints, topics: Topics) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=stack.bootstrap_servers, group_id=topics.group, enable_auto_commit=False,
        auto_offset_reset="earliest", isolation_level="read_committed",
    )  # fmt: skip


async def produce_to(stack: Endpoints, tp: TopicPartition, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(tp.topic, value, key=key, partition=tp.partition)
    finally:
        await producer.stop()


class Member(ConsumerRebalanceListener):  # type: ignore[misc]
    """The worker's rebalance handling and consume loop, answering each task with `answer:<task>`."""

    def __init__(self, consumer: AIOKafkaConsumer, checkpoint: Checkpoint, results_topic: str) -> None:
        self.consumer = consumer
        self.checkpoint = checkpoint
        self.results_topic = results_topic
        self.assignments = 0

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.checkpoint.commit(only=set(revoked))
        await self.checkpoint.forget(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        start = await self.checkpoint.assign(set(assigned))
        for tp in start.keys() & self.consumer.assignment():
            self.consumer.seek(tp, start[tp])
        self.assignments += 1

    async def run(self) -> None:
        while True:
            batch = await self.consumer.getmany(timeout_ms=100)
            for tp, records in batch.items():
                await self._answer(tp, records)
            await self.checkpoint.commit()

    async def _answer(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        offsets = self.checkpoint.partitions.get(tp)
        if offsets is None:
            return
        for record in records:
            with contextlib.suppress(OffsetWentBackwards):
                offsets.start(record.offset)
                answer = Outgoing(self.results_topic, record.key, b"answer:" + (record.value or b""))
                await self.checkpoint.deliver(offsets, record.offset, answer, {"offset": record.offset})


@pytest.fixture
async def member(stack: Endpoints, topics: Topics, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Member]:
    """One exactly_once member of the test's group, holding all six task partitions."""
    monkeypatch.setattr(commit, "FENCED_REJOIN_S", 1.0)
    consumer = tasks_consumer(stack, topics)
    checkpoint = TransactionalCheckpoint(
        consumer, Metrics(), kafka_settings(stack, topics, Delivery.EXACTLY_ONCE), interval_s=0.1
    )
    member = Member(consumer, checkpoint, topics.results)
    consumer.subscribe([topics.tasks], listener=member)
    await consumer.start()
    running = asyncio.create_task(member.run())

    async def holds_all() -> bool:
        return len(checkpoint.partitions) == 6

    try:
        await eventually(holds_all, 30, "the member to hold all six partitions")
        yield member
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await checkpoint.close()
        await consumer.stop()


async def test_a_partition_fenced_while_still_held_is_rebalanced_and_answered(
    stack: Endpoints, topics: Topics, member: Member
) -> None:
    """An outside producer with the partition's transactional id fences the member's producer, then is gone.

    No member joins or leaves, so no rebalance would come by itself: the member must ask for one,
    take the partition up afresh and answer its task.
    """
    tp = TopicPartition(topics.tasks, 0)
    assert isinstance(member.checkpoint, TransactionalCheckpoint)
    fencer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap_servers, transactional_id=member.checkpoint.transactional_id(tp)
    )
    await fencer.start()
    await fencer.stop()
    before = member.assignments
    await produce_to(stack, tp, [(b"video", b"after-fence")])
    results = await consume(
        stack.bootstrap_servers, topics.results, lambda rs: any(r.value == b"answer:after-fence" for r in rs), 30
    )
    assert [r.value for r in results] == [b"answer:after-fence"]
    assert member.assignments > before


async def test_an_unreadable_task_near_the_record_limit_goes_to_the_dlq_cut_to_fit_and_the_partition_goes_on(
    stack: Endpoints, topics: Topics
) -> None:
    tp = TopicPartition(topics.tasks, 0)
    big = b"\xff" * (MAX_REQUEST_BYTES - 200)  # fits as a task; with the DLQ's headers it would not
    await produce_to(stack, tp, [(b"big", big), (b"small", b"\xfe")])
    settings = kafka_settings(stack, topics, Delivery.AT_LEAST_ONCE)
    consumer = tasks_consumer(stack, topics)
    consumer.assign([tp])
    await consumer.start()
    publisher = Publisher(settings)
    await publisher.start()
    checkpoint = AtLeastOnceCheckpoint(consumer, Metrics(), publisher)
    handler = FrameHandler(None, None, None, Destinations(topics.results, topics.dlq), Metrics(), "test", bool)  # type: ignore[arg-type]
    try:
        await checkpoint.assign({tp})
        offsets = checkpoint.partitions[tp]
        records = []
        while len(records) < 2:
            records += (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])
        for record in records:
            describe: dict[str, object] = {"partition": tp.partition, "offset": record.offset}
            offsets.start(record.offset)
            async with asyncio.timeout(10):
                await checkpoint.deliver(offsets, record.offset, await handler.answer(record, describe), describe)
        assert await checkpoint.commit() == {tp: 2}
    finally:
        await checkpoint.close()
        await consumer.stop()
    dlq = await consume(stack.bootstrap_servers, topics.dlq, lambda rs: len(rs) >= 2, 30)
    cut = next(r for r in dlq if r.key == b"big")
    assert dict(cut.headers)[TRUNCATED_HEADER] == str(len(big)).encode()
    assert cut.value is not None and 0 < len(cut.value) < len(big) and big.startswith(cut.value)
    assert TRUNCATED_HEADER not in dict(next(r for r in dlq if r.key == b"small").headers)
