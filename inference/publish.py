"""Publish stage: results to `inference_results`, unreadable tasks to the DLQ.

The producer is idempotent with acks=all, so a record the broker acknowledged is
durable and written once per send. While the broker is unreachable, sends are
retried with backoff for as long as the caller waits, logging once per interval.
A producer whose sequence numbers the broker no longer accepts is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from inference.config import KafkaSettings
from inference.kafka_errors import is_denial, raise_if_denied
from inference.logs import log_event
from inference.retry import KAFKA_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)
# The producer's bound on one record (aiokafka's default, set here so that the DLQ can fit to it).
MAX_REQUEST_BYTES = 1024 * 1024
# The header that marks a DLQ record cut to fit, with the original value's size in bytes.
TRUNCATED_HEADER = "truncated"
# Sequence numbers a batch expired in the accumulator keep consumed, so every later batch to that
# partition is refused; aiokafka flags these not retriable and never takes a new producer id.
RENEW_ON: tuple[type[KafkaError], ...] = (OutOfOrderSequenceNumber, UnknownProducerId)
# Sends failing without one success for this long make the publisher report an outage.
OUTAGE_AFTER_S = 60.0
# The bound on stopping a replaced producer: past twice its request_timeout_ms every batch it
# still holds has expired, so only a producer that will never stop takes longer.
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class Outgoing:
    """One record to produce: a result, or a task on its way to the DLQ."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def producer_options(settings: KafkaSettings) -> dict[str, Any]:
    return {
        **settings.client_options(),
        "acks": "all",
        "enable_idempotence": True,
        # 1 ms: answers that finish together (the pool's processes, a backlog) share a request,
        # and a longer linger only makes every answer wait for company (docs/performance.md).
        "linger_ms": 1,
        "request_timeout_ms": 15000,
        "max_request_size": MAX_REQUEST_BYTES,
    }


def record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    """The size the producer checks against max_request_size (a batch of this record alone)."""
    return int(DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers))


def fit_to_request(record: Outgoing, limit: int = MAX_REQUEST_BYTES) -> Outgoing:
    """The record, its value cut so that it fits `limit`, the cut recorded in a `truncated` header.

    For DLQ records only: a task near the broker's record limit plus the DLQ's headers would be
    refused by the producer on every try, and its partition would never commit past it.
    """
    if record_size(record.key, record.value, record.headers) <= limit:
        return record
    value = record.value or b""
    headers = [*record.headers, (TRUNCATED_HEADER, str(len(value)).encode())]
    excess = record_size(record.key, value, headers) - limit
    # Shorter values also take fewer length bytes, so the cut never falls short of the excess.
    cut = value[: max(0, len(value) - excess)]
    return Outgoing(record.topic, record.key, cut, headers)


class Publisher:
    """Sends records and returns only once the broker has acknowledged them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(**producer_options(settings))
        self._retry_log = RetryLog(logger, "kafka_publish_retry")
        self._renewing = asyncio.Lock()
        self._failing_since: float | None = None

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def outage(self) -> str | None:
        """Why no record was acknowledged for OUTAGE_AFTER_S, for the probes; None otherwise."""
        since = self._failing_since
        if since is None or time.monotonic() - since < OUTAGE_AFTER_S:
            return None
        return f"no result acknowledged by Kafka for {time.monotonic() - since:.0f}s"

    async def send(self, record: Outgoing, describe: dict[str, object]) -> None:
        """Every Kafka error but a denial is retried, not only those aiokafka flags: a result must not be dropped.

        A refused sequence number replaces the producer first (the record is then sent again:
        at_least_once allows a second copy). A denial (a missing ACL) raises KafkaAccessDenied:
        no retry can grant it.
        """

        async def send() -> None:
            producer = self._producer
            try:
                await producer.send_and_wait(record.topic, record.value, key=record.key, headers=record.headers)
            except KafkaError as exc:
                self._failing_since = self._failing_since or time.monotonic()
                if isinstance(exc, RENEW_ON):
                    await self._renew(producer, exc, describe)
                raise
            self._failing_since = None

        try:
            await retry(send, backoff=KAFKA_BACKOFF, log=self._retry_log, retriable=_retriable, fields=describe)
        except KafkaError as exc:
            raise_if_denied(exc, self._settings, operation="Write", topic=record.topic)
            raise

    async def _renew(self, failed: AIOKafkaProducer, exc: KafkaError, describe: dict[str, object]) -> None:
        """Replace `failed` with a started producer (a new producer id), once for all the sends it failed."""
        async with self._renewing:
            if self._producer is not failed:
                return  # another send has replaced it already
            fresh = AIOKafkaProducer(**producer_options(self._settings))
            try:
                await fresh.start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await fresh.stop()
                raise
            self._producer = fresh
        log_event(logger, logging.WARNING, "producer_renewed", error=repr(exc), **describe)
        # Its pending batches fail with it, and each send retries its record on the new producer.
        with contextlib.suppress(KafkaError, TimeoutError):
            # Not wait_for: on Python 3.11 it swallows a cancel that meets a stop already done.
            async with asyncio.timeout(STOP_TIMEOUT_S):
                await failed.stop()


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and not is_denial(exc)
