"""GET /v1/models: the model registry's current records, read as the workers read it (inference/registry.py)."""

from __future__ import annotations

import logging

from aiokafka.errors import KafkaError

from inference.config import KafkaSettings
from inference.kafka_errors import KafkaAccessDenied, KafkaUnreachable
from inference.logs import log_event
from inference.messages import ModelRecord
from inference.registry import ModelRegistry

logger = logging.getLogger(__name__)


async def registered_models(kafka: KafkaSettings) -> list[ModelRecord]:
    """Every registered name's current record, by name; empty (and logged) while the topic cannot be read."""
    registry = ModelRegistry(kafka, "runner-serve")
    try:
        await registry.start()
    except (KafkaError, KafkaAccessDenied, KafkaUnreachable) as exc:
        log_event(logger, logging.WARNING, "models_unreadable", topic=kafka.models_topic, error=repr(exc))
        return []
    finally:
        await registry.stop()
    return registry.names()
