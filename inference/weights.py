"""Registry weights on local disk: downloaded from S3 on first use, verified by sha256, kept by checksum.

`MODEL_CACHE_DIR/<sha256>/<object's file name>` holds a version's weights once their checksum matched;
a download goes to a temporary file in the same folder and is renamed into place only then, so
a crash never leaves a file the cache would trust. Many frames asking for the same weights at
once share one download. The event loop never waits on the disk: writes and hashing run in a
thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import tempfile
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any

import aioboto3
import orjson
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from inference.backends import file_sha256
from inference.config import S3Settings
from inference.errors import ModelUnavailable, StorageUnavailable
from inference.logs import log_event
from inference.messages import ModelRecord
from inference.retry import S3_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)
# Weights of a detector are megabytes; a record pointing at something far larger is a mistake.
MAX_WEIGHTS_BYTES = 2 * 1024**3
CHUNK_BYTES = 1024 * 1024
# Beside each version's weights in the models bucket: its record, for pins of versions compacted away.
MANIFEST_NAME = "model.json"
# What S3 answers when the object is not there for us to read: no retry can change it.
_MISSING = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "404", "403", "NotFound"}


def manifest_key(name: str, version: str) -> str:
    return f"{name}/{version}/{MANIFEST_NAME}"


class WeightsCache:
    """Local, verified copies of registry weights; use as an async context manager."""

    def __init__(self, s3: S3Settings, cache_dir: Path) -> None:
        self._s3 = s3
        self._dir = cache_dir
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()
        self._downloads: dict[Path, asyncio.Task[Path]] = {}
        # Files this replica hashed itself (or wrote after hashing).
        self._verified: set[Path] = set()
        self._log = RetryLog(logger, "model_download_retry")

    async def __aenter__(self) -> WeightsCache:
        options = self._s3.client_options()
        endpoint = options.pop("endpoint_url", None)
        config = AioConfig(retries={"max_attempts": 1, "mode": "standard"})
        session = aioboto3.Session(**options)
        self._client = await self._stack.enter_async_context(session.client("s3", endpoint_url=endpoint, config=config))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for download in self._downloads.values():
            download.cancel()
        await self._stack.aclose()

    async def local_file(self, record: ModelRecord) -> Path:
        """The verified weights of `record`, downloaded on the first call for its checksum."""
        path = self._dir / record.sha256 / PurePosixPath(record.bucket_and_key[1]).name
        if path in self._verified:
            return path
        if path.is_file() and await asyncio.to_thread(file_sha256, path) == record.sha256:
            self._verified.add(path)
            return path
        download = self._downloads.get(path)
        if download is None or (download.done() and download.exception() is not None):
            download = self._downloads[path] = asyncio.create_task(self._download(record, path))
        # Shielded: one frame giving up (a drain, a timeout) must not cancel the others' download.
        return await asyncio.shield(download)

    async def manifest(self, name: str, version: str) -> ModelRecord | None:
        """The record stored beside a version's weights; None when there is none to read."""
        key = manifest_key(name, version)
        try:
            response = await self._client.get_object(Bucket=self._s3.models_bucket, Key=key)
            async with response["Body"] as body:
                raw = await body.read()
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise StorageUnavailable(f"s3://{self._s3.models_bucket}/{key}: {_code(exc)}") from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"s3://{self._s3.models_bucket}/{key}: {type(exc).__name__}") from None
        try:
            record = ModelRecord.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError):
            return None
        return record if (record.name, record.version) == (name, version) else None

    async def _download(self, record: ModelRecord, path: Path) -> Path:
        started = asyncio.get_running_loop().time()
        fields: dict[str, object] = {"model": record.name, "version": record.version}
        await retry(lambda: self._fetch_to(record, path), backoff=S3_BACKOFF, log=self._log, fields=fields)
        seconds = round(asyncio.get_running_loop().time() - started, 2)
        log_event(logger, logging.INFO, "model_downloaded", uri=record.uri, seconds=seconds, **fields)
        return path

    async def _fetch_to(self, record: ModelRecord, path: Path) -> None:
        bucket, key = record.bucket_and_key
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        try:
            response = await self._client.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ModelUnavailable(f"model {record.ref}: {record.uri} cannot be read ({_code(exc)})") from None
            raise StorageUnavailable(f"{record.uri}: {_code(exc)}") from None
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{record.uri}: {type(exc).__name__}: {exc}") from None
        if response.get("ContentLength", 0) > MAX_WEIGHTS_BYTES:
            raise ModelUnavailable(f"model {record.ref}: {record.uri} is over {MAX_WEIGHTS_BYTES} bytes")
        fd, scratch = tempfile.mkstemp(prefix=".download-", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                digest = await self._stream(response["Body"], out, record)
            if digest != record.sha256:
                raise ModelUnavailable(f"model {record.ref}: checksum mismatch, {record.uri} has sha256 {digest}")
            await asyncio.to_thread(os.replace, scratch, path)
            self._verified.add(path)
        finally:
            await asyncio.to_thread(Path(scratch).unlink, missing_ok=True)

    async def _stream(self, body: Any, out: Any, record: ModelRecord) -> str:
        digest = hashlib.sha256()
        received = 0
        try:
            async with body:
                while chunk := await body.read(CHUNK_BYTES):
                    received += len(chunk)
                    if received > MAX_WEIGHTS_BYTES:
                        raise ModelUnavailable(f"model {record.ref}: {record.uri} is over {MAX_WEIGHTS_BYTES} bytes")
                    await asyncio.to_thread(_write_and_hash, out, digest, chunk)
        except (BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{record.uri}: {type(exc).__name__}: {exc}") from None
        return digest.hexdigest()


def _write_and_hash(out: Any, digest: Any, chunk: bytes) -> None:
    out.write(chunk)
    digest.update(chunk)


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", "")) or str(
        exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "")
    )
