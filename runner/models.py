"""`runner models push | list`: weights into the models bucket, their record onto the registry topic.

A push uploads the weights to `S3_MODELS_BUCKET` at `<name>/<version>/<file name>` with the
record beside them (`model.json`, so a pinned version stays servable after compaction drops its
record from the topic), then publishes the record keyed by name and returns once every in-sync
replica has it. A version is immutable: pushing other bytes under an existing version fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from botocore.exceptions import BotoCoreError, ClientError

from inference.config import KafkaSettings, S3Settings
from inference.kafka_errors import KafkaAccessDenied, KafkaUnreachable
from inference.messages import MODEL_PART_PATTERN, ModelRecord
from inference.registry import ModelRegistry
from inference.weights import manifest_key
from runner.errors import InfrastructureError, InputError, KafkaUse, kafka_errors, unreachable_failure

_PART = re.compile(rf"^{MODEL_PART_PATTERN}$")


@dataclass(frozen=True)
class ListedModel:
    record: ModelRecord
    size_bytes: int | None


async def registered(kafka: KafkaSettings) -> list[ModelRecord]:
    """Every registered name's current record, read from the topic to its end."""
    registry = ModelRegistry(kafka, "runner")
    try:
        await registry.start()
    except (KafkaAccessDenied, KafkaUnreachable) as exc:
        raise InfrastructureError(str(exc)) from None
    finally:
        await registry.stop()
    return registry.names()


async def push(
    weights: Path, name: str, version: str | None, imgsz: int | None, kafka: KafkaSettings, s3: S3Settings
) -> ModelRecord:
    """Upload `weights` as `name`'s `version` (default: the next integer) and make it the current one."""
    _check_part("--name", name)
    if version is not None:
        _check_part("--version", version)
    data = await asyncio.to_thread(_read, weights)
    current = {record.name: record for record in await registered(kafka)}.get(name)
    async with _s3_client(s3) as client:
        version = version or await _next_version(client, s3.models_bucket, name, current)
        record = ModelRecord(
            name=name,
            version=version,
            uri=f"s3://{s3.models_bucket}/{name}/{version}/{weights.name}",
            sha256=hashlib.sha256(data).hexdigest(),
            imgsz=imgsz if imgsz is not None else await asyncio.to_thread(_checkpoint_imgsz, weights),
            created_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        await _upload(client, s3.models_bucket, record, data)
    await _publish(kafka, record)
    return record


async def listed(kafka: KafkaSettings, s3: S3Settings) -> list[ListedModel]:
    """The registered models with the size of their weights (None where the object is gone)."""
    records = await registered(kafka)
    async with _s3_client(s3) as client:
        sizes = await asyncio.gather(*(_size(client, record) for record in records))
    return [ListedModel(record, size) for record, size in zip(records, sizes, strict=True)]


def _check_part(option: str, value: str) -> None:
    if not _PART.match(value):
        raise InputError(f"{option} {value!r}: 1-64 characters of letters, digits, '.', '_' and '-'")


def _read(weights: Path) -> bytes:
    try:
        return weights.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read weights {weights}: {exc.strerror}") from None


def _checkpoint_imgsz(weights: Path) -> int | None:
    """The imgsz a .pt was trained at; None for other files (the worker reads it when it loads them)."""
    if weights.suffix != ".pt":
        return None
    from inference.backends import checkpoint_imgsz

    try:
        return checkpoint_imgsz(weights)
    except Exception as exc:  # noqa: BLE001 - a file torch cannot read is the user's input error
        raise InputError(f"{weights} is not a YOLO checkpoint: {type(exc).__name__}: {exc}") from None


@contextlib.asynccontextmanager
async def _s3_client(s3: S3Settings) -> AsyncIterator[Any]:
    config = AioConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": 3, "mode": "standard"})
    async with aioboto3.Session().client("s3", config=config, **s3.client_options()) as client:
        yield client


async def _next_version(client: Any, bucket: str, name: str, current: ModelRecord | None) -> str:
    """One more than the highest integer version in the bucket or the registry; "1" for a new name."""
    numbers = [int(current.version)] if current is not None and current.version.isdigit() else []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{name}/", Delimiter="/")
        async for page in pages:
            for prefix in page.get("CommonPrefixes", []):
                version = prefix["Prefix"].removeprefix(f"{name}/").rstrip("/")
                if version.isdigit():
                    numbers.append(int(version))
    except (ClientError, BotoCoreError, OSError) as exc:
        raise InfrastructureError(f"cannot list s3://{bucket}/{name}/: {exc}") from None
    return str(max(numbers, default=0) + 1)


async def _upload(client: Any, bucket: str, record: ModelRecord, data: bytes) -> None:
    key = manifest_key(record.name, record.version)
    existing = await _existing(client, bucket, key)
    if existing is not None and existing.sha256 != record.sha256:
        raise InputError(f"version {record.version} of {record.name} exists with other weights: push a new version")
    weights_key = record.bucket_and_key[1]
    try:
        await client.put_object(Bucket=bucket, Key=weights_key, Body=data, Metadata={"sha256": record.sha256})
        await client.put_object(Bucket=bucket, Key=key, Body=record.to_json(), ContentType="application/json")
    except (ClientError, BotoCoreError, OSError) as exc:
        raise InfrastructureError(f"upload to s3://{bucket}/{weights_key} failed: {exc}") from None


async def _existing(client: Any, bucket: str, key: str) -> ModelRecord | None:
    try:
        response = await client.get_object(Bucket=bucket, Key=key)
        async with response["Body"] as body:
            return ModelRecord.model_validate_json(await body.read())
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise InfrastructureError(f"cannot read s3://{bucket}/{key}: {exc}") from None
    except (BotoCoreError, OSError) as exc:
        raise InfrastructureError(f"cannot reach S3 for s3://{bucket}/{key}: {exc}") from None


async def _publish(kafka: KafkaSettings, record: ModelRecord) -> None:
    producer = AIOKafkaProducer(**kafka.client_options(), acks="all", enable_idempotence=True)
    use = KafkaUse(kafka.models_topic, "Write", doing="Kafka did not acknowledge the model record")
    try:
        with kafka_errors(kafka, use):
            try:
                await producer.start()
            except KafkaConnectionError as exc:
                raise await unreachable_failure(exc, kafka) from None
            await producer.send_and_wait(kafka.models_topic, record.to_json(), key=record.name.encode())
    finally:
        await producer.stop()


async def _size(client: Any, record: ModelRecord) -> int | None:
    bucket, key = record.bucket_and_key
    try:
        head = await client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError, OSError):
        return None
    return int(head["ContentLength"])
