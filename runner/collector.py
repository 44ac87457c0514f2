"""Reading FrameResults from the results topic, for the collector group or for one video's stream.

`Collector` is a member of a consumer group (`runner collect`): it buffers every video it
sees, writes `<out_dir>/<video_id>.json` once a video is complete, and commits offsets no
further than the first result of any video still buffered (`assembler.Collection`), so a
collector that is killed and restarted rebuilds its buffers from Kafka and loses nothing.
Results of a video are keyed by its id, so each video lives on one partition. A video's
results after its document was written start it over (a rerun under the same id is written
again); a buffer idle for `idle_release_s` stops holding back the commit point, so a late
duplicate cannot pin a partition; records read again after a position reset are skipped.

`VideoResults` reads one video's results without a consumer group (nothing committed,
nothing shared with other readers): `runner run` and `ordered_results` use it.

Both read with isolation_level=read_committed, so results of an aborted worker
transaction are never assembled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaConnectionError, KafkaError, NoOffsetForPartitionError, OffsetOutOfRangeError

from inference.committed import committed_offsets
from inference.config import KafkaSettings
from inference.kafka_errors import is_denial
from inference.logs import Throttle, log_event
from inference.messages import FrameResult
from inference.retry import FailureStreak, RetryLog
from runner.assembler import IDLE_RELEASE_S, Assembly, Collection, ReadPositions, write_document
from runner.errors import KafkaUse, kafka_errors, kafka_failure, unreachable_failure
from runner.ids import is_video_id

logger = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 200
COMMIT_INTERVAL_S = 1.0
# The collector's positions come from its group's commit point, read by `position_from_group`:
# aiokafka's own fallback would take a coordinator error for "none committed".
NO_RESET = "none"
# A coordinator look-up is retried by aiokafka without end: one try is bounded, the poll loop retries.
POSITION_TIMEOUT_S = 10.0


def decode_result(record: Any) -> FrameResult | None:
    """The FrameResult in a record, or None (logged) when it is unreadable or its video id is unsafe."""
    where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
    try:
        result = FrameResult.from_json(record.value)
    except (ValueError, TypeError) as exc:
        log_event(logger, logging.WARNING, "result_skipped", error=str(exc)[:300], **where)
        return None
    # The id becomes a file name: anything outside the contract's pattern could leave out_dir.
    if not is_video_id(result.video_id):
        log_event(logger, logging.WARNING, "result_skipped", error="invalid video_id", **where)
        return None
    return result


def _consumer(kafka: KafkaSettings, group_id: str | None, *topics: str, reset: str = "earliest") -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        **kafka.client_options(),
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset=reset,
        isolation_level="read_committed",
    )


async def _start(consumer: AIOKafkaConsumer, kafka: KafkaSettings, group: str | None) -> None:
    """Start `consumer`, translating why it cannot; the caller stops it either way."""
    with kafka_errors(kafka, KafkaUse(kafka.results_topic, group=group)):
        try:
            await consumer.start()
        except KafkaConnectionError as exc:
            raise await unreachable_failure(exc, kafka) from None


def _raise_if_denied(exc: KafkaError, kafka: KafkaSettings, group: str | None) -> None:
    """A missing ACL ends the command: polling again cannot grant it."""
    if is_denial(exc):
        raise kafka_failure(exc, kafka, KafkaUse(kafka.results_topic, group=group)) from None


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._collector.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        log_event(logger, logging.INFO, "partitions_assigned", partitions=sorted(tp.partition for tp in assigned))


class Collector:
    """A collector group member; `run()` returns after `stop()` (or is cancelled), committing its commit point.

    Commit cycle, after every poll:
    1. write the document of every video that became complete, and drop its buffer;
    2. release the buffers idle for `idle_release_s` (a late duplicate never completes);
    3. compute the commit point from the buffers still pinned (`Collection.commit_points`);
    4. commit it when it moved and COMMIT_INTERVAL_S has passed (always on stop and on revoke).
    A crash between 1 and 4 re-reads those results and writes the same documents again.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        out_dir: Path,
        group_id: str,
        on_written: Callable[[Path, Assembly], Awaitable[None]] | None = None,
        on_progress: Callable[[Assembly], None] | None = None,
        idle_release_s: float = IDLE_RELEASE_S,
    ) -> None:
        self._kafka = kafka
        self._out_dir = out_dir
        self._group_id = group_id
        # Awaited before the commit point may pass the video: what it publishes survives a crash.
        self._on_written = on_written
        self._on_progress = on_progress
        self._stopping = asyncio.Event()
        self._collection: Collection[TopicPartition] = Collection(idle_release_s)
        self._committed: dict[TopicPartition, int] = {}
        self._last_commit = 0.0
        self._read_again_log = Throttle()
        self._consumer: AIOKafkaConsumer | None = None

    def stop(self) -> None:
        self._stopping.set()

    def assembly(self, video_id: str) -> Assembly | None:
        """The buffer of a video not yet complete, if any of its results were seen."""
        return self._collection.assembly(video_id)

    async def run(self) -> None:
        consumer = self._consumer = _consumer(self._kafka, self._group_id, reset=NO_RESET)
        consumer.subscribe([self._kafka.results_topic], listener=_Rebalance(self))
        try:
            await _start(consumer, self._kafka, self._group_id)
            log_event(logger, logging.INFO, "collector_started", group=self._group_id, topic=self._kafka.results_topic)
            try:
                await self._poll_until_stopped(consumer)
            finally:
                # Also when cancelled (a timeout): the commit point never passes a buffered result.
                await self._commit(force=True)
        finally:
            await consumer.stop()

    async def _poll_until_stopped(self, consumer: AIOKafkaConsumer) -> None:
        """Three outcomes per poll: records are buffered, a Kafka error is logged and backed off, or we stop."""
        failures = FailureStreak(RetryLog(logger, "poll_failed"))
        while not self._stopping.is_set():
            try:
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            except (NoOffsetForPartitionError, OffsetOutOfRangeError) as exc:
                await self._reposition(consumer, exc, failures)
                continue
            except KafkaError as exc:
                _raise_if_denied(exc, self._kafka, self._group_id)
                await failures.failed(exc)
                continue
            failures.passed()
            touched: set[Assembly] = set()
            for tp, records in batch.items():
                touched |= self._take(tp, records)
            if self._on_progress is not None:
                for assembly in touched:
                    self._on_progress(assembly)
            await self._write_complete()
            self._release_idle()
            await self._commit(force=False)

    async def _reposition(self, consumer: AIOKafkaConsumer, exc: KafkaError, failures: FailureStreak) -> None:
        """Give a partition without a position one, from the group's commit point or the log start."""
        unplaced: TopicPartition | dict[TopicPartition, int] = exc.args[0]
        try:
            if isinstance(unplaced, TopicPartition):
                await position_from_group(consumer, unplaced)
            else:
                await restart_from_log_start(consumer, unplaced)
        except (KafkaError, TimeoutError) as failure:
            if isinstance(failure, KafkaError):
                _raise_if_denied(failure, self._kafka, self._group_id)
            partitions = [unplaced] if isinstance(unplaced, TopicPartition) else list(unplaced)
            await failures.failed(failure, partitions=sorted(tp.partition for tp in partitions))

    def _take(self, tp: TopicPartition, records: list[Any]) -> set[Assembly]:
        """Buffer the records; returns the assemblies they added to."""
        touched = set()
        now_s = time.monotonic()
        for record in records:
            if self._collection.positions.read_before(tp, record.offset):
                self._log_read_again(tp, record.offset)
                continue
            result = decode_result(record)
            opened = result is not None and self._collection.assembly(result.video_id) is None
            assembly = self._collection.take(tp, record.offset, result, now_s)
            if assembly is None or result is None:
                continue
            if opened:
                log_event(logger, logging.INFO, "video_seen", video_id=result.video_id,
                          total_frames=result.total_frames, partition=tp.partition, offset=record.offset)  # fmt: skip
            touched.add(assembly)
        return touched

    def _log_read_again(self, tp: TopicPartition, offset: int) -> None:
        # A position reset: these records were taken into account already and are neither duplicates nor news.
        if self._read_again_log.allow(tp):
            log_event(logger, logging.INFO, "results_read_again", partition=tp.partition, offset=offset,
                      read_up_to=self._collection.positions.next_offset(tp))  # fmt: skip

    async def _write_complete(self) -> None:
        for assembly in self._collection.complete():
            path = self._out_dir / f"{assembly.video_id}.json"
            write_document(path, assembly.document())
            log_event(logger, logging.INFO, "video_written", video_id=assembly.video_id, path=str(path),
                      frames=assembly.received, errors=assembly.error_count,
                      duplicates=assembly.duplicate_count)  # fmt: skip
            if self._on_written is not None:
                await self._on_written(path, assembly)
            self._collection.finish(assembly.video_id)

    def _release_idle(self) -> None:
        for released in self._collection.release_idle(time.monotonic()):
            log_event(logger, logging.WARNING, "buffer_released", video_id=released.video_id,
                      partition=released.partition.partition, offset=released.offset, received=released.received,
                      total_frames=released.total_frames)  # fmt: skip

    async def _commit(self, force: bool) -> None:
        due = force or time.monotonic() - self._last_commit >= COMMIT_INTERVAL_S
        if not due or self._consumer is None:
            return  # runs after every poll: the commit points are worked out only when a commit is due
        points = self._collection.commit_points()
        moved = {tp: offset for tp, offset in points.items() if self._committed.get(tp) != offset}
        if not moved:
            return
        try:
            await self._consumer.commit(moved)
        except KafkaError as exc:
            _raise_if_denied(exc, self._kafka, self._group_id)
            # Not committing is safe: a restart re-reads a little more.
            log_event(logger, logging.WARNING, "commit_failed", error=repr(exc),
                      offsets={tp.partition: offset for tp, offset in moved.items()})  # fmt: skip
            return
        self._committed.update(moved)
        self._last_commit = time.monotonic()

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit, then forget what the revoked partitions fed: their next owner rebuilds it from the commit point."""
        await self._commit(force=True)
        self._collection.forget(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)


async def position_from_group(consumer: AIOKafkaConsumer, tp: TopicPartition) -> None:
    """Seek `tp` to the group's committed offset, or to the log start where the group committed none.

    aiokafka reads a coordinator error as "none committed" and would start the partition from the
    log start, re-reading every video already written; `committed_offsets` raises it instead.
    """
    async with asyncio.timeout(POSITION_TIMEOUT_S):
        offset = (await committed_offsets(consumer, [tp])).get(tp)
    if offset is None:
        log_event(logger, logging.INFO, "position_from_log_start", partition=tp.partition)
        await consumer.seek_to_beginning(tp)
    else:
        consumer.seek(tp, offset)


async def restart_from_log_start(consumer: AIOKafkaConsumer, out_of_range: dict[TopicPartition, int]) -> None:
    """Retention deleted results past the commit point: what is left is read from its start."""
    for tp, offset in out_of_range.items():
        log_event(logger, logging.WARNING, "position_out_of_range", partition=tp.partition, offset=offset)
        await consumer.seek_to_beginning(tp)


class VideoResults:
    """One video's results, read without a consumer group; use as an async context manager.

    With `from_end=True` reading starts at the end of the results topic as it is when the
    context is entered, so enter it before producing the video's tasks: results left from an
    earlier run of the same video id are then never mixed in. Otherwise it reads from the start.
    """

    def __init__(self, kafka: KafkaSettings, video_id: str, *, from_end: bool = False) -> None:
        self._kafka = kafka
        self._key = video_id.encode()
        self._from_end = from_end
        # Subscribed without a group, the consumer is assigned every partition of the topic.
        self._consumer = _consumer(kafka, None, kafka.results_topic)
        self._failures = FailureStreak(RetryLog(logger, "poll_failed"))
        self._positions: ReadPositions[TopicPartition] = ReadPositions()
        self.assembly = Assembly(video_id)

    async def __aenter__(self) -> VideoResults:
        try:
            await _start(self._consumer, self._kafka, None)
            if self._from_end:
                await self._seek_to_end()
        except BaseException:
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def _seek_to_end(self) -> None:
        # Resolved now, not lazily at the first fetch, which may come after results already arrived.
        partitions = list(self._consumer.assignment())
        try:
            ends = await self._consumer.end_offsets(partitions)
        except KafkaError as exc:
            raise kafka_failure(exc, self._kafka, KafkaUse(self._kafka.results_topic)) from None
        for tp, offset in ends.items():
            self._consumer.seek(tp, offset)
            # An out-of-range reset to the log start must not bring back an earlier run's results.
            self._positions.start_at(tp, offset)

    async def poll(self) -> list[FrameResult]:
        """Wait up to POLL_TIMEOUT_MS for results; add this video's to `assembly` and return the new ones."""
        try:
            batch = await self._consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
        except KafkaError as exc:
            _raise_if_denied(exc, self._kafka, None)
            await self._failures.failed(exc)
            return []
        self._failures.passed()
        accepted = []
        for tp, records in batch.items():
            for record in records:
                # A record read again after a position reset is no duplicate; keyed by video id,
                # other videos' results are skipped without decoding them.
                if not self._positions.first_read(tp, record.offset) or (
                    record.key is not None and record.key != self._key
                ):
                    continue
                result = decode_result(record)
                if result is not None and result.video_id == self.assembly.video_id and self.assembly.add(result):
                    accepted.append(result)
        return accepted

    async def wait_complete(self, on_progress: Callable[[Assembly], None] | None = None) -> Assembly:
        """Poll until every frame is in; bound it with asyncio.timeout()."""
        while not self.assembly.complete:
            if await self.poll() and on_progress is not None:
                on_progress(self.assembly)
        return self.assembly

    async def ordered(self) -> AsyncIterator[FrameResult]:
        """The video's results in frame order, each as soon as every earlier frame is in; ends after the last."""
        while not self.assembly.streamed_all:
            for result in self.assembly.take_in_order():
                yield result
            if not self.assembly.streamed_all:
                await self.poll()


async def ordered_results(kafka: KafkaSettings, video_id: str) -> AsyncIterator[FrameResult]:
    """One video's results in frame order as they become available, read from the start of the topic.

    For a stream that must not see an earlier run's results, enter `VideoResults(..., from_end=True)`
    before producing the tasks and iterate its `ordered()`.
    """
    async with VideoResults(kafka, video_id) as results:
        async for result in results.ordered():
            yield result
