"""The orchestration of one worker replica: consume -> answer (handler.py) -> commit, with backpressure.

Many frames of one partition are in flight at once (fetches overlap detection);
`WORKER_MAX_IN_FLIGHT` bounds them, and at the bound the assigned partitions are
paused while polling continues, so the member stays in the group. The three
priority topics share the slots by priority.py's rule; the DLQ guard (guard.py)
can pause everything. On revoke, a partition's frames drain within a bound and
what is contiguous is committed; on SIGTERM, all of them. The event loop never
decodes or infers: the pool does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError

from inference.backends import DetectorConfig, model_digest
from inference.commit import (
    AssignmentIncomplete,
    AtLeastOnceCheckpoint,
    Checkpoint,
    TransactionalCheckpoint,
)
from inference.config import Delivery, KafkaSettings, Settings, WorkerSettings
from inference.guard import DlqGuard
from inference.handler import Destinations, FrameHandler
from inference.health import Health, watch_loop_lag
from inference.heap import freeze_startup_heap
from inference.kafka_errors import AUTHORIZATION_ERRORS, KafkaAccessDenied, denial, raise_if_denied, unreachable
from inference.lag import TaskAge
from inference.logs import log_event, partition_names
from inference.messages import LOCAL_VERSION, ModelInfo, ModelRecord
from inference.metrics import Metrics
from inference.offsets import OffsetWentBackwards, PartitionOffsets
from inference.pool import DetectorPool
from inference.priority import Priority, low_share_slots, partitions_to_hold, priority_topics
from inference.probes import ProbeServer
from inference.publish import Outgoing, Publisher
from inference.registry import ModelRegistry
from inference.retry import FailureStreak, RetryLog
from inference.route import ModelRouter
from inference.storage import FrameStore
from inference.weights import WeightsCache

logger = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 100
# Finished-but-uncommitted frames a partition may hold, in multiples of the in-flight bound.
BACKLOG_PER_LIMIT = 20
# How often a replica looks for priority topics created after its start.
TOPIC_CHECK_S = 60.0
# aiokafka's request timeout, and what a JoinGroup needs above the rebalance timeout it waits through.
REQUEST_TIMEOUT_MS = 40_000
JOIN_ROOM_MS = 5_000


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def start_pool(
    stack: contextlib.AsyncExitStack, detector: DetectorConfig, worker: WorkerSettings, metrics: Metrics
) -> DetectorPool:
    """The detector pool with its model loaded in every process, closed when `stack` closes."""
    pool = DetectorPool(
        detector, worker.processes, worker.frame_timeout_s, worker.frame_attempts, on_restart=metrics.pool_restarts.inc
    )
    stack.push_async_callback(pool.close)
    await pool.start()
    metrics.model_load_seconds.set(pool.model_load_s)
    metrics.pool_alive.set_function(pool.alive_count)
    log_event(logger, logging.INFO, "model_loaded", seconds=round(pool.model_load_s, 2), processes=pool.processes,
              threads=detector.threads, device=detector.device, imgsz=detector.imgsz)  # fmt: skip
    return pool


def local_model(settings: Settings) -> ModelInfo:
    """The replica's own model (MODEL_PATH) as results report it: version "local", its file's checksum."""
    digest = model_digest(settings.model.path)
    model = settings.model
    return ModelInfo(name=model.path.name, conf=model.conf, iou=model.iou, version=LOCAL_VERSION, sha256=digest)


async def existing_topics(kafka: KafkaSettings, client_id: str) -> set[str]:
    """The topics this principal can see, read with a short-lived client before the group is joined."""
    probe = AIOKafkaConsumer(**kafka.client_options(), client_id=f"{client_id}-topics", group_id=None)
    try:
        await probe.start()
        return set(await probe.topics())
    finally:
        await probe.stop()


def new_consumer(kafka: KafkaSettings, client_id: str, rebalance_timeout_ms: int) -> AIOKafkaConsumer:
    """The tasks consumer: offsets committed by the checkpoint alone, answers of committed tasks only.

    The rebalance timeout covers a revocation's drain and last commit (config.rebalance_timeout_ms).
    The broker holds every member's JoinGroup until the slowest rejoins, so the request timeout
    exceeds it, as the Java client does for that request. max_poll_interval_ms stays: aiokafka
    counts only the time between polls, and the consume loop polls every POLL_TIMEOUT_MS.
    """
    return AIOKafkaConsumer(
        **kafka.client_options(),
        group_id=kafka.group_id,
        client_id=client_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=1024 * 1024,
        rebalance_timeout_ms=rebalance_timeout_ms,
        request_timeout_ms=max(REQUEST_TIMEOUT_MS, rebalance_timeout_ms + JOIN_ROOM_MS),
    )


def records_waiting(consumer: AIOKafkaConsumer, tp: TopicPartition, offsets: PartitionOffsets[Outgoing]) -> int:
    """Records in Kafka not yet taken: the last stable offset (we read committed) - the next we take."""
    end = consumer.last_stable_offset(tp)
    start = offsets.position if offsets.position is not None else offsets.committed
    return max(0, end - start) if end is not None and start is not None else 0


def record_lag(
    consumer: AIOKafkaConsumer, checkpoint: Checkpoint, ages: dict[TopicPartition, TaskAge], metrics: Metrics
) -> None:
    """Lag in records, and in seconds: the age of the oldest task taken and not yet answered."""
    now_ms = time.time() * 1000
    for tp, offsets in checkpoint.partitions.items():
        waiting = records_waiting(consumer, tp, offsets)
        labels = {"topic": tp.topic, "partition": str(tp.partition)}
        metrics.consumer_lag.labels(**labels).set(waiting)
        metrics.consumer_lag_seconds.labels(**labels).set(ages.setdefault(tp, TaskAge()).seconds(now_ms, waiting))


def raise_if_tasks_denied(exc: BaseException, kafka: KafkaSettings) -> None:
    """A denial met by the tasks consumer: it reads the tasks topic as a member of the group."""
    raise_if_denied(exc, kafka, operation="Read", topic=kafka.tasks_topic, group=kafka.group_id)


def checkpoint_denial(exc: BaseException, kafka: KafkaSettings) -> KafkaAccessDenied:
    """A denial met by the checkpoint: it writes results and the DLQ, commits to the group, and in
    exactly_once uses one transactional id per input partition."""
    return denial(exc, kafka.sasl_plain_username, operation="Write", topic=(kafka.results_topic, kafka.dlq_topic),
                  group=kafka.group_id, transactional_id=f"{kafka.group_id}-{kafka.tasks_topic}-*")  # fmt: skip


async def new_checkpoint(consumer: AIOKafkaConsumer, metrics: Metrics, kafka: KafkaSettings) -> Checkpoint:
    """The checkpoint of the configured delivery mode, its producer started where it shares one."""
    if kafka.delivery is Delivery.EXACTLY_ONCE:
        return TransactionalCheckpoint(consumer, metrics, kafka, kafka.transaction_interval_ms / 1000)
    publisher = Publisher(kafka)
    try:
        await publisher.start()
    except KafkaConnectionError as exc:
        await publisher.stop()
        raise await unreachable(kafka, exc) from None
    return AtLeastOnceCheckpoint(consumer, metrics, publisher)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(set(assigned))


class Worker:
    """One replica. `run()` returns after `stop()` (SIGTERM) once in-flight frames are drained."""

    def __init__(
        self, settings: Settings, detector: DetectorConfig, on_ready: Callable[[], None] | None = None
    ) -> None:
        self._settings = settings
        self._detector = detector
        self._on_ready = on_ready
        self._stopping = asyncio.Event()
        self._name = worker_name()
        self._model = local_model(settings)
        self._limit = settings.worker.in_flight_limit(detector.batch_size)
        self._backlog_limit = BACKLOG_PER_LIMIT * self._limit
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        self._consumer: AIOKafkaConsumer | None = None
        self._checkpoint: Checkpoint | None = None
        self._handler: FrameHandler | None = None
        self._pool: DetectorPool | None = None
        self._store: FrameStore | None = None
        # What ends the replica from a place that cannot raise into run(): a frame's task, a rebalance listener.
        self._fatal: KafkaAccessDenied | None = None
        self._levels = priority_topics(settings.kafka.tasks_topic)
        self._share_slots = low_share_slots(self._limit, settings.worker.low_priority_share)
        self._ages: dict[TopicPartition, TaskAge] = {}
        self._guard = DlqGuard(settings.worker.dlq_max_ratio, settings.worker.dlq_window)
        self.metrics = Metrics()
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self.health = Health(
            pool_loaded=lambda: self._pool is not None and self._pool.loaded,
            pool_alive=lambda: self._pool is not None and self._pool.alive(),
            storage_outage=lambda: self._store.outage() if self._store is not None else None,
            publish_outage=lambda: self._checkpoint.outage() if self._checkpoint is not None else None,
            halted=lambda: self._guard.tripped,
            rebalance_timeout_s=settings.rebalance_timeout_ms / 1000,
        )

    def stop(self) -> None:
        self.health.draining = True
        self._stopping.set()

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    async def run(self) -> None:
        """Start every part (closed in reverse order on the way out), serve until stopped, drain, commit."""
        settings = self._settings
        async with contextlib.AsyncExitStack() as stack:
            if settings.worker.metrics_port is not None:
                probes = ProbeServer(self.metrics, settings.worker.metrics_port, self.health.healthy, self.health.ready)
                await probes.start()
                stack.push_async_callback(probes.stop)
            pool = self._pool = await start_pool(stack, self._detector, settings.worker, self.metrics)
            store = self._store = await stack.enter_async_context(
                FrameStore(
                    settings.s3, settings.worker.max_frame_bytes, settings.worker.frame_timeout_s, max(8, self._limit)
                )
            )
            router = await self._start_routing(stack, pool)
            destinations = Destinations(settings.kafka.results_topic, settings.kafka.dlq_topic)
            self._handler = FrameHandler(
                store, pool, router, destinations, self.metrics, self._name, settings.s3.allows
            )
            consumer, checkpoint = await self._start_consuming(stack)
            freeze_startup_heap()
            lag_probe = asyncio.create_task(watch_loop_lag(self.metrics))
            stack.callback(lag_probe.cancel)
            if self._on_ready:
                self._on_ready()
            try:
                async with asyncio.TaskGroup() as loops:
                    loops.create_task(self._consume(consumer))
                    loops.create_task(self._commit_periodically(checkpoint))
                    loops.create_task(self._watch_task_topics(consumer))
            except* KafkaAccessDenied as denied:
                raise denied.exceptions[0] from None
            await self._drain(set(self._tasks))
            await self._commit(checkpoint)
        log_event(logger, logging.INFO, "worker_stopped", **self._handler.counts)

    async def _start_routing(self, stack: contextlib.AsyncExitStack, pool: DetectorPool) -> ModelRouter:
        """The registry read to its end and followed, and the router that serves its models."""
        settings = self._settings
        weights = await stack.enter_async_context(WeightsCache(settings.s3, settings.model.cache_dir))
        router: ModelRouter | None = None

        def on_change(name: str, record: ModelRecord | None) -> None:
            if router is not None:
                router.on_change(name, record)

        registry = ModelRegistry(settings.kafka, self._name, on_change)
        stack.push_async_callback(registry.stop)
        await registry.start()
        router = ModelRouter(registry, weights, pool.warm, self._detector.backend, self._model, self.metrics)
        stack.callback(router.close)
        return router

    async def _start_consuming(self, stack: contextlib.AsyncExitStack) -> tuple[AIOKafkaConsumer, Checkpoint]:
        kafka = self._settings.kafka
        consumer = self._consumer = new_consumer(kafka, self._name, self._settings.rebalance_timeout_ms)
        try:
            checkpoint = self._checkpoint = await new_checkpoint(consumer, self.metrics, kafka)
        except BaseException:
            await consumer.stop()  # the stack stops it only once it is pushed below
            raise
        stack.push_async_callback(checkpoint.close)
        stack.push_async_callback(consumer.stop)
        try:
            self._subscribe(consumer, await existing_topics(kafka, self._name))
            await consumer.start()
        except KafkaConnectionError as exc:
            raise await unreachable(kafka, exc) from None
        except KafkaError as exc:
            raise_if_tasks_denied(exc, kafka)
            raise
        return consumer, checkpoint

    def _subscribe(self, consumer: AIOKafkaConsumer, existing: set[str]) -> None:
        """The tasks topic, and each priority level's topic that exists: aiokafka fails a start on a
        missing topic, and a deployment without priorities has none."""
        wanted = {t for t, level in self._levels.items() if level is Priority.NORMAL or t in existing}
        if wanted != consumer.subscription():
            consumer.subscribe(sorted(wanted), listener=_Rebalance(self))
            log_event(logger, logging.INFO, "task_topics", topics=sorted(wanted),
                      missing=sorted(set(self._levels) - wanted))  # fmt: skip

    async def _watch_task_topics(self, consumer: AIOKafkaConsumer) -> None:
        """Take up a priority topic created while the replica runs (a new subscription rebalances once)."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), TOPIC_CHECK_S)
            if self._stopping.is_set():
                return
            try:
                self._subscribe(consumer, await consumer.topics())
            except KafkaError as exc:  # the next check tries again; polling reports a lasting failure
                log_event(logger, logging.WARNING, "task_topics_unknown", error=repr(exc))

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        """Three outcomes only: records are admitted, a Kafka error is logged and backed off, or we stop."""
        failures = FailureStreak(RetryLog(logger, "poll_failed"))
        while not self._stopping.is_set():
            self.health.loop_turned()
            if self._fatal is not None:
                raise self._fatal
            try:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._limit)
            except KafkaError as exc:
                raise_if_tasks_denied(exc, self._settings.kafka)
                await failures.failed(exc)
                continue
            failures.passed()
            for tp, records in batch.items():
                self._admit(tp, records)
            self._apply_backpressure()
            record_lag(consumer, self._require_checkpoint(), self._ages, self.metrics)

    async def _commit_periodically(self, checkpoint: Checkpoint) -> None:
        """The commit cycle in its own task: polling never waits on a commit's round trips."""
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), checkpoint.until_due())
            if not self._stopping.is_set():
                self.health.commit_started()
                await self._commit(checkpoint)
                self.health.commit_ended()

    async def _commit(self, checkpoint: Checkpoint, only: set[TopicPartition] | None = None) -> None:
        try:
            await checkpoint.commit(only)
        except AUTHORIZATION_ERRORS as exc:
            raise checkpoint_denial(exc, self._settings.kafka) from None

    def _require_checkpoint(self) -> Checkpoint:
        assert self._checkpoint is not None, "the checkpoint is built before the consumer starts"
        return self._checkpoint

    def _admit(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        offsets = self._require_checkpoint().partitions.get(tp)
        if offsets is None:
            return  # revoked while the batch was in hand (the next owner consumes it), or still being set up
        running = self._tasks[tp]
        age = self._ages.setdefault(tp, TaskAge())
        for record in records:
            try:
                offsets.start(record.offset)
            except OffsetWentBackwards:
                continue  # a stale fetch from before a seek; this offset is already in hand
            age.taken(record.offset, record.timestamp)
            task = asyncio.create_task(self._handle(tp, record, offsets))
            running.add(task)
            task.add_done_callback(running.discard)

    def _apply_backpressure(self) -> None:
        """Pause everything at the in-flight bound or once the DLQ guard tripped; pause a partition
        whose uncommitted backlog is full, and lower priorities beyond their share.

        The backlog bound keeps memory flat when one frame of a partition is stuck (an S3 object
        that keeps failing): later frames finish but cannot be committed past it.
        """
        consumer = self._consumer
        assert consumer is not None
        partitions = self._require_checkpoint().partitions
        held = {tp for tp, o in partitions.items() if o.tracked >= self._backlog_limit}
        waiting: dict[Priority, bool] = {}
        in_flight: dict[Priority, int] = {}
        for tp, offsets in partitions.items():
            level = self._levels.get(tp.topic, Priority.NORMAL)
            waiting[level] = waiting.get(level, False) or records_waiting(consumer, tp, offsets) > 0
            in_flight[level] = in_flight.get(level, 0) + len(self._tasks.get(tp, ()))
        free = max(0, self._limit - self.in_flight)
        held |= partitions_to_hold(partitions, self._levels, waiting, in_flight, free, self._share_slots)
        stop_all = self.in_flight >= self._limit or self._guard.tripped is not None
        apply_backpressure(consumer, stop_all, held)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        try:
            await self._set_up(assigned)
        finally:
            self.health.rebalance_ended()

    async def _set_up(self, assigned: set[TopicPartition]) -> None:
        consumer = self._consumer
        assert consumer is not None
        checkpoint = self._require_checkpoint()
        try:
            start = await checkpoint.assign(assigned)
        except AUTHORIZATION_ERRORS as exc:
            # Raised here, aiokafka would log the listener's exception and go on.
            self._fatal = checkpoint_denial(exc, self._settings.kafka)
            return
        except AssignmentIncomplete as exc:
            # The set-up ran past its bound (a coordinator moving, a broker away); assign() undid it,
            # logged the partitions and asked for a rejoin. They stay untracked, their records skipped,
            # until the next rebalance sets them up afresh: safe, as nothing of theirs was taken, and
            # cheaper than ending the replica, which would rebalance the group too and reload the model.
            self.health.set_up_failed = str(exc)
            return
        # No await between the trackers' creation and these seeks: aiokafka drops what it had
        # fetched from its own position, and every record admitted from here on is from ours.
        for tp in start.keys() & consumer.assignment():
            consumer.seek(tp, start[tp])
        self.health.joined = True
        self.health.set_up_failed = None
        self._apply_backpressure()
        log_event(logger, logging.INFO, "partitions_assigned", partitions=partition_names(assigned),
                  starts={f"{tp.topic}[{tp.partition}]": offset for tp, offset in sorted(start.items())})  # fmt: skip

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        # First in every rebalance: the consume loop's poll now waits until the assignment is set up.
        self.health.rebalance_started()
        checkpoint = self._require_checkpoint()
        await self._drain(revoked)
        try:
            await self._commit(checkpoint, only=revoked)
        except KafkaAccessDenied as exc:
            self._fatal = exc
        await checkpoint.forget(revoked)
        for tp in revoked:
            self._ages.pop(tp, None)
            for gauge in (self.metrics.consumer_lag, self.metrics.consumer_lag_seconds):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        log_event(logger, logging.INFO, "partitions_revoked", partitions=partition_names(revoked))

    async def _drain(self, partitions: set[TopicPartition]) -> None:
        """Let in-flight frames finish within the drain bound; abandon the rest (re-delivered later)."""
        tasks = {t for tp in partitions for t in self._tasks.get(tp, set())}
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self._settings.worker.drain_timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            names = partition_names(partitions)
            log_event(logger, logging.WARNING, "frames_abandoned", count=len(pending), partitions=names)

    async def _handle(
        self, tp: TopicPartition, record: ConsumerRecord[bytes, bytes], offsets: PartitionOffsets[Outgoing]
    ) -> None:
        assert self._handler is not None
        describe: dict[str, object] = {"topic": tp.topic, "partition": tp.partition, "offset": record.offset}
        started = time.perf_counter()
        outgoing = await self._handler.answer(record, describe, self._levels.get(tp.topic, Priority.NORMAL))
        answered = time.perf_counter()
        try:
            await self._require_checkpoint().deliver(offsets, record.offset, outgoing, describe)
        except KafkaAccessDenied as exc:
            self._fatal = exc
            return
        self._ages.setdefault(tp, TaskAge()).answered(record.offset)
        if self._guard.answered(outgoing.topic == self._settings.kafka.dlq_topic):
            log_event(logger, logging.ERROR, "dlq_guard_tripped", reason=self._guard.tripped, **describe)
            self._apply_backpressure()
        done = time.perf_counter()
        self.metrics.observe("publish", done - answered)
        self.metrics.observe("end_to_end", done - started)


def apply_backpressure(consumer: AIOKafkaConsumer, at_bound: bool, backlogged: set[TopicPartition]) -> None:
    """Pause every assigned partition at the in-flight bound, else only the backlogged; resume the rest.

    The pause state is read from the consumer each time, never kept in a copy. aiokafka fetches
    for new partitions while on_partitions_assigned runs, so records admitted then can pause the
    new assignment before the listener returns: a copy reset there once said "nothing paused"
    while every partition was, and the replica idled until the next rebalance.
    """
    assigned = consumer.assignment()
    wanted = set(assigned) if at_bound else backlogged & assigned
    paused = consumer.paused()
    if wanted - paused:
        consumer.pause(*(wanted - paused))
    if paused - wanted:
        consumer.resume(*(paused - wanted))
