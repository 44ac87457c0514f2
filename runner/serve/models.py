"""GET /v1/models: the model registry, read from its compacted topic (key = name, latest record wins)."""

from __future__ import annotations

import logging

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from pydantic import BaseModel, ConfigDict, ValidationError

from inference.config import KafkaSettings
from inference.logs import log_event
from runner.status import caught_up

logger = logging.getLogger(__name__)
READ_TIMEOUT_MS = 5_000
POLL_MS = 200


class RegisteredModel(BaseModel):
    """The current version of a registered model name."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    name: str
    version: str
    uri: str
    sha256: str
    imgsz: int | None = None
    created_at: str | None = None


async def registered_models(kafka: KafkaSettings) -> list[RegisteredModel]:
    """The latest record of every name, by name; a name whose latest record is a tombstone is retired."""
    consumer = AIOKafkaConsumer(**kafka.client_options(), group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", request_timeout_ms=READ_TIMEOUT_MS)  # fmt: skip
    latest: dict[bytes, RegisteredModel | None] = {}
    await consumer.start()
    try:
        if kafka.models_topic not in await consumer.topics():
            return []  # no registry yet
        partitions = consumer.partitions_for_topic(kafka.models_topic) or set()
        assigned = [TopicPartition(kafka.models_topic, p) for p in partitions]
        consumer.assign(assigned)
        ends = await consumer.end_offsets(assigned)
        while not await caught_up(consumer, ends):
            batch = await consumer.getmany(timeout_ms=POLL_MS)
            for records in batch.values():
                for record in records:
                    if record.key is not None:
                        latest[record.key] = _decode(record.value)
    except KafkaError as exc:
        log_event(logger, logging.WARNING, "models_unreadable", topic=kafka.models_topic, error=repr(exc))
        return []
    finally:
        await consumer.stop()
    return sorted((m for m in latest.values() if m is not None), key=lambda m: m.name)


def _decode(value: bytes | None) -> RegisteredModel | None:
    if value is None:
        return None
    try:
        return RegisteredModel.model_validate(orjson.loads(value))
    except (orjson.JSONDecodeError, ValidationError):
        return None
