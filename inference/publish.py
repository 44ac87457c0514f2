"""Publish stage: results to `inference_results`, unreadable tasks to the DLQ.

The producer is idempotent with acks=all, so a record the broker acknowledged is
durable and written once per send. While the broker is unreachable, sends are
retried with backoff for as long as the caller waits, logging once per interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inference.config import KafkaSettings
from inference.logs import log_event
from inference.storage import backoff_s

logger = logging.getLogger(__name__)
LOG_INTERVAL_S = 30.0


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
        # 1 ms: answers that finish together (the pool's processes, a backlog) share a request.
        # With 5 ms every answer waited for company: p50 22-25 ms at half load against 15-18 with
        # 1 ms or none (A/B, scripts/bench.py); the full-load rate of all three stayed within the
        # run-to-run spread. aiokafka keeps one request in flight per broker, so load batches too.
        "linger_ms": 1,
        "request_timeout_ms": 15000,
    }


def kafka_backoff_s(attempt: int) -> float:
    """The pause before retrying a Kafka step (attempt counts from 1): jittered, 0.5 s doubling to 5 s."""
    return backoff_s(attempt, base_s=0.5, cap_s=5.0)


class Publisher:
    """Sends records and returns only once the broker has acknowledged them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._producer = AIOKafkaProducer(**producer_options(settings))
        self._last_log = 0.0

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, record: Outgoing, describe: dict[str, object]) -> None:
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._producer.send_and_wait(record.topic, record.value, key=record.key, headers=record.headers)
                return
            except KafkaError as exc:
                self._log_retry(exc, attempt, describe)
                await asyncio.sleep(kafka_backoff_s(attempt))

    def _log_retry(self, exc: KafkaError, attempt: int, describe: dict[str, object]) -> None:
        now = time.monotonic()
        if now - self._last_log >= LOG_INTERVAL_S:
            self._last_log = now
            log_event(logger, logging.WARNING, "kafka_publish_retry", error=repr(exc), attempt=attempt, **describe)
