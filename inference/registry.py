"""The model registry: the compacted models topic read as a table, from its beginning, then followed.

The topic is the source of truth (no database): each name's latest record is its current
version, a null value retires the name. Every replica reads the whole topic at start, before it
takes tasks, and follows it while it runs, so that a `runner models push` reaches every replica
within a poll. A record that cannot be read is logged with its partition and offset and skipped;
it never stops the registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError
from pydantic import ValidationError

from inference.config import KafkaSettings
from inference.kafka_errors import raise_if_denied, unreachable
from inference.logs import log_event
from inference.messages import ModelRecord
from inference.retry import FailureStreak, RetryLog

logger = logging.getLogger(__name__)
POLL_TIMEOUT_MS = 500
# How long a lookup of an unknown name waits for the registry to read what was published before it.
CATCH_UP_TIMEOUT_S = 10.0
# How often the consumer's metadata is refreshed: a topic created after the start is found that fast.
METADATA_MAX_AGE_MS = 5000

OnChange = Callable[[str, ModelRecord | None], None]


class ModelRegistry:
    """Each model name's current record and every version seen, kept up to date from the topic."""

    def __init__(self, kafka: KafkaSettings, client_id: str, on_change: OnChange | None = None) -> None:
        self._kafka = kafka
        self._client_id = client_id
        self._on_change = on_change
        self._latest: dict[str, ModelRecord] = {}
        self._seen: dict[tuple[str, str], ModelRecord] = {}
        self._consumer: AIOKafkaConsumer | None = None
        self._follower: asyncio.Task[None] | None = None
        self._read = asyncio.Condition()
        self._live = False

    def latest(self, name: str) -> ModelRecord | None:
        return self._latest.get(name)

    def version(self, name: str, version: str) -> ModelRecord | None:
        """A version read from the topic; a retired name has none."""
        return self._seen.get((name, version)) if name in self._latest else None

    def names(self) -> list[ModelRecord]:
        return sorted(self._latest.values(), key=lambda record: record.name)

    async def start(self) -> None:
        """Read the topic to its current end, then follow it in the background."""
        consumer = self._consumer = AIOKafkaConsumer(
            **self._kafka.client_options(),
            client_id=f"{self._client_id}-models",
            # No group: aiokafka then assigns this consumer every partition of the topic itself,
            # and new ones as the metadata shows them (checked often: the topic may appear later).
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        try:
            await consumer.start()
            if not await self._subscribe():
                log_event(logger, logging.WARNING, "models_topic_missing", topic=self._kafka.models_topic)
        except KafkaConnectionError as exc:
            await consumer.stop()
            raise await unreachable(self._kafka, exc) from None
        except KafkaError as exc:
            await consumer.stop()
            raise_if_denied(exc, self._kafka, operation="Read", topic=self._kafka.models_topic)
            raise
        self._follower = asyncio.create_task(self._follow())
        await self.catch_up(timeout_s=None)
        self._live = True
        log_event(logger, logging.INFO, "registry_loaded", models={r.name: r.version for r in self.names()})

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        if self._consumer is not None:
            await self._consumer.stop()

    async def _subscribe(self) -> bool:
        """Subscribe to the topic once it exists (aiokafka fails a start on a missing one); False before."""
        assert self._consumer is not None
        if self._consumer.subscription():
            return True
        if self._kafka.models_topic not in await self._consumer.topics():
            return False
        self._consumer.subscribe([self._kafka.models_topic])
        return True

    async def catch_up(self, timeout_s: float | None = CATCH_UP_TIMEOUT_S) -> bool:
        """Wait until everything published to the topic before this call has been read; False on timeout."""
        consumer = self._consumer
        if consumer is None:
            return True
        try:
            async with asyncio.timeout(timeout_s):
                while not consumer.assignment():
                    if self._kafka.models_topic not in await consumer.topics():
                        return True  # nothing was ever published
                    await self._next_poll()
                ends = await consumer.end_offsets(list(consumer.assignment()))
                while not await caught_up(consumer, ends):
                    await self._next_poll()
        except TimeoutError:
            return False
        return True

    async def _next_poll(self) -> None:
        # The follower notifies after every poll, empty ones too: a notification missed between
        # a check and this wait costs one poll interval, never a hang.
        async with self._read:
            await self._read.wait()

    async def _follow(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        failures = FailureStreak(RetryLog(logger, "registry_poll_failed"))
        while True:
            try:
                if not await self._subscribe():
                    # Created later, perhaps by the first `runner models push`: look again soon.
                    await asyncio.sleep(METADATA_MAX_AGE_MS / 1000)
                    await self._notify_all()
                    continue
                batch = await consumer.getmany(timeout_ms=POLL_TIMEOUT_MS)
            except KafkaError as exc:
                await failures.failed(exc)
                continue
            failures.passed()
            for records in batch.values():
                for record in records:
                    self._apply(record)
            await self._notify_all()

    async def _notify_all(self) -> None:
        async with self._read:
            self._read.notify_all()

    def _apply(self, record: ConsumerRecord[bytes, bytes]) -> None:
        where = {"topic": record.topic, "partition": record.partition, "offset": record.offset}
        name = record.key.decode(errors="replace") if record.key else None
        if record.value is None:
            if name is not None and self._latest.pop(name, None) is not None:
                log_event(logger, logging.INFO, "model_retired", model=name, **where)
                self._changed(name, None)
            return
        try:
            model = ModelRecord.model_validate(orjson.loads(record.value))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            log_event(logger, logging.ERROR, "model_record_invalid", key=name, error=str(exc)[:300], **where)
            return
        if name != model.name:
            error = f"record key {name!r} is not its name {model.name!r}"
            log_event(logger, logging.ERROR, "model_record_invalid", key=name, error=error, **where)
            return
        self._seen[(model.name, model.version)] = model
        previous = self._latest.get(model.name)
        self._latest[model.name] = model
        if previous != model:
            log_event(logger, logging.INFO, "model_registered", model=model.name, version=model.version,
                      sha256=model.sha256, **where)  # fmt: skip
            self._changed(model.name, model)

    def _changed(self, name: str, record: ModelRecord | None) -> None:
        # Records read at start describe the state before this replica served anything: no rollout.
        if self._live and self._on_change is not None:
            self._on_change(name, record)


async def caught_up(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Every partition read up to its offset in `ends`."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return False
    return True
