"""Commit stage: the checkpoint that makes answered frames durable, in one of two delivery modes.

`at_least_once`: each answer is produced at once (idempotent producer, acks=all); a frame
counts as finished when the broker has acknowledged it, and the contiguous finished prefix
is committed through the consumer group. A crash re-delivers, it never loses.

`exactly_once`: answers wait in the offset tracker; each cycle publishes the contiguous
finished prefix of a partition together with its offsets in one Kafka transaction.
aiokafka speaks only the pre-KIP-447 protocol, so fencing a zombie needs one
transactional id per input partition: a producer per assigned partition, started on
assignment (its InitProducerId aborts whatever a previous owner left open, or lets it finish
a commit already decided). Only then is the partition's committed offset read, and its
records are taken from there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import IllegalOperation, KafkaError, ProducerFenced

from inference.committed import committed_offsets
from inference.config import KafkaSettings
from inference.kafka_errors import is_denial
from inference.logs import log_event, partition_names
from inference.metrics import Metrics
from inference.offsets import PartitionOffsets
from inference.publish import Outgoing, Publisher, producer_options
from inference.retry import KAFKA_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)
# The bound of every Kafka step of a commit cycle: aiokafka retries some coordinator errors and
# unanswered requests without end, and one stuck step would hold back every answer of the replica.
STEP_TIMEOUT_S = 5.0
# How a step fails: aiokafka raises AssertionError of its own for some (a bootstrap from a metadata
# answer that lists no broker, a transaction begun on a producer in its fatal state), and a plain
# IllegalOperation for a send on a producer whose sender task died between two awaits.
STEP_ERRORS = (KafkaError, TimeoutError, AssertionError, IllegalOperation)
# How long a partition stays fenced while this member still holds it before the member asks the
# group for a rebalance: the fencer may have died before rejoining, and then none would come.
FENCED_REJOIN_S = 10.0
# Builds a partition's transactional producer from its options; tests pass a fake.
ProducerFactory = Callable[..., AIOKafkaProducer]


class AssignmentIncomplete(Exception):
    """A newly assigned partition could not be set up within the assignment listener's budget.

    What was set up is undone and a rejoin is requested: the partitions stay untracked (their
    records skipped) until the rebalance that follows sets them up afresh.
    """


class Checkpoint(ABC):
    """Per-partition offset trackers of the current assignment and the commit cycle over them."""

    def __init__(self, consumer: AIOKafkaConsumer, metrics: Metrics, interval_s: float) -> None:
        self._consumer = consumer
        self._metrics = metrics
        self._interval_s = interval_s
        self._last_commit = time.monotonic()
        # Commits run in their own task beside the consume loop, and rebalances assign and revoke
        # partitions from aiokafka's coordinator task: one cycle, assignment or revocation at a
        # time, so never two transactions on one producer.
        self._lock = asyncio.Lock()
        self.partitions: dict[TopicPartition, PartitionOffsets[Outgoing]] = {}

    async def assign(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """Set up newly assigned partitions; return the offset to consume each from.

        aiokafka reads the committed offsets concurrently with the rebalance listener, so before
        this set-up (in exactly_once, before the previous owner is fenced): a previous owner
        finishing its last transaction meanwhile would move the offset past records already in
        hand, and they would be answered twice. Until the set-up is done the partitions are
        untracked and their records skipped; the caller seeks to the returned offsets.

        The set-up is bounded by `listener_budget_s`; past it, AssignmentIncomplete is raised.
        """
        async with self._lock:
            budget_s = listener_budget_s(self._consumer)
            try:
                async with asyncio.timeout(budget_s):
                    await self._assigned(partitions)
                    start = await self._starting_offsets(partitions)
            except TimeoutError:
                await self._forgotten(partitions)
                request_rejoin(self._consumer)
                names = partition_names(partitions)
                log_event(logger, logging.ERROR, "assignment_incomplete", partitions=names, budget_s=budget_s)
                raise AssignmentIncomplete(f"{names} not set up within {budget_s:.1f}s: rejoining") from None
            for tp in partitions:
                self.partitions[tp] = PartitionOffsets(start[tp])
            return start

    async def _starting_offsets(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        """The committed offset of each partition, or its log start where none is; retried until read."""

        async def read() -> dict[TopicPartition, int]:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                return await _committed_or_start(self._consumer, sorted(partitions))

        return await retry(read, backoff=KAFKA_BACKOFF, log=RetryLog(logger, "committed_read_failed"),
                           retriable=_step_failed, fields={"partitions": partition_names(partitions)})  # fmt: skip

    async def forget(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            for tp in partitions:
                self.partitions.pop(tp, None)
            await self._forgotten(partitions)

    async def commit(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Make the contiguous finished prefix of each partition durable; return what was committed."""
        async with self._lock:
            return await self._commit(only)

    @abstractmethod
    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        """Per-mode work for newly assigned partitions, under the lock."""

    @abstractmethod
    async def _forgotten(self, partitions: set[TopicPartition]) -> None:
        """Per-mode work for partitions given up, under the lock."""

    @abstractmethod
    async def close(self) -> None:
        """Release the producers; the last commit happened before."""

    def outage(self) -> str | None:
        """Why answers cannot be published at all, for the probes; None while they can."""
        return None

    def until_due(self) -> float:
        """Seconds until the next commit cycle."""
        return max(0.0, self._interval_s - (time.monotonic() - self._last_commit))

    @abstractmethod
    async def deliver(
        self, offsets: PartitionOffsets[Outgoing], offset: int, record: Outgoing, describe: dict[str, object]
    ) -> None:
        """Hand over the answer to the task at `offset`; afterwards the offset counts as finished."""

    @abstractmethod
    async def _commit(self, only: set[TopicPartition] | None) -> dict[TopicPartition, int]:
        """One commit cycle, under the lock."""

    def _ready(self, only: set[TopicPartition] | None) -> dict[TopicPartition, int]:
        self._last_commit = time.monotonic()
        return {
            tp: point
            for tp, offsets in self.partitions.items()
            if (only is None or tp in only) and (point := offsets.ready()) is not None
        }


class AtLeastOnceCheckpoint(Checkpoint):
    def __init__(
        self, consumer: AIOKafkaConsumer, metrics: Metrics, publisher: Publisher, interval_s: float = 1.0
    ) -> None:
        super().__init__(consumer, metrics, interval_s)
        self._publisher = publisher

    async def close(self) -> None:
        await self._publisher.stop()

    def outage(self) -> str | None:
        return self._publisher.outage()

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        """Nothing per partition: one shared idempotent producer serves them all."""

    async def _forgotten(self, partitions: set[TopicPartition]) -> None:
        """Nothing per partition: the shared producer stays."""

    async def deliver(
        self, offsets: PartitionOffsets[Outgoing], offset: int, record: Outgoing, describe: dict[str, object]
    ) -> None:
        await self._publisher.send(record, describe)
        # Only now, with the broker's ack in hand, may the commit point pass this offset.
        offsets.finish(offset)

    async def _commit(self, only: set[TopicPartition] | None) -> dict[TopicPartition, int]:
        """Steps:
        1. for every tracked partition (or those in `only`), the commit point: the first offset
           whose answer is not yet acknowledged;
        2. commit those points to the group coordinator in one request;
        3. only when that succeeded, forget the offsets below them.
        A failed commit (rebalance in progress, coordinator moving) leaves the trackers as they
        were: the next cycle re-commits, or the next owner re-delivers.
        """
        points = self._ready(only)
        if not points:
            return {}
        try:
            await asyncio.wait_for(self._consumer.commit(points), STEP_TIMEOUT_S)
        except STEP_ERRORS as exc:
            if is_denial(exc):
                raise
            log_event(logger, logging.WARNING, "commit_failed", error=repr(exc), partitions=_names(points))
            return {}
        for tp, point in points.items():
            self.partitions[tp].take(point)
        return points


class TransactionalCheckpoint(Checkpoint):
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        metrics: Metrics,
        settings: KafkaSettings,
        interval_s: float,
        producer_factory: ProducerFactory = AIOKafkaProducer,
    ) -> None:
        super().__init__(consumer, metrics, interval_s)
        self._settings = settings
        self._producer_factory = producer_factory
        self._producers: dict[TopicPartition, AIOKafkaProducer] = {}
        # Fenced partitions, with when they were fenced (or a rejoin was last requested for them).
        self._fenced: dict[TopicPartition, float] = {}
        # Partitions whose last transaction failed without a clear outcome, with its commit point.
        self._uncertain: dict[TopicPartition, int] = {}

    def transactional_id(self, tp: TopicPartition) -> str:
        return f"{self._settings.group_id}-{tp.topic}-{tp.partition}"

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        # Before the consumer fetches the committed offset: starting fences the previous owner.
        await asyncio.gather(*(self._start_producer(tp, attempts=None) for tp in partitions))

    async def _forgotten(self, partitions: set[TopicPartition]) -> None:
        await asyncio.gather(*(self._stop_producer(tp) for tp in partitions))
        for tp in partitions:
            self._fenced.pop(tp, None)
            self._uncertain.pop(tp, None)

    async def close(self) -> None:
        await self.forget(set(self._producers))

    async def deliver(
        self, offsets: PartitionOffsets[Outgoing], offset: int, record: Outgoing, describe: dict[str, object]
    ) -> None:
        offsets.finish(offset, record)

    async def _commit(self, only: set[TopicPartition] | None) -> dict[TopicPartition, int]:
        self._rejoin_if_still_fenced()
        broken = [tp for tp in self.partitions if tp not in self._producers and tp not in self._fenced]
        await asyncio.gather(*(self._recover(tp) for tp in broken if only is None or tp in only))
        points = {tp: p for tp, p in self._ready(only).items() if tp in self._producers and tp not in self._fenced}
        done = await asyncio.gather(*(self._commit_partition(tp, point) for tp, point in points.items()))
        return {tp: point for (tp, point), ok in zip(points.items(), done, strict=True) if ok}

    async def _commit_partition(self, tp: TopicPartition, point: int) -> bool:
        """Steps, for one partition:
        1. begin a transaction on the partition's own producer;
        2. produce the answers below the commit point, in offset order, and see each accepted;
        3. add the commit point to the transaction (send_offsets_to_transaction);
        4. commit the transaction: answers and offset become visible together, or neither;
        5. only then forget the offsets below the point.
        A failed transaction, or one not done within STEP_TIMEOUT_S, keeps the answers; the
        producer is restarted (which aborts the open transaction) and the next cycle tries
        again. A fenced producer means another member owns the partition now: nothing more is
        committed for it until it is revoked (aiokafka would not even begin a transaction on it),
        and a rejoin is requested should no rebalance revoke it within FENCED_REJOIN_S.
        """
        producer = self._producers[tp]
        offsets = self.partitions[tp]
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                await self._transact(producer, tp, point, offsets)
        except ProducerFenced:
            self._fenced[tp] = time.monotonic()
            self._metrics.transactions.labels(outcome="aborted").inc()
            log_event(logger, logging.WARNING, "producer_fenced", topic=tp.topic, partition=tp.partition)
            return False
        except STEP_ERRORS as exc:
            if is_denial(exc):
                raise
            self._metrics.transactions.labels(outcome="aborted").inc()
            log_event(logger, logging.WARNING, "transaction_failed", error=repr(exc), topic=tp.topic,
                      partition=tp.partition, offset=point)  # fmt: skip
            # The commit may have reached the broker before the error: settle that before any retry.
            self._uncertain[tp] = point
            await self._stop_producer(tp)
            return False
        offsets.take(point)
        self._metrics.transactions.labels(outcome="committed").inc()
        return True

    async def _transact(
        self, producer: AIOKafkaProducer, tp: TopicPartition, point: int, offsets: PartitionOffsets[Outgoing]
    ) -> None:
        await producer.begin_transaction()
        deliveries = [
            await producer.send(record.topic, record.value, key=record.key, headers=record.headers)
            for record in offsets.peek(point)
        ]
        await producer.send_offsets_to_transaction({tp: point}, self._settings.group_id)
        # aiokafka's commit_transaction commits even when some records failed, and the offsets
        # would then pass answers that were never written.
        await _delivered(deliveries)
        await producer.commit_transaction()

    async def _recover(self, tp: TopicPartition) -> None:
        """Restart a partition's producer after a failed transaction and settle its outcome.

        Starting the producer again makes the broker finish the old transaction: a commit
        that was already decided completes, anything else is aborted (and, while nobody does
        this, the open transaction would hold back every read_committed reader). The group's
        committed offset then tells which: at the failed commit point, it was committed (and
        re-sending those answers would publish them twice); where it was, it was aborted.
        Anywhere else above where it was, another member committed there: this replica is a
        zombie (frozen past its session, say; its failed transaction timed out while it was).
        Its restart has just fenced that owner, so it fences itself too: nobody commits the
        partition until the coming rebalance sets it up afresh.

        Below where it was, no member committed (each starts at the committed offset): the
        broker lost the offsets of a transaction this replica saw committed, as a single broker
        stopped while a commit's markers were being written has done. The answers stayed
        committed, the offset did not. The replica keeps to its own point, takes the outcome as
        aborted, and its next transaction commits the offset again; fenced and rebalanced
        instead, the partition would restart at the lost offset and answer its frames twice.
        """
        if await self._start_producer(tp, attempts=1) is None:
            return
        point = self._uncertain.pop(tp, None)
        if point is None:
            return
        try:
            async with asyncio.timeout(STEP_TIMEOUT_S):
                committed = (await committed_offsets(self._consumer, [tp]))[tp]
        except STEP_ERRORS as exc:
            if is_denial(exc):
                raise
            self._uncertain[tp] = point
            await self._stop_producer(tp)
            return
        offsets = self.partitions[tp]
        if committed is not None and offsets.committed is not None and committed < offsets.committed:
            log_event(logger, logging.ERROR, "committed_offset_regressed", topic=tp.topic, partition=tp.partition,
                      offset=committed, expected=offsets.committed)  # fmt: skip
            committed = offsets.committed
        if committed is None or committed == offsets.committed:
            log_event(logger, logging.INFO, "transaction_outcome_aborted", topic=tp.topic,
                      partition=tp.partition, offset=point, committed=committed)  # fmt: skip
            return
        if committed == point:
            offsets.take(point)
            log_event(logger, logging.INFO, "transaction_outcome_committed", topic=tp.topic,
                      partition=tp.partition, offset=point)  # fmt: skip
            return
        self._fenced[tp] = time.monotonic()
        log_event(logger, logging.WARNING, "partition_taken_over", topic=tp.topic, partition=tp.partition,
                  offset=committed, expected=[offsets.committed, point])  # fmt: skip

    def _rejoin_if_still_fenced(self) -> None:
        """Ask for a rebalance when a partition has stayed fenced for FENCED_REJOIN_S while still held.

        Whoever fenced it (a thawed zombie's recovery) may have died before rejoining; the
        rebalance assigns the partition afresh, and its owner's producer start fences the rest.
        """
        now = time.monotonic()
        due = [tp for tp, since in self._fenced.items() if now - since >= FENCED_REJOIN_S]
        if not due:
            return
        for tp in due:
            self._fenced[tp] = now  # asked again only after another grace, should this rebalance not come
        request_rejoin(self._consumer)
        log_event(logger, logging.WARNING, "rejoin_requested", reason="producer_fenced",
                  partitions=partition_names(due))  # fmt: skip

    async def _start_producer(self, tp: TopicPartition, attempts: int | None) -> AIOKafkaProducer | None:
        """Start (and so fence any previous owner of) the partition's transactional producer.

        attempts=None retries until the broker answers: consuming a partition whose previous
        owner is not fenced could publish a frame twice.
        """
        options: dict[str, Any] = {**producer_options(self._settings), "transactional_id": self.transactional_id(tp)}

        async def start() -> AIOKafkaProducer:
            producer = self._producer_factory(**options)
            try:
                await asyncio.wait_for(producer.start(), STEP_TIMEOUT_S)
            except BaseException:
                # Also when the assignment's budget cancels the start: a producer left behind
                # would keep its connections and sender task.
                with contextlib.suppress(Exception):
                    await _stop(producer, tp)
                raise
            return producer

        log = RetryLog(logger, "producer_start_failed")
        fields: dict[str, object] = {"topic": tp.topic, "partition": tp.partition}
        try:
            producer = await retry(
                start, backoff=KAFKA_BACKOFF, log=log, retriable=_step_failed, attempts=attempts, fields=fields
            )
        except STEP_ERRORS as exc:
            if is_denial(exc):
                raise
            # Only a bounded start ends here, and retry() raises its last failure unlogged.
            log.failed(exc, attempts or 0, fields)
            return None
        self._producers[tp] = producer
        return producer

    async def _stop_producer(self, tp: TopicPartition) -> None:
        producer = self._producers.pop(tp, None)
        if producer is not None:
            await _stop(producer, tp)


async def _stop(producer: AIOKafkaProducer, tp: TopicPartition) -> None:
    """Stop a producer within STEP_TIMEOUT_S, or else tear it down without its flush.

    aiokafka's stop waits for every pending batch, and a broker that does not answer keeps them
    pending. Merely cancelled there, the producer's sender task would live on with its
    connections and go on retrying its requests: one more such task for every failed transaction.
    """
    try:
        await asyncio.wait_for(producer.stop(), STEP_TIMEOUT_S)
    except STEP_ERRORS:
        await _tear_down(producer, tp)


async def _tear_down(producer: AIOKafkaProducer, tp: TopicPartition) -> None:
    # aiokafka has no stop without a flush. A cancelled sender task first awaits its requests in
    # flight, which a frozen broker never answers: a second cancel ends that wait.
    sender = producer._sender.sender_task
    for wait_s in (1.0, STEP_TIMEOUT_S):
        if sender is None or sender.done():
            break
        sender.cancel()
        await asyncio.wait({sender}, timeout=wait_s)
    with contextlib.suppress(*STEP_ERRORS):
        await asyncio.wait_for(producer.client.close(), STEP_TIMEOUT_S)
    log_event(logger, logging.WARNING, "producer_torn_down", topic=tp.topic, partition=tp.partition,
              sender_ended=sender is None or sender.done())  # fmt: skip


def _step_failed(exc: BaseException) -> bool:
    """A failed Kafka step is retried whatever its `retriable` flag says (each attempt starts afresh), but a
    denial: no retry grants a missing ACL, so it is raised to the worker, which ends."""
    return isinstance(exc, STEP_ERRORS) and not is_denial(exc)


def listener_budget_s(consumer: AIOKafkaConsumer) -> float:
    """How long the assignment listener's set-up may take.

    aiokafka stops heartbeating at the JoinGroup and starts again only once the assignment
    listener has returned, so past the session timeout (less one heartbeat interval, for the
    first heartbeat after) the coordinator would evict the member mid set-up.
    """
    session_s = getattr(consumer, "_session_timeout_ms", 10_000) / 1000
    heartbeat_s = getattr(consumer, "_heartbeat_interval_ms", 3_000) / 1000
    return max(STEP_TIMEOUT_S, session_s - heartbeat_s)


def request_rejoin(consumer: AIOKafkaConsumer) -> None:
    """Have the consumer rejoin its group (a rebalance) at its coordinator task's next turn.

    aiokafka has no public call for it; this is the one its own metadata changes use.
    """
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None:
        coordinator.request_rejoin()


async def _committed_or_start(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """The committed offset of each partition, its log start where none is; raises where it cannot tell."""
    committed = await committed_offsets(consumer, partitions)
    never = [tp for tp, offset in committed.items() if offset is None]
    log_start = await consumer.beginning_offsets(never) if never else {}
    return {tp: log_start[tp] if offset is None else offset for tp, offset in committed.items()}


async def _delivered(deliveries: list[asyncio.Future[Any]]) -> None:
    """Wait until the broker has answered for every record; raise the first rejection."""
    # Every outcome is collected, so no failed record is left behind as an unretrieved exception.
    outcomes = await asyncio.gather(*deliveries, return_exceptions=True)
    rejected = next((outcome for outcome in outcomes if isinstance(outcome, BaseException)), None)
    if rejected is not None:
        raise rejected


def _names(points: dict[TopicPartition, int]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]@{point}" for tp, point in points.items()]
