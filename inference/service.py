"""The asyncio pipeline of one worker replica: consume -> fetch -> detect -> publish -> commit.

Many frames of one partition are in flight at once (fetches overlap detection);
`WORKER_MAX_IN_FLIGHT` bounds them, and at the bound the assigned partitions are
paused while polling continues, so the member stays in the group. The event loop
never decodes or infers: that happens in the process pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import socket
import time
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from inference.backends import model_file
from inference.commit import AtLeastOnceCheckpoint, Checkpoint, TransactionalCheckpoint
from inference.config import Delivery, ModelSettings, Settings, WorkerSettings, available_cores
from inference.detector import (
    DetectorConfig,
    DetectOutput,
    checkpoint_imgsz,
    freeze_startup_heap,
    resolve_backend,
    resolve_device,
)
from inference.errors import FrameError, InferenceFailed, InvalidTask, UnreadableTask
from inference.logs import log_event, partition_names
from inference.messages import (
    Detection,
    FrameResult,
    FrameTask,
    ModelInfo,
    failed_result,
    ok_result,
    parse_task,
)
from inference.metrics import Metrics
from inference.offsets import OffsetWentBackwards, PartitionOffsets
from inference.pool import DetectorPool
from inference.probes import Probe, ProbeServer
from inference.publish import Outgoing, Publisher
from inference.storage import FrameStore

logger = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 100
# /healthz fails when the consume loop has not turned for this long (a blocked event loop).
LOOP_STALL_S = 30.0
# ... or when one commit cycle has run this long. Its Kafka steps are bounded (commit.STEP_TIMEOUT_S
# each) and a cycle of the worst of them takes under a minute: past it, something unbounded holds it.
COMMIT_STALL_S = 60.0
# How often the loop-lag probe wakes; its oversleep is the event loop's delay to every frame.
LOOP_PROBE_S = 0.05
# Finished-but-uncommitted frames a partition may hold, in multiples of the in-flight bound.
BACKLOG_PER_LIMIT = 20


def worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def detector_config(settings: Settings) -> DetectorConfig:
    """Resolve what the pool processes load, in a short-lived process of its own.

    Resolving needs torch and ultralytics (the device, the checkpoint's imgsz, the export on a
    first start). Imported here they would stay in the replica's main process for good: ~570 MB
    on top of the ~80 MB that consuming, fetching and publishing need.
    """
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as helper:
        resolved = helper.submit(resolve_detector, settings.model, settings.worker).result()
    # The pool processes die with this process, not with the helper that built the config.
    return dataclasses.replace(resolved, parent_pid=os.getpid())


def resolve_detector(model: ModelSettings, worker: WorkerSettings) -> DetectorConfig:
    """The concrete device, backend, imgsz and model file; exports the weights, once, when the backend needs it."""
    device = resolve_device(model.device)
    backend = resolve_backend(model.backend, device)
    imgsz = model.imgsz or checkpoint_imgsz(model.path)
    return DetectorConfig(
        model_path=str(model_file(model.path, backend, imgsz)),
        backend=backend,
        device=device,
        imgsz=imgsz,
        conf=model.conf,
        iou=model.iou,
        threads=max(1, available_cores() // worker.processes),
        max_pixels=worker.max_frame_pixels,
    )


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: Worker) -> None:
        self._worker = worker

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._worker.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._worker.on_assigned(set(assigned))


class Worker:
    """One replica. `run()` returns after `stop()` (SIGTERM) once in-flight frames are drained."""

    def __init__(self, settings: Settings, on_ready: Callable[[], None] | None = None) -> None:
        self._settings = settings
        self._on_ready = on_ready
        self._stopping = asyncio.Event()
        self._name = worker_name()
        self._detector = detector_config(settings)
        self._model = ModelInfo(name=settings.model.path.name, conf=settings.model.conf, iou=settings.model.iou)
        self._limit = settings.worker.in_flight_limit
        self._tasks: dict[TopicPartition, set[asyncio.Task[None]]] = defaultdict(set)
        self._backlog_limit = BACKLOG_PER_LIMIT * self._limit
        self.counts: dict[str, int] = defaultdict(int)
        self._consumer: AIOKafkaConsumer | None = None
        self._checkpoint: Checkpoint | None = None
        self._store: FrameStore | None = None
        self._pool: DetectorPool | None = None
        self.metrics = Metrics()
        self.metrics.in_flight.set_function(lambda: self.in_flight)
        self._joined = False
        self._loop_tick = time.monotonic()
        self._commit_started: float | None = None

    def stop(self) -> None:
        self._stopping.set()

    @property
    def in_flight(self) -> int:
        return sum(len(tasks) for tasks in self._tasks.values())

    async def run(self) -> None:
        settings = self._settings
        async with contextlib.AsyncExitStack() as stack:
            if settings.worker.metrics_port is not None:
                probes = ProbeServer(self.metrics, settings.worker.metrics_port, self.healthy, self.ready)
                await probes.start()
                stack.push_async_callback(probes.stop)
            self._pool = DetectorPool(
                self._detector,
                settings.worker.processes,
                settings.worker.frame_timeout_s,
                settings.worker.frame_attempts,
                on_restart=self.metrics.pool_restarts.inc,
            )
            stack.push_async_callback(self._pool.close)
            await self._pool.start()
            self.metrics.model_load_seconds.set(self._pool.model_load_s)
            self.metrics.pool_alive.set_function(self._pool.alive_count)
            log_event(logger, logging.INFO, "model_loaded", seconds=round(self._pool.model_load_s, 2),
                      processes=self._pool.processes, threads=self._detector.threads,
                      device=self._detector.device, imgsz=self._detector.imgsz)  # fmt: skip
            self._store = await stack.enter_async_context(
                FrameStore(settings.s3, settings.worker.max_frame_bytes, concurrency=max(8, self._limit))
            )
            self._consumer = self._new_consumer()
            self._checkpoint = await self._new_checkpoint(self._consumer)
            stack.push_async_callback(self._checkpoint.close)
            self._consumer.subscribe([settings.kafka.tasks_topic], listener=_Rebalance(self))
            await self._consumer.start()
            stack.push_async_callback(self._consumer.stop)
            freeze_startup_heap()
            probe = asyncio.create_task(self._watch_loop_lag())
            stack.callback(probe.cancel)
            if self._on_ready:
                self._on_ready()
            async with asyncio.TaskGroup() as loops:
                loops.create_task(self._consume())
                loops.create_task(self._commit_periodically())
            await self._drain(set(self._tasks))
            await self._checkpoint.commit()
        log_event(logger, logging.INFO, "worker_stopped", **self.counts)

    async def _watch_loop_lag(self) -> None:
        while True:
            before = time.perf_counter()
            await asyncio.sleep(LOOP_PROBE_S)
            self.metrics.loop_lag.observe(max(0.0, time.perf_counter() - before - LOOP_PROBE_S))

    def healthy(self) -> Probe:
        if time.monotonic() - self._loop_tick > LOOP_STALL_S:
            return Probe(False, f"consume loop has not turned for {LOOP_STALL_S:.0f}s")
        if self._commit_started is not None and time.monotonic() - self._commit_started > COMMIT_STALL_S:
            return Probe(False, f"a commit cycle has run for over {COMMIT_STALL_S:.0f}s")
        if self._pool is not None and self._pool.loaded and not self._pool.alive():
            return Probe(False, "detector pool is down")
        return Probe(True, "alive")

    def ready(self) -> Probe:
        if self._pool is None or not self._pool.loaded:
            return Probe(False, "model is loading")
        if not self._joined:
            return Probe(False, "not yet a member of the consumer group")
        if self._stopping.is_set():
            return Probe(False, "draining")
        return Probe(True, "serving")

    async def _new_checkpoint(self, consumer: AIOKafkaConsumer) -> Checkpoint:
        kafka = self._settings.kafka
        if kafka.delivery is Delivery.EXACTLY_ONCE:
            return TransactionalCheckpoint(consumer, self.metrics, kafka, kafka.transaction_interval_ms / 1000)
        publisher = Publisher(kafka)
        await publisher.start()
        return AtLeastOnceCheckpoint(consumer, self.metrics, publisher)

    def _new_consumer(self) -> AIOKafkaConsumer:
        kafka = self._settings.kafka
        return AIOKafkaConsumer(
            **kafka.client_options(),
            group_id=kafka.group_id,
            client_id=self._name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=1024 * 1024,
        )

    async def _consume(self) -> None:
        """Three outcomes only: records are admitted, a Kafka error is logged and backed off, or we stop."""
        consumer, _ = self._require_consumer()
        while not self._stopping.is_set():
            self._loop_tick = time.monotonic()
            try:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS, max_records=self._limit)
            except KafkaError as exc:
                log_event(logger, logging.WARNING, "poll_failed", error=repr(exc))
                await asyncio.sleep(1.0)
                continue
            for tp, records in batch.items():
                self._admit(tp, records)
            self._apply_backpressure()
            self._record_lag(consumer)

    async def _commit_periodically(self) -> None:
        """The commit cycle in its own task: polling never waits on a commit's round trips.

        Inline, an exactly_once cycle (a transaction per partition, four round trips each)
        held back every new task by its whole duration, ten times a second.
        """
        _, checkpoint = self._require_consumer()
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), checkpoint.until_due())
            if not self._stopping.is_set():
                self._commit_started = time.monotonic()
                await checkpoint.commit()
                self._commit_started = None

    def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Lag = end of the partition (last stable offset: we read committed) - next offset we take."""
        _, checkpoint = self._require_consumer()
        for tp, offsets in checkpoint.partitions.items():
            end = consumer.last_stable_offset(tp)
            if end is not None and offsets.position is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    end - offsets.position
                )

    def _require_consumer(self) -> tuple[AIOKafkaConsumer, Checkpoint]:
        assert self._consumer is not None and self._checkpoint is not None
        return self._consumer, self._checkpoint

    def _admit(self, tp: TopicPartition, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        _, checkpoint = self._require_consumer()
        offsets = checkpoint.partitions.get(tp)
        if offsets is None:
            return  # revoked while the batch was in hand (the next owner consumes it), or still being set up
        running = self._tasks[tp]
        for record in records:
            try:
                offsets.start(record.offset)
            except OffsetWentBackwards:
                continue  # a stale fetch from before a seek; this offset is already in hand
            task = asyncio.create_task(self._handle(tp, record, offsets))
            running.add(task)
            task.add_done_callback(running.discard)

    def _apply_backpressure(self) -> None:
        """Pause everything at the in-flight bound; pause a partition whose uncommitted backlog is full.

        The backlog bound keeps memory flat when one frame of a partition is stuck (an S3 object
        that keeps failing): later frames finish but cannot be committed past it.
        """
        consumer, checkpoint = self._require_consumer()
        backlogged = {tp for tp, o in checkpoint.partitions.items() if o.tracked >= self._backlog_limit}
        apply_backpressure(consumer, self.in_flight >= self._limit, backlogged)

    async def on_assigned(self, assigned: set[TopicPartition]) -> None:
        consumer, checkpoint = self._require_consumer()
        start = await checkpoint.assign(assigned)
        # No await between the trackers' creation and these seeks: aiokafka drops what it had
        # fetched from its own position, and every record admitted from here on is from ours.
        for tp in start.keys() & consumer.assignment():
            consumer.seek(tp, start[tp])
        self._joined = True
        self._apply_backpressure()
        log_event(logger, logging.INFO, "partitions_assigned", partitions=partition_names(assigned))

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        _, checkpoint = self._require_consumer()
        await self._drain(revoked)
        await checkpoint.commit(only=revoked)
        await checkpoint.forget(revoked)
        for tp in revoked:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
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
        describe: dict[str, object] = {"topic": tp.topic, "partition": tp.partition, "offset": record.offset}
        _, checkpoint = self._require_consumer()
        started = time.perf_counter()
        outgoing = await self._answer(record, describe)
        answered = time.perf_counter()
        await checkpoint.deliver(offsets, record.offset, outgoing, describe)
        done = time.perf_counter()
        self.metrics.observe("publish", done - answered)
        self.metrics.observe("end_to_end", done - started)

    async def _answer(self, record: ConsumerRecord[bytes, bytes], describe: dict[str, object]) -> Outgoing:
        """The record to publish for one task: a result, or the task itself for the DLQ."""
        started = time.perf_counter()
        try:
            task = parse_task(record.value)
        except UnreadableTask as exc:
            return self._dead_letter(record, exc, describe)
        except InvalidTask as exc:
            describe.update(video_id=exc.video_id, frame_id=exc.frame_id)
            return self._result(self._failed(exc.video_id, exc.frame_id, exc, None, started, describe))
        describe.update(video_id=task.video_id, frame_id=task.frame_id)
        try:
            result = await self._detect(task, started, describe)
        except FrameError as exc:
            result = self._failed(task.video_id, task.frame_id, exc, task, started, describe)
        except Exception as exc:  # noqa: BLE001 - a bug must answer the frame, not stall the partition
            log_event(logger, logging.ERROR, "frame_crashed", exc_info=True, **describe)
            failure = InferenceFailed(f"unexpected {type(exc).__name__}: {exc}")
            result = self._failed(task.video_id, task.frame_id, failure, task, started, describe)
        return self._result(result)

    async def _detect(self, task: FrameTask, started: float, describe: dict[str, object]) -> FrameResult:
        assert self._store is not None and self._pool is not None
        data = await self._store.fetch(task.bucket, task.s3_key, describe)
        fetched = time.perf_counter()
        output = await self._pool.detect(data, describe)
        done = time.perf_counter()
        self.counts["ok"] += 1
        self.metrics.frame_done("ok")
        self.metrics.observe("fetch", fetched - started)
        self.metrics.observe("detect", output.detect_ms / 1000)
        self.metrics.observe("queue", max(0.0, done - fetched - output.detect_ms / 1000))
        return ok_result(
            task,
            width=output.width,
            height=output.height,
            detections=_detections(output),
            model=self._model,
            timing_ms={
                "fetch": _ms(started, fetched),
                "detect": round(output.detect_ms, 2),
                "queue": max(0.0, _ms(fetched, done) - round(output.detect_ms, 2)),
                "total": _ms(started, done),
            },
            worker=self._name,
        )

    def _failed(
        self,
        video_id: str,
        frame_id: int,
        exc: FrameError,
        task: FrameTask | None,
        started: float,
        describe: dict[str, object],
    ) -> FrameResult:
        self.counts[exc.code] += 1
        self.metrics.frame_done("error", exc.code)
        log_event(logger, logging.ERROR, "frame_failed", code=exc.code, error=str(exc)[:300], **describe)
        timing = {"total": _ms(started, time.perf_counter())}
        return failed_result(video_id, frame_id, exc, task=task, model=self._model, timing_ms=timing, worker=self._name)

    def _result(self, result: FrameResult) -> Outgoing:
        topic = self._settings.kafka.results_topic
        return Outgoing(topic, result.video_id.encode(), result.to_json())

    def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], exc: UnreadableTask, describe: dict[str, object]
    ) -> Outgoing:
        self.counts["dlq"] += 1
        self.metrics.frame_done("dlq", exc.code)
        self.metrics.dlq_messages.inc()
        log_event(logger, logging.ERROR, "task_unreadable", error=str(exc), video_id=None, frame_id=None, **describe)
        headers = [("error.code", exc.code.encode()), ("error.message", str(exc).encode()[:1000])]
        # aiokafka cannot produce a record with neither key nor value: such a record keeps an empty value.
        value = b"" if record.key is None and record.value is None else record.value
        return Outgoing(self._settings.kafka.dlq_topic, record.key, value, headers)


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


def _detections(output: DetectOutput) -> list[Detection]:
    return [
        Detection(
            class_id=d.class_id,
            class_name=d.class_name,
            confidence=round(d.confidence, 5),
            bbox=(round(d.bbox[0], 2), round(d.bbox[1], 2), round(d.bbox[2], 2), round(d.bbox[3], 2)),
        )
        for d in output.detections
    ]


def _ms(start: float, end: float) -> float:
    return round((end - start) * 1000, 2)
