"""Publish stage: results to `inference_results`, unreadable tasks to the DLQ.

The producer is idempotent with acks=all, so a record the broker acknowledged is
durable and written once per send. While the broker is unreachable, sends are
retried with backoff for as long as the caller waits, logging once per interval.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from inference.config import KafkaSettings
from inference.kafka_errors import is_denial, raise_if_denied
from inference.retry import KAFKA_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)


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
    }


class Publisher:
    """Sends records and returns only once the broker has acknowledged them."""

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._producer = AIOKafkaProducer(**producer_options(settings))
        self._retry_log = RetryLog(logger, "kafka_publish_retry")

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def send(self, record: Outgoing, describe: dict[str, object]) -> None:
        """Every Kafka error but a denial is retried, not only those aiokafka flags: a result must not be dropped.

        A denial (a missing ACL) raises KafkaAccessDenied: no retry can grant it.
        """

        async def send() -> None:
            await self._producer.send_and_wait(record.topic, record.value, key=record.key, headers=record.headers)

        try:
            await retry(send, backoff=KAFKA_BACKOFF, log=self._retry_log, retriable=_retriable, fields=describe)
        except KafkaError as exc:
            raise_if_denied(exc, self._settings, operation="Write", topic=record.topic)
            raise


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and not is_denial(exc)
