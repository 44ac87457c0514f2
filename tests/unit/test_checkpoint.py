"""The commit cycle's transitions in both delivery modes, driven with fakes of the consumer and producers.

The real-broker side (fencing across processes, a frozen broker) is in tests/integration/test_commit.py.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    KafkaError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RebalanceInProgressError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from inference import commit
from inference.commit import AtLeastOnceCheckpoint, Checkpoint, TransactionalCheckpoint
from inference.config import Delivery, KafkaSettings
from inference.metrics import Metrics
from inference.publish import Outgoing
from inference.retry import Backoff

TOPIC, GROUP, RESULTS = "tasks", "group", "results"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
# A scripted failure that never answers: the step runs into STEP_TIMEOUT_S.
HANG = object()


class Broker:
    """What the fakes share: the group's committed offsets, the transactions committed, scripted failures."""

    def __init__(self) -> None:
        self.committed: dict[TopicPartition, int] = {}
        self.log_start: dict[TopicPartition, int] = {}
        self.group_commits: list[dict[TopicPartition, int]] = []
        # (transactional id, values) of each committed transaction, in order.
        self.published: list[tuple[str, list[bytes | None]]] = []
        self.producers: list[FakeProducer] = []
        self.steps: list[str] = []
        self._failures: dict[str, collections.deque[object]] = collections.defaultdict(collections.deque)

    def fail(self, step: str, *outcomes: object) -> None:
        """The next calls of `step` fail with these, in order (None: that call passes)."""
        self._failures[step].extend(outcomes)

    async def step(self, name: str) -> None:
        self.steps.append(name)
        outcome = self._failures[name].popleft() if self._failures[name] else None
        if outcome is HANG:
            await asyncio.Event().wait()
        if isinstance(outcome, BaseException):
            raise outcome

    def producers_of(self, tp: TopicPartition) -> list[FakeProducer]:
        return [p for p in self.producers if p.transactional_id == f"{GROUP}-{tp.topic}-{tp.partition}"]


class FakeConsumer:
    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.log_start_asked: list[TopicPartition] = []

    async def committed(self, tp: TopicPartition) -> int | None:
        await self.broker.step("committed")
        return self.broker.committed.get(tp)

    async def beginning_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        await self.broker.step("beginning_offsets")
        self.log_start_asked += partitions
        return {tp: self.broker.log_start.get(tp, 0) for tp in partitions}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        await self.broker.step("commit")
        self.broker.group_commits.append(dict(offsets))
        self.broker.committed.update(offsets)


class FakeSender:
    def __init__(self) -> None:
        self.sender_task: asyncio.Task[None] | None = None


class FakeClient:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


class FakeProducer:
    """A transactional producer: records become visible, with their offsets, only on commit_transaction."""

    def __init__(self, broker: Broker, **options: Any) -> None:
        self.broker = broker
        self.transactional_id: str = options["transactional_id"]
        self.options = options
        self.running = False
        self.stopped = False
        self.transactions_begun = 0
        self._values: list[bytes | None] = []
        self._offsets: dict[TopicPartition, int] = {}
        self._sender = FakeSender()
        self.client = FakeClient()
        broker.producers.append(self)

    async def start(self) -> None:
        await self.broker.step("start")
        self.running = True

    async def stop(self) -> None:
        await self.broker.step("stop")
        self.running, self.stopped = False, True

    async def begin_transaction(self) -> None:
        await self.broker.step("begin_transaction")
        self.transactions_begun += 1
        self._values, self._offsets = [], {}

    async def send(
        self, topic: str, value: bytes | None, key: bytes | None = None, headers: Any = None
    ) -> asyncio.Future[None]:
        assert topic == RESULTS
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        try:
            await self.broker.step("send")
        except KafkaError as exc:
            delivery.set_exception(exc)
        else:
            self._values.append(value)
            delivery.set_result(None)
        return delivery

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group_id: str) -> None:
        await self.broker.step("send_offsets_to_transaction")
        assert group_id == GROUP
        self._offsets = dict(offsets)

    async def commit_transaction(self) -> None:
        await self.broker.step("commit_transaction")
        self.broker.committed.update(self._offsets)
        self.broker.published.append((self.transactional_id, self._values))


class FakePublisher:
    """The at_least_once publisher: `send` returns once the broker acknowledged the record."""

    def __init__(self, broker: Broker) -> None:
        self.broker = broker
        self.sent: list[bytes | None] = []
        self.stopped = False

    async def send(self, record: Outgoing, describe: dict[str, object]) -> None:
        await self.broker.step("publish")
        self.sent.append(record.value)

    async def stop(self) -> None:
        self.stopped = True


@pytest.fixture(autouse=True)
def quick_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    """No pause between retries, and a step that hangs gives up at once."""
    monkeypatch.setattr(commit, "KAFKA_BACKOFF", Backoff(base_s=0.0, cap_s=0.0))
    monkeypatch.setattr(commit, "STEP_TIMEOUT_S", 0.25)
    monkeypatch.setattr(commit, "committed_offsets", read_committed)


async def read_committed(consumer: FakeConsumer, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
    """The checkpoint's committed read, answered by the fake consumer one partition at a time."""
    return {tp: await consumer.committed(tp) for tp in partitions}


@pytest.fixture
def broker() -> Broker:
    return Broker()


def at_least_once(broker: Broker) -> tuple[AtLeastOnceCheckpoint, FakePublisher]:
    publisher = FakePublisher(broker)
    checkpoint = AtLeastOnceCheckpoint(FakeConsumer(broker), Metrics(), publisher, interval_s=0.1)
    return checkpoint, publisher


def transactional(broker: Broker) -> TransactionalCheckpoint:
    settings = KafkaSettings(
        bootstrap_servers="fake:9092", tasks_topic=TOPIC, results_topic=RESULTS, group_id=GROUP,
        delivery=Delivery.EXACTLY_ONCE,
    )  # fmt: skip
    return TransactionalCheckpoint(
        FakeConsumer(broker),
        Metrics(),
        settings,
        interval_s=0.1,
        producer_factory=lambda **options: FakeProducer(broker, **options),
    )


def answer(tp: TopicPartition, offset: int) -> bytes:
    return f"answer {tp.partition}@{offset}".encode()


def started(checkpoint: Checkpoint, tp: TopicPartition, offsets: range) -> None:
    for offset in offsets:
        checkpoint.partitions[tp].start(offset)


async def answered(checkpoint: Checkpoint, tp: TopicPartition, *offsets: int) -> None:
    for offset in offsets:
        record = Outgoing(RESULTS, b"video", answer(tp, offset))
        await checkpoint.deliver(checkpoint.partitions[tp], offset, record, {"offset": offset})


def transactions(checkpoint: Checkpoint, outcome: str) -> float:
    value = checkpoint._metrics.registry.get_sample_value("inference_transactions_total", {"outcome": outcome})
    return value or 0.0


def events(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == commit.logger.name]


# --------------------------------------------------------------------------- assignment


async def test_assign_starts_each_partition_at_its_committed_offset_or_else_its_log_start(broker: Broker) -> None:
    broker.committed[P0] = 5
    broker.log_start[P1] = 2
    checkpoint, _ = at_least_once(broker)
    consumer = checkpoint._consumer
    assert await checkpoint.assign({P0, P1}) == {P0: 5, P1: 2}
    assert consumer.log_start_asked == [P1]
    assert (checkpoint.partitions[P0].committed, checkpoint.partitions[P1].committed) == (5, 2)


@pytest.mark.parametrize(
    "failure", [KafkaConnectionError(), RebalanceInProgressError(), AssertionError("no broker"), HANG],
    ids=["retriable-kafka-error", "non-retriable-kafka-error", "assertion", "no-answer"],
)  # fmt: skip
async def test_assign_reads_the_committed_offsets_again_until_they_answer(
    broker: Broker, failure: object, caplog: pytest.LogCaptureFixture
) -> None:
    broker.committed[P0] = 3
    broker.fail("committed", failure, failure)
    checkpoint, _ = at_least_once(broker)
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.assign({P0}) == {P0: 3}
    assert broker.steps.count("committed") == 3
    assert "committed_read_failed" in events(caplog)


async def test_assign_does_not_retry_an_error_that_is_no_kafka_step_failure(broker: Broker) -> None:
    broker.fail("committed", RuntimeError("a bug"))
    checkpoint, _ = at_least_once(broker)
    with pytest.raises(RuntimeError, match="a bug"):
        await checkpoint.assign({P0})
    assert broker.steps.count("committed") == 1
    assert checkpoint.partitions == {}


async def test_transactional_assign_starts_the_partitions_producers_before_reading_the_committed_offsets(
    broker: Broker,
) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0, P1})
    assert broker.steps[:2] == ["start", "start"]
    assert broker.steps.index("committed") == 2
    assert {p.transactional_id for p in broker.producers} == {f"{GROUP}-{TOPIC}-0", f"{GROUP}-{TOPIC}-1"}
    assert all(p.running and p.options["enable_idempotence"] for p in broker.producers)


async def test_transactional_assign_starts_a_producer_again_until_it_starts(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """Consuming before the previous owner is fenced could publish a frame twice: there is no giving up."""
    broker.fail("start", KafkaConnectionError(), HANG)
    checkpoint = transactional(broker)
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.assign({P0}) == {P0: 0}
    first, second, third = broker.producers_of(P0)
    assert first.stopped and second.stopped
    assert third.running and not third.stopped
    assert "producer_start_failed" in events(caplog)


# --------------------------------------------------------------------------- at_least_once


async def test_at_least_once_an_answer_is_finished_only_once_the_broker_acknowledged_it(broker: Broker) -> None:
    checkpoint, publisher = at_least_once(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(2))
    broker.fail("publish", KafkaConnectionError())
    with pytest.raises(KafkaConnectionError):
        await answered(checkpoint, P0, 0)
    assert checkpoint.partitions[P0].commit_point() == 0
    await answered(checkpoint, P0, 0)
    assert publisher.sent == [answer(P0, 0)]
    assert checkpoint.partitions[P0].commit_point() == 1


async def test_at_least_once_commits_the_contiguous_finished_prefix_of_each_partition(broker: Broker) -> None:
    broker.committed[P0] = 5
    broker.log_start[P1] = 2
    checkpoint, publisher = at_least_once(broker)
    await checkpoint.assign({P0, P1})
    started(checkpoint, P0, range(5, 10))
    started(checkpoint, P1, range(2, 4))
    await answered(checkpoint, P0, 5, 6, 8)
    await answered(checkpoint, P1, 3, 2)
    assert await checkpoint.commit() == {P0: 7, P1: 4}
    assert broker.group_commits == [{P0: 7, P1: 4}]
    assert checkpoint.partitions[P0].committed == 7
    assert checkpoint.partitions[P0].tracked == 3  # 7, 8 and 9
    assert await checkpoint.commit() == {}
    assert len(broker.group_commits) == 1
    await checkpoint.close()
    assert publisher.stopped


@pytest.mark.parametrize(
    "failure", [RebalanceInProgressError(), KafkaConnectionError(), AssertionError("no broker"), HANG],
    ids=["rebalance", "connection", "assertion", "no-answer"],
)  # fmt: skip
async def test_at_least_once_a_failed_commit_leaves_the_trackers_as_they_were(
    broker: Broker, failure: object, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint, _ = at_least_once(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(4))
    await answered(checkpoint, P0, 0, 1, 2)
    broker.fail("commit", failure)
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.commit() == {}
    assert "commit_failed" in events(caplog)
    assert broker.committed == {}
    assert (checkpoint.partitions[P0].committed, checkpoint.partitions[P0].tracked) == (0, 4)
    assert await checkpoint.commit() == {P0: 3}
    assert broker.committed == {P0: 3}


async def test_at_least_once_commits_only_the_partitions_asked_for(broker: Broker) -> None:
    checkpoint, _ = at_least_once(broker)
    await checkpoint.assign({P0, P1})
    for tp in (P0, P1):
        started(checkpoint, tp, range(2))
        await answered(checkpoint, tp, 0, 1)
    assert await checkpoint.commit(only={P1}) == {P1: 2}
    assert broker.group_commits == [{P1: 2}]
    assert checkpoint.partitions[P0].committed == 0
    assert await checkpoint.commit() == {P0: 2}


# --------------------------------------------------------------------------- exactly_once


async def test_a_transaction_publishes_the_finished_prefix_with_its_offset(broker: Broker) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(5))
    await answered(checkpoint, P0, 2, 0, 1, 4)
    assert broker.published == []  # answers wait for their transaction
    assert await checkpoint.commit() == {P0: 3}
    (producer,) = broker.producers
    assert broker.published == [(producer.transactional_id, [answer(P0, 0), answer(P0, 1), answer(P0, 2)])]
    assert broker.committed == {P0: 3}
    assert broker.steps[-5:] == ["send", "send", "send", "send_offsets_to_transaction", "commit_transaction"]
    assert checkpoint.partitions[P0].committed == 3
    assert checkpoint.partitions[P0].peek(5) == [Outgoing(RESULTS, b"video", answer(P0, 4))]
    assert transactions(checkpoint, "committed") == 1


async def test_a_fenced_partition_commits_nothing_more_until_it_is_forgotten(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(4))
    await answered(checkpoint, P0, 0, 1)
    broker.fail("commit_transaction", ProducerFenced())
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.commit() == {}
    assert "producer_fenced" in events(caplog)
    assert transactions(checkpoint, "aborted") == 1
    await answered(checkpoint, P0, 2, 3)
    assert await checkpoint.commit() == {}
    assert await checkpoint.commit() == {}
    (producer,) = broker.producers  # not started again: that would fence the partition's new owner
    assert producer.transactions_begun == 1
    assert broker.published == []
    assert checkpoint.partitions[P0].committed == 0

    await checkpoint.forget({P0})
    assert producer.stopped
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(1))
    await answered(checkpoint, P0, 0)
    assert await checkpoint.commit() == {P0: 1}


@pytest.mark.parametrize(
    "failure",
    [KafkaConnectionError(), AssertionError("fatal state"), HANG],
    ids=["connection", "assertion", "no-answer"],
)
async def test_a_failed_transaction_keeps_its_answers_and_stops_the_producer(
    broker: Broker, failure: object, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(3))
    await answered(checkpoint, P0, 0, 1, 2)
    broker.fail("commit_transaction", failure)
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.commit() == {}
    assert "transaction_failed" in events(caplog)
    assert transactions(checkpoint, "aborted") == 1
    (producer,) = broker.producers
    assert producer.stopped
    assert checkpoint.partitions[P0].committed == 0
    assert len(checkpoint.partitions[P0].peek(3)) == 3


async def failed_transaction(broker: Broker, committed: int | None = None) -> TransactionalCheckpoint:
    """A checkpoint whose transaction of the answers to offsets committed..committed+2 failed."""
    base = committed or 0
    if committed is not None:
        broker.committed[P0] = committed
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(base, base + 5))
    await answered(checkpoint, P0, base, base + 1, base + 2)
    broker.fail("commit_transaction", KafkaConnectionError())
    assert await checkpoint.commit() == {}
    return checkpoint


async def test_recovery_takes_a_transaction_the_broker_committed_as_committed(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit reached the broker before the error: sending those answers again would publish them twice."""
    checkpoint = await failed_transaction(broker)
    broker.committed[P0] = 3
    await answered(checkpoint, P0, 3, 4)
    with caplog.at_level(logging.INFO):
        assert await checkpoint.commit() == {P0: 5}
    assert "transaction_outcome_committed" in events(caplog)
    first, restarted = broker.producers
    assert first.stopped and restarted.running
    assert broker.published == [(restarted.transactional_id, [answer(P0, 3), answer(P0, 4)])]
    assert broker.committed == {P0: 5}


@pytest.mark.parametrize("committed", [None, 10], ids=["nothing-committed-before", "committed-before"])
async def test_recovery_sends_the_answers_of_an_aborted_transaction_again(
    broker: Broker, committed: int | None
) -> None:
    checkpoint = await failed_transaction(broker, committed)
    base = committed or 0
    assert await checkpoint.commit() == {P0: base + 3}
    _, restarted = broker.producers
    assert broker.published == [(restarted.transactional_id, [answer(P0, base + o) for o in range(3)])]
    assert broker.committed == {P0: base + 3}


async def test_recovery_fences_a_partition_another_member_committed_meanwhile(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A committed offset at neither point: this replica is a zombie and commits nothing more."""
    checkpoint = await failed_transaction(broker)
    broker.committed[P0] = 7
    await answered(checkpoint, P0, 3, 4)
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.commit() == {}
    assert "partition_taken_over" in events(caplog)
    assert await checkpoint.commit() == {}
    _, restarted = broker.producers
    assert len(broker.producers) == 2
    assert restarted.transactions_begun == 0
    assert broker.published == []
    assert broker.committed == {P0: 7}


async def test_recovery_keeps_its_own_point_where_the_broker_lost_a_committed_offset(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A committed offset below this replica's own point: nobody committed there, the broker lost it.

    Fenced and rebalanced, the partition would restart at 4 and answer 4..9 a second time.
    """
    checkpoint = await failed_transaction(broker, committed=10)
    broker.committed[P0] = 4
    with caplog.at_level(logging.INFO):
        assert await checkpoint.commit() == {P0: 13}
    assert {"committed_offset_regressed", "transaction_outcome_aborted"} <= set(events(caplog))
    assert "partition_taken_over" not in events(caplog)
    _, restarted = broker.producers
    assert broker.published == [(restarted.transactional_id, [answer(P0, o) for o in (10, 11, 12)])]
    assert broker.committed == {P0: 13}


async def test_recovery_stays_uncertain_while_the_committed_offset_cannot_be_read(broker: Broker) -> None:
    checkpoint = await failed_transaction(broker)
    broker.committed[P0] = 3  # the failed transaction did commit
    broker.fail("committed", KafkaConnectionError())
    assert await checkpoint.commit() == {}
    _, unsure = broker.producers
    assert unsure.stopped
    assert unsure.transactions_begun == 0
    assert await checkpoint.commit() == {}  # settled now: 0-2 are committed, and nothing new is finished
    assert len(broker.producers) == 3
    assert broker.published == []
    assert checkpoint.partitions[P0].committed == 3


async def test_recovery_waits_for_a_later_cycle_when_the_producer_does_not_start_again(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    checkpoint = await failed_transaction(broker)
    broker.fail("start", KafkaConnectionError())
    with caplog.at_level(logging.WARNING):
        assert await checkpoint.commit() == {}
    assert "producer_start_failed" in events(caplog)
    _, not_started = broker.producers
    assert not_started.stopped
    assert await checkpoint.commit() == {P0: 3}  # aborted: its answers go out again
    assert [values for _, values in broker.published] == [[answer(P0, 0), answer(P0, 1), answer(P0, 2)]]


async def test_a_rejected_record_fails_the_transaction_before_its_commit(broker: Broker) -> None:
    """aiokafka would commit a transaction whose records failed; the offsets would pass missing answers."""
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(3))
    await answered(checkpoint, P0, 0, 1, 2)
    broker.fail("send", None, OutOfOrderSequenceNumber())
    assert await checkpoint.commit() == {}
    assert "commit_transaction" not in broker.steps
    assert broker.producers[0].stopped
    assert await checkpoint.commit() == {P0: 3}
    assert [values for _, values in broker.published] == [[answer(P0, 0), answer(P0, 1), answer(P0, 2)]]


async def test_a_producer_that_does_not_stop_is_torn_down(broker: Broker, caplog: pytest.LogCaptureFixture) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    (producer,) = broker.producers
    sender = producer._sender.sender_task = asyncio.create_task(asyncio.Event().wait())
    broker.fail("stop", HANG)
    with caplog.at_level(logging.WARNING):
        await checkpoint.close()
    assert "producer_torn_down" in events(caplog)
    assert sender.cancelled()
    assert producer.client.closed
    assert checkpoint.partitions == {}


async def test_transactional_commits_only_the_partitions_asked_for(broker: Broker) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0, P1})
    for tp in (P0, P1):
        started(checkpoint, tp, range(2))
        await answered(checkpoint, tp, 0, 1)
    assert await checkpoint.commit(only={P1}) == {P1: 2}
    assert [p.transactions_begun for p in broker.producers_of(P0)] == [0]
    assert await checkpoint.commit() == {P0: 2}
    await checkpoint.close()
    assert all(p.stopped for p in broker.producers)


# --------------------------------------------------------------------------- deliveries


async def test_delivered_raises_the_first_rejection_after_all_settle() -> None:
    loop = asyncio.get_running_loop()
    ok, rejected, late = loop.create_future(), loop.create_future(), loop.create_future()
    ok.set_result(None)
    rejected.set_exception(OutOfOrderSequenceNumber())
    loop.call_soon(late.set_result, None)
    with pytest.raises(KafkaError):
        await commit._delivered([ok, rejected, late])
    assert late.done()


async def test_delivered_returns_when_every_record_is_accepted() -> None:
    loop = asyncio.get_running_loop()
    deliveries = [loop.create_future() for _ in range(3)]
    for i, delivery in enumerate(deliveries):
        loop.call_soon(delivery.set_result, i)
    await commit._delivered(deliveries)
    assert all(d.done() and d.exception() is None for d in deliveries)


# --------------------------------------------------------------------------- denials: a missing ACL is never retried


async def test_a_group_denial_on_the_committed_read_is_raised_not_retried(broker: Broker) -> None:
    broker.fail("committed", GroupAuthorizationFailedError(GROUP))
    checkpoint, _ = at_least_once(broker)
    with pytest.raises(GroupAuthorizationFailedError):
        await checkpoint.assign({P0})
    assert broker.steps.count("committed") == 1


async def test_a_group_denial_on_commit_is_raised_not_logged_and_retried(broker: Broker) -> None:
    checkpoint, _ = at_least_once(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(2))
    await answered(checkpoint, P0, 0, 1)
    broker.fail("commit", GroupAuthorizationFailedError(GROUP))
    with pytest.raises(GroupAuthorizationFailedError):
        await checkpoint.commit()
    assert checkpoint.partitions[P0].committed == 0


async def test_a_transactional_id_denial_ends_the_producer_start_at_once(broker: Broker) -> None:
    broker.fail("start", TransactionalIdAuthorizationFailed())
    checkpoint = transactional(broker)
    with pytest.raises(TransactionalIdAuthorizationFailed):
        await checkpoint.assign({P0})
    assert broker.steps.count("start") == 1


async def test_a_topic_denial_in_a_transaction_is_raised_not_taken_as_an_uncertain_outcome(broker: Broker) -> None:
    checkpoint = transactional(broker)
    await checkpoint.assign({P0})
    started(checkpoint, P0, range(1))
    await answered(checkpoint, P0, 0)
    broker.fail("send", TopicAuthorizationFailedError(RESULTS))
    with pytest.raises(TopicAuthorizationFailedError):
        await checkpoint.commit()
    assert broker.published == []
