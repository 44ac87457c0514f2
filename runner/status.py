"""Video status: one record per video on the compacted status topic, keyed by video_id.

Whatever assembles a video (`runner run`, `runner collect`, `runner serve`) keeps a `StatusBoard`:
the latest record of every video (read from the topic at start, so a restarted assembler carries
on from what was published instead of starting over) and a producer that publishes a video's
record on each change of state at once, and changes of progress at most once a second.

A board is `required` in `runner serve`, whose API is the status: a status topic it cannot use
stops it at start. `runner run` and `runner collect` write their documents whatever happens to
the status: their board logs one warning and carries on without publishing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inference.config import KafkaSettings
from inference.logs import log_event
from inference.messages import VideoId
from inference.priority import Priority
from inference.registry import caught_up
from inference.retry import FailureStreak, RetryLog
from runner.errors import KafkaUse, kafka_failure

logger = logging.getLogger(__name__)

VideoState = Literal["queued", "running", "completed", "failed"]
PriorityName = Literal["high", "normal", "low"]
# The task topics' levels (inference.priority) by the names a status record gives them.
LEVELS: dict[PriorityName, Priority] = {"high": Priority.HIGH, "normal": Priority.NORMAL, "low": Priority.LOW}
NAMES: dict[Priority, PriorityName] = {level: name for name, level in LEVELS.items()}
TERMINAL_STATES: frozenset[str] = frozenset({"completed", "failed"})
# Progress between changes of state goes out at most this often per video.
PROGRESS_INTERVAL_S = 1.0
FLUSH_TICK_S = 0.2
KAFKA_REQUEST_TIMEOUT_MS = 10_000
READ_POLL_MS = 200


def utc_now() -> datetime:
    return datetime.now(UTC)


class VideoStatus(BaseModel):
    """A video's progress through the pipeline: the value on the status topic."""

    # Every field is written (null where unknown): the schema says so.
    model_config = ConfigDict(
        frozen=True, extra="ignore", protected_namespaces=(), json_schema_serialization_defaults_required=True
    )

    video_id: VideoId
    state: VideoState = Field(
        description="queued: accepted, not yet split; running: tasks announced; "
        "completed: every frame answered, the document is at result_uri; failed: given up"
    )
    total_frames: int | None = Field(None, ge=1, description="Sampled frames; null until the split counted them")
    answered: int = Field(0, ge=0, description="Distinct frames with a result (ok or error)")
    errors: int = Field(0, ge=0, description="Frames answered with status error")
    priority: PriorityName = Field("normal", description="The task topic the video's tasks went to")
    model: str | None = Field(None, description="Requested model (NAME or NAME@VERSION); null: the workers' own")
    created_at: datetime = Field(description="When the video was accepted (UTC)")
    updated_at: datetime = Field(description="When this record was made (UTC)")
    result_uri: str | None = Field(None, description="s3://BUCKET/<video_id>.json once completed")

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


def decode_status(raw: bytes | None) -> VideoStatus | None:
    """The record in a status value, or None for a tombstone or a value that is not one (logged)."""
    if raw is None:
        return None
    try:
        return VideoStatus.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        log_event(logger, logging.WARNING, "status_skipped", error=str(exc)[:300])
        return None


def _reader(kafka: KafkaSettings) -> AIOKafkaConsumer:
    # Without a group the consumer is assigned every partition: the whole board.
    return AIOKafkaConsumer(
        kafka.status_topic,
        **kafka.client_options(),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
    )


class StatusBoard:
    """The latest status of every video this process knows, and the producer that publishes its changes."""

    def __init__(self, kafka: KafkaSettings, *, required: bool, history: bool = True) -> None:
        self._kafka = kafka
        self._required = required
        self._history = history
        self._statuses: dict[str, VideoStatus] = {}
        self._pending: dict[str, float] = {}
        self._published_at: dict[str, float] = {}
        self._producer: AIOKafkaProducer | None = None
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._loaded_to: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Read the topic to its end, then publish; a board that is not `required` degrades to memory."""
        producer = AIOKafkaProducer(**self._kafka.client_options(), acks="all", enable_idempotence=True,
                                    request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS, linger_ms=5)  # fmt: skip
        try:
            await producer.start()
            await producer.partitions_for(self._kafka.status_topic)
            if self._history:
                await self.load()
        except (KafkaError, OSError) as exc:
            await producer.stop()
            if self._required:
                raise kafka_failure(exc, self._kafka, KafkaUse(self._kafka.status_topic, "Write")) from None
            log_event(logger, logging.WARNING, "status_unavailable", topic=self._kafka.status_topic, error=repr(exc))
            return
        self._producer = producer
        self._flusher = asyncio.create_task(self._flush_loop(), name="status-flush")

    async def stop(self) -> None:
        """Publish what is pending, then close the producer."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        with contextlib.suppress(KafkaError, OSError):
            await self._flush(force=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def load(self) -> None:
        """Every record on the topic up to its end as the read starts."""
        consumer = _reader(self._kafka)
        await consumer.start()
        try:
            ends = self._loaded_to = await consumer.end_offsets(list(consumer.assignment()))
            while not await caught_up(consumer, ends):
                for status in await poll_statuses(consumer):
                    self.take(status)
        finally:
            await consumer.stop()

    async def follow(self) -> None:
        """Keep taking records (other assemblers publish too) from where `load` ended, until cancelled."""
        consumer = _reader(self._kafka)
        failures = FailureStreak(RetryLog(logger, "status_poll_failed"))
        await consumer.start()
        try:
            for tp, offset in self._loaded_to.items():
                consumer.seek(tp, offset)
            while True:
                try:
                    statuses = await poll_statuses(consumer)
                except KafkaError as exc:
                    await failures.failed(exc)
                    continue
                failures.passed()
                for status in statuses:
                    self.take(status)
        finally:
            await consumer.stop()

    def take(self, status: VideoStatus) -> None:
        """A record read from the topic: kept unless this board holds a newer one."""
        held = self._statuses.get(status.video_id)
        if held is None or status.updated_at >= held.updated_at:
            self._statuses[status.video_id] = status

    def get(self, video_id: str) -> VideoStatus | None:
        return self._statuses.get(video_id)

    def videos(self) -> list[VideoStatus]:
        """Newest first."""
        return sorted(self._statuses.values(), key=lambda s: (s.created_at, s.video_id), reverse=True)

    def update(self, video_id: str, **changes: Any) -> VideoStatus:
        """Merge `changes` into the video's record (a new one is queued) and schedule its publication."""
        now = utc_now()
        held = self._statuses.get(video_id)
        if held is None:
            status = VideoStatus.model_validate({"video_id": video_id, "state": "queued", "created_at": now,
                                                 "updated_at": now, **changes})  # fmt: skip
        else:
            status = held.model_copy(update={**changes, "updated_at": now})
            if status.model_dump(exclude={"updated_at"}) == held.model_dump(exclude={"updated_at"}):
                return held
        self._statuses[status.video_id] = status
        changed_state = held is None or held.state != status.state
        last = self._published_at.get(video_id, -PROGRESS_INTERVAL_S)
        due = time.monotonic() if changed_state else last + PROGRESS_INTERVAL_S
        # A change of state still waiting to go out is not put off by progress that follows it.
        self._pending[video_id] = min(due, self._pending.get(video_id, due))
        if changed_state:
            self._wake.set()
        return status

    async def publish_now(self, video_id: str) -> None:
        """Publish the video's record and wait for Kafka's acknowledgement (before offsets move past it)."""
        status = self._statuses.get(video_id)
        if status is None or self._producer is None:
            return
        self._pending.pop(video_id, None)
        try:
            await self._send(status)
        except KafkaError as exc:
            if self._required:
                raise
            log_event(logger, logging.WARNING, "status_publish_failed", video_id=video_id, error=repr(exc))

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TICK_S):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self._flush(force=False)
            except KafkaError as exc:
                # The records stay pending: the next tick publishes their latest state.
                log_event(logger, logging.WARNING, "status_publish_failed", error=repr(exc))

    async def _flush(self, *, force: bool) -> None:
        now = time.monotonic()
        due = [video_id for video_id, at in self._pending.items() if force or at <= now]
        for video_id in due:
            del self._pending[video_id]
            await self._send(self._statuses[video_id])

    async def _send(self, status: VideoStatus) -> None:
        if self._producer is None:
            return
        self._published_at[status.video_id] = time.monotonic()
        try:
            await self._producer.send_and_wait(self._kafka.status_topic, status.to_json(), key=status.video_id.encode())
        except KafkaError:
            self._pending.setdefault(status.video_id, time.monotonic())
            raise


async def poll_statuses(consumer: AIOKafkaConsumer) -> list[VideoStatus]:
    batch = await consumer.getmany(timeout_ms=READ_POLL_MS)
    return [status for records in batch.values() for r in records if (status := decode_status(r.value)) is not None]


@contextlib.asynccontextmanager
async def status_board(kafka: KafkaSettings, *, required: bool, history: bool = True) -> AsyncIterator[StatusBoard]:
    """A started board; `history=False` skips reading the topic (a new job needs no earlier records)."""
    board = StatusBoard(kafka, required=required, history=history)
    await board.start()
    try:
        yield board
    finally:
        await board.stop()
