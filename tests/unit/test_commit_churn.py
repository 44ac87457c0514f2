"""Coordinator and producer churn as aiokafka answers it, driven with fakes of those answers.

An OffsetFetch answer with a top-level error, a producer whose sequence numbers the broker
refuses, a sender that died, a fenced partition nobody rebalances, a set-up that hangs. The
fenced rejoin and the oversized DLQ record on a real broker are in tests/integration/test_commit_churn.py.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.consumer.group_coordinator import GroupCoordinator
from aiokafka.errors import (
    GroupLoadInProgressError,
    IllegalOperation,
    KafkaConnectionError,
    NotCoordinatorForGroupError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
)
from aiokafka.protocol.commit import OffsetFetchResponse_v3

from inference import commit, publish
from inference.commit import AssignmentIncomplete, AtLeastOnceCheckpoint
from inference.committed import committed_offsets
from inference.config import KafkaSettings
from inference.metrics import Metrics
from inference.publish import MAX_REQUEST_BYTES, TRUNCATED_HEADER, Outgoing, Publisher, fit_to_request, record_size
from inference.retry import Backoff
from tests.unit.test_checkpoint import GROUP, HANG, P0, P1, RESULTS, Broker, FakePublisher, answered, started
from tests.unit.test_checkpoint import transactional as transactional_checkpoint

LOAD_IN_PROGRESS = GroupLoadInProgressError.errno
NOT_COORDINATOR = NotCoordinatorForGroupError.errno


class FakeCoordinator:
    """aiokafka's group coordinator, its OffsetFetch answered from the broker fake, group errors scripted.

    aiokafka's own offset-reading code is kept, so `committed()` reads the answers as aiokafka does.
    """

    fetch_committed_offsets = GroupCoordinator.fetch_committed_offsets
    _do_fetch_commit_offsets = GroupCoordinator._do_fetch_commit_offsets

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.group_id = GROUP
        self._retry_backoff_ms = 0
        self.group_errors: collections.deque[int] = collections.deque()
        self.marked_dead = 0
        self.rejoins_requested = 0

    async def ensure_coordinator_known(self) -> None:
        """Known at once."""

    def coordinator_dead(self) -> None:
        self.marked_dead += 1

    def request_rejoin(self) -> None:
        self.rejoins_requested += 1

    async def _send_req(self, request: Any) -> OffsetFetchResponse_v3:
        if self.group_errors:
            return OffsetFetchResponse_v3(0, [], self.group_errors.popleft())
        topics = [
            (topic, [(p, self.broker.committed.get(TopicPartition(topic, p), -1), "", 0) for p in partitions])
            for topic, partitions in request._partitions
        ]
        return OffsetFetchResponse_v3(0, topics, 0)


class ChurnConsumer:
    """The consumer's committed() as aiokafka has it, over the fake coordinator."""

    committed = AIOKafkaConsumer.committed

    def __init__(self, broker: Broker, session_timeout_ms: int = 10_000) -> None:
        self.broker = broker
        self._group_id = GROUP
        self._coordinator = FakeCoordinator(broker)
        self._session_timeout_ms = session_timeout_ms
        self._heartbeat_interval_ms = session_timeout_ms // 3

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.broker.log_start.get(tp, 0) for tp in partitions}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.broker.committed.update(offsets)


@pytest.fixture(autouse=True)
def quick_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(commit, "KAFKA_BACKOFF", Backoff(base_s=0.0, cap_s=0.0))
    monkeypatch.setattr(commit, "STEP_TIMEOUT_S", 0.25)
    monkeypatch.setattr(publish, "KAFKA_BACKOFF", Backoff(base_s=0.0, cap_s=0.0))


@pytest.fixture
def broker() -> Broker:
    return Broker()


def transactional(broker: Broker, consumer: ChurnConsumer) -> commit.TransactionalCheckpoint:
    checkpoint = transactional_checkpoint(broker)
    checkpoint._consumer = consumer  # type: ignore[assignment]
    return checkpoint


# --------------------------------------------------------------------------- a coordinator error is no answer


async def test_a_top_level_coordinator_error_is_raised_where_aiokafka_answers_none_committed(broker: Broker) -> None:
    broker.committed[P0] = 42
    consumer = ChurnConsumer(broker)
    consumer._coordinator.group_errors.extend([LOAD_IN_PROGRESS, NOT_COORDINATOR])
    assert await consumer.committed(P0) is None  # aiokafka's reading of the load-in-progress answer
    with pytest.raises(NotCoordinatorForGroupError):
        await committed_offsets(consumer, [P0])  # type: ignore[arg-type]
    assert consumer._coordinator.marked_dead == 1  # looked up again before the next request
    assert await committed_offsets(consumer, [P0, P1]) == {P0: 42, P1: None}  # type: ignore[arg-type]


async def test_assign_starts_at_the_committed_offset_after_the_coordinator_loaded_not_at_the_log_start(
    broker: Broker,
) -> None:
    broker.committed[P0] = 42
    consumer = ChurnConsumer(broker)
    consumer._coordinator.group_errors.extend([LOAD_IN_PROGRESS, NOT_COORDINATOR, LOAD_IN_PROGRESS])
    checkpoint = AtLeastOnceCheckpoint(consumer, Metrics(), FakePublisher(broker), interval_s=0.1)  # type: ignore[arg-type]
    assert await checkpoint.assign({P0, P1}) == {P0: 42, P1: 0}
    assert not consumer._coordinator.group_errors


async def test_recovery_stays_uncertain_while_the_coordinator_loads_and_sends_nothing_twice(broker: Broker) -> None:
    """The transaction reached the broker but its answer was lost; the coordinator then loads the group.

    Read as "none committed", the outcome would count as aborted and the answers be sent again.
    """
    consumer = ChurnConsumer(broker)
    checkpoint = transactional(broker, consumer)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(3))
    await answered(checkpoint, P0, 0, 1, 2)
    broker.fail("commit_transaction", KafkaConnectionError("answer lost"))
    assert await checkpoint.commit() == {}
    broker.committed[P0] = 3  # it had committed
    broker.published.append((checkpoint.transactional_id(P0), [b"0", b"1", b"2"]))
    consumer._coordinator.group_errors.append(LOAD_IN_PROGRESS)
    assert await checkpoint.commit() == {}
    assert await checkpoint.commit() == {}  # the coordinator answers now: committed
    assert checkpoint.partitions[P0].committed == 3
    assert len(broker.published) == 1


# --------------------------------------------------------------------------- at_least_once's producer


class SequenceProducer:
    """The publisher's producer: the first one's sequence numbers are refused, later ones send."""

    made: ClassVar[list[SequenceProducer]] = []

    def __init__(self, **options: Any) -> None:
        self.refuses = not SequenceProducer.made
        self.sent: list[bytes | None] = []
        self.stopped = False
        SequenceProducer.made.append(self)

    async def start(self) -> None:
        """Starts at once."""

    async def stop(self) -> None:
        self.stopped = True

    async def send_and_wait(self, topic: str, value: bytes | None, key: bytes | None, headers: Any) -> None:
        if self.refuses:
            raise OutOfOrderSequenceNumber()
        self.sent.append(value)


def publisher(monkeypatch: pytest.MonkeyPatch) -> Publisher:
    SequenceProducer.made = []
    monkeypatch.setattr(publish, "AIOKafkaProducer", SequenceProducer)
    return Publisher(KafkaSettings(bootstrap_servers="fake:9092"))


async def test_a_refused_sequence_number_replaces_the_producer_and_sends_the_records_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sender = publisher(monkeypatch)
    records = [Outgoing(RESULTS, b"video", f"answer {i}".encode()) for i in range(3)]
    async with asyncio.timeout(5):
        await asyncio.gather(*(sender.send(record, {"offset": i}) for i, record in enumerate(records)))
    first, second = SequenceProducer.made
    assert first.stopped
    assert sorted(second.sent) == sorted(r.value for r in records)  # one new producer for all three
    assert sender.outage() is None


async def test_a_publisher_that_cannot_send_for_long_reports_an_outage(monkeypatch: pytest.MonkeyPatch) -> None:
    sender = publisher(monkeypatch)
    monkeypatch.setattr(SequenceProducer, "__init__", lambda self, **_: setattr(self, "refuses", True))
    monkeypatch.setattr(publish, "OUTAGE_AFTER_S", 0.0)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await sender.send(Outgoing(RESULTS, b"video", b"answer"), {"offset": 0})
    assert sender.outage() is not None
    checkpoint = AtLeastOnceCheckpoint(ChurnConsumer(Broker()), Metrics(), sender)  # type: ignore[arg-type]
    assert checkpoint.outage() == sender.outage()


# --------------------------------------------------------------------------- crash paths


async def test_a_sender_that_died_fails_the_transaction_instead_of_ending_the_commit_cycle(broker: Broker) -> None:
    checkpoint = transactional(broker, ChurnConsumer(broker))
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(2))
    await answered(checkpoint, P0, 0, 1)
    broker.fail("send", IllegalOperation("Can't send messages while not in transaction"))
    assert await checkpoint.commit() == {}
    assert broker.producers_of(P0)[0].stopped  # restarted by the next cycle, which settles the outcome
    assert await checkpoint.commit() == {P0: 2}
    assert [values for _, values in broker.published] == [[b"answer 0@0", b"answer 0@1"]]


def test_a_dlq_record_over_the_request_size_is_cut_to_fit_with_its_original_size_in_a_header() -> None:
    value = b"\xff" * MAX_REQUEST_BYTES
    record = Outgoing("tasks.dlq", b"key", value, [("error.code", b"unreadable_task"), ("error.message", b"x" * 1000)])
    fitted = fit_to_request(record)
    assert record_size(fitted.key, fitted.value, fitted.headers) <= MAX_REQUEST_BYTES
    assert fitted.value == value[: len(fitted.value or b"")]
    assert dict(fitted.headers)[TRUNCATED_HEADER] == str(len(value)).encode()
    assert fitted.headers[:2] == record.headers
    small = Outgoing("tasks.dlq", b"key", b"not json", record.headers)
    assert fit_to_request(small) is small


# --------------------------------------------------------------------------- fenced, and nobody rebalances


async def test_a_partition_fenced_while_still_held_asks_for_a_rebalance_after_a_grace(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = ChurnConsumer(broker)
    checkpoint = transactional(broker, consumer)
    await checkpoint.assign({P0, P1})
    started(checkpoint, P0, range(1))
    await answered(checkpoint, P0, 0)
    broker.fail("begin_transaction", ProducerFenced())
    assert await checkpoint.commit() == {}
    assert consumer._coordinator.rejoins_requested == 0  # within the grace a rebalance may still come
    monkeypatch.setattr(commit, "FENCED_REJOIN_S", 0.0)
    await checkpoint.commit()
    assert consumer._coordinator.rejoins_requested == 1
    await checkpoint.forget({P0, P1})
    await checkpoint.commit()
    assert consumer._coordinator.rejoins_requested == 1  # revoked: nothing fenced is held any more


# --------------------------------------------------------------------------- a bounded assignment


async def test_an_assignment_whose_set_up_hangs_gives_up_within_the_session_and_rejoins(broker: Broker) -> None:
    consumer = ChurnConsumer(broker, session_timeout_ms=1200)
    checkpoint = transactional(broker, consumer)
    broker.fail("start", *[HANG] * 50)
    with pytest.raises(AssignmentIncomplete):
        async with asyncio.timeout(5):
            await checkpoint.assign({P0})
    assert consumer._coordinator.rejoins_requested == 1
    assert checkpoint.partitions == {}
    assert all(not producer.running for producer in broker.producers)
