"""Fetch stage: frame bytes from S3 (aioboto3), size-limited, with backoff on transient errors.

A missing object is final (`FrameNotFound`); an oversized one too (`FrameTooLarge`).
Anything that may pass (timeouts, 5xx, throttling, refused connections, bad
credentials) is retried with capped exponential backoff and jitter for as long as
the caller waits: an S3 outage must stall the partition, not turn healthy frames
into error results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from types import TracebackType
from typing import Any

import aioboto3
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from inference.config import S3Settings
from inference.errors import FrameNotFound, FrameTooLarge, StorageUnavailable
from inference.logs import log_event

logger = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound"}
BACKOFF_BASE_S = 0.2
BACKOFF_CAP_S = 10.0
LOG_INTERVAL_S = 30.0


def backoff_s(attempt: int, base_s: float = BACKOFF_BASE_S, cap_s: float = BACKOFF_CAP_S) -> float:
    """Full-jitter exponential backoff (attempt counts from 1)."""
    return random.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))  # noqa: S311 - jitter, not crypto


class FrameStore:
    """An S3 client for frames with bounded concurrency; use as an async context manager."""

    def __init__(self, settings: S3Settings, max_frame_bytes: int, concurrency: int = 16) -> None:
        self._settings = settings
        self._max_frame_bytes = max_frame_bytes
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._last_outage_log = 0.0

    async def __aenter__(self) -> FrameStore:
        session = aioboto3.Session()
        config = AioConfig(
            max_pool_connections=self._settings.max_connections,
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 1, "mode": "standard"},
        )
        self._client = await self._stack.enter_async_context(
            session.client("s3", config=config, **self._settings.client_options())
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    @property
    def client(self) -> Any:
        return self._client

    async def fetch(self, bucket: str | None, key: str, describe: dict[str, object]) -> bytes:
        """The object's bytes; retries transient failures until they pass or the caller cancels."""
        bucket = bucket or self._settings.frames_bucket
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._semaphore:
                    return await self._get(bucket, key)
            except StorageUnavailable as exc:
                self._log_outage(exc, attempt, describe)
                await asyncio.sleep(backoff_s(attempt))

    def _log_outage(self, exc: StorageUnavailable, attempt: int, describe: dict[str, object]) -> None:
        now = time.monotonic()
        if now - self._last_outage_log >= LOG_INTERVAL_S:
            self._last_outage_log = now
            log_event(logger, logging.WARNING, "s3_unavailable", error=str(exc), attempt=attempt, **describe)

    async def _get(self, bucket: str, key: str) -> bytes:
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            raise _translate(exc, bucket, key) from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{type(exc).__name__}: {exc}") from None
        body = response["Body"]
        # The size is known from the response headers before the body is read.
        size = int(response.get("ContentLength") or 0)
        if size > self._max_frame_bytes:
            body.close()
            raise FrameTooLarge(f"object is {size} bytes, over the limit of {self._max_frame_bytes}")
        try:
            async with body as stream:
                data: bytes = await stream.read()
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"reading body: {type(exc).__name__}: {exc}") from None
        if len(data) > self._max_frame_bytes:
            raise FrameTooLarge(f"object is {len(data)} bytes, over the limit of {self._max_frame_bytes}")
        return data


def _translate(exc: ClientError, bucket: str, key: str) -> Exception:
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in _NOT_FOUND:
        return FrameNotFound(f"s3://{bucket}/{key}: {code}")
    if code in {"InvalidBucketName", "KeyTooLongError", "InvalidArgument"}:
        return FrameNotFound(f"s3://{bucket}/{key}: {code}")
    return StorageUnavailable(f"s3://{bucket}/{key}: {code or exc}")
