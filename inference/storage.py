"""Fetch stage: frame bytes from S3, size-limited, with backoff on transient errors.

The GET itself is one signed request over a shared aiohttp session: a full
aiobotocore `get_object` spends several times more event-loop CPU per frame
(endpoint rules, hooks, response parsing), and on a GPU the event loop, not the
model, caps a replica's frames per second (docs/performance.md). aioboto3 still
does what it is good at: the credential chain (keys, profiles, IAM roles,
refreshing tokens), SigV4 (botocore's signer) and the bucket's endpoint URL
(resolved once per bucket through a presigned URL, so path-style MinIO and
virtual-hosted AWS addressing both come from botocore's own rules).

A missing object is final (`FrameNotFound`); an oversized one too (`FrameTooLarge`).
Anything that may pass (timeouts, 5xx, throttling, refused connections, bad
credentials) is `StorageUnavailable`, retried by the retry policy (retry.py) for as
long as the caller waits: an S3 outage must stall the partition, not turn healthy
frames into error results.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.exceptions import BotoCoreError
from yarl import URL

from inference.config import S3Settings
from inference.errors import FrameNotFound, FrameTooLarge, StorageUnavailable
from inference.retry import S3_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)

# S3 error codes that no retry can change: the task names something that does not exist.
_FINAL_CODES = {"NoSuchKey", "NoSuchBucket", "InvalidBucketName", "KeyTooLongError", "InvalidArgument"}
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_ERROR_BODY_BYTES = 4096
_PROBE_KEY = "frame-store-probe"


def object_url(base: str, key: str) -> str:
    """The object's URL under its bucket's base URL, the key encoded as botocore encodes it."""
    return base + quote(key, safe="/~")


def status_error(status: int, body: bytes, where: str) -> FrameNotFound | StorageUnavailable:
    """The exception for a non-200 answer: final when the object cannot exist, retryable otherwise."""
    found = _ERROR_CODE.search(body)
    code = found.group(1).decode(errors="replace") if found else ""
    if status == 404 or code in _FINAL_CODES:
        return FrameNotFound(f"{where}: {code or status}")
    return StorageUnavailable(f"{where}: HTTP {status} {code}".rstrip())


class FrameStore:
    """An S3 reader for frames with bounded concurrency; use as an async context manager."""

    def __init__(self, settings: S3Settings, max_frame_bytes: int, concurrency: int = 16) -> None:
        self._settings = settings
        self._max_frame_bytes = max_frame_bytes
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client: Any = None
        self._credentials: Any = None
        self._http: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}
        self._stack = contextlib.AsyncExitStack()
        self._outage_log = RetryLog(logger, "s3_unavailable")

    async def __aenter__(self) -> FrameStore:
        options = self._settings.client_options()
        endpoint_url = options.pop("endpoint_url", None)
        session = aioboto3.Session(**options)
        config = AioConfig(retries={"max_attempts": 1, "mode": "standard"})
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=endpoint_url, config=config)
        )
        self._credentials = await session.get_credentials()
        self._http = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                timeout=aiohttp.ClientTimeout(sock_connect=5, sock_read=30),
                auto_decompress=False,
                # S3 sets no cookies worth keeping; the default jar filtered every request and response.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()

    async def fetch(self, bucket: str | None, key: str, describe: dict[str, object]) -> bytes:
        """The object's bytes; retries transient failures until they pass or the caller cancels."""
        bucket = bucket or self._settings.frames_bucket

        async def get() -> bytes:
            async with self._semaphore:
                return await self._get(bucket, key)

        return await retry(get, backoff=S3_BACKOFF, log=self._outage_log, fields=describe)

    async def _get(self, bucket: str, key: str) -> bytes:
        assert self._http is not None, "FrameStore is used outside its context"
        url = object_url(await self._base_url(bucket), key)
        where = f"s3://{bucket}/{key}"
        try:
            headers = await self._signed_headers(url)
            async with self._http.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    raise status_error(response.status, await response.content.read(_ERROR_BODY_BYTES), where)
                return await self._read_body(response, where)
        except (aiohttp.ClientError, BotoCoreError, OSError, TimeoutError) as exc:
            raise StorageUnavailable(f"{where}: {type(exc).__name__}: {exc}") from None

    async def _read_body(self, response: aiohttp.ClientResponse, where: str) -> bytes:
        # The size is known from the headers before the body is read; a chunked answer is counted as it comes.
        declared = response.content_length or 0
        if declared > self._max_frame_bytes:
            raise FrameTooLarge(f"{where} is {declared} bytes, over the limit of {self._max_frame_bytes}")
        chunks, received = [], 0
        async for chunk in response.content.iter_any():
            received += len(chunk)
            if received > self._max_frame_bytes:
                raise FrameTooLarge(f"{where} is over the limit of {self._max_frame_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _base_url(self, bucket: str) -> str:
        base = self._bases.get(bucket)
        if base is None:
            params = {"Bucket": bucket, "Key": _PROBE_KEY}
            parts = urlsplit(await self._client.generate_presigned_url("get_object", Params=params))
            base = f"{parts.scheme}://{parts.netloc}{parts.path.removesuffix(_PROBE_KEY)}"
            self._bases[bucket] = base
        return base

    async def _signed_headers(self, url: str) -> dict[str, str]:
        """SigV4 headers for a GET of `url`; none without credentials (a public bucket)."""
        if self._credentials is None:
            return {}
        request = AWSRequest(method="GET", url=url)
        S3SigV4Auth(await self._credentials.get_frozen_credentials(), "s3", self._settings.region).add_auth(request)
        return dict(request.headers.items())
