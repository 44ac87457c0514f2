"""Fetch stage: frame bytes from S3, size-limited, with backoff on transient errors.

The GET itself is one signed request over a shared aiohttp session: a full
aiobotocore `get_object` spends several times more event-loop CPU per frame
(endpoint rules, hooks, response parsing), and on a GPU the event loop, not the
model, caps a replica's frames per second (docs/performance.md). aioboto3 still
does what it is good at: the credential chain (keys, profiles, IAM roles,
refreshing tokens) and the bucket's endpoint URL (resolved once per bucket
through a presigned URL, so path-style MinIO and virtual-hosted AWS addressing
both come from botocore's own rules). The signature is signing.py's: the part
of SigV4 a GET needs, with the day's signing key kept.

An answer no retry can change for the task that named the object is final for it
(`FrameNotFound`: no such key or bucket, access denied on the object, a redirect or
wrong-region answer), and so is an oversized object (`FrameTooLarge`). The replica's
own outage (rejected credentials, a skewed clock, 5xx, throttling, timeouts, refused
connections) is `StorageUnavailable`, retried (retry.py) for as long as the caller
waits and reported by `outage()` for the readiness probe: an outage must stall the
partition, not turn healthy frames into error results. One object that keeps failing
while other frames are fetched is not an outage: after `frame_timeout_s` it is final too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from types import TracebackType
from typing import Any
from urllib.parse import quote, urlsplit

import aioboto3
import aiohttp
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError
from yarl import URL

from inference.config import S3Settings
from inference.errors import CredentialsRejected, FrameNotFound, FrameTooLarge, StorageUnavailable
from inference.retry import S3_BACKOFF, RetryLog, retry
from inference.signing import GetSigner

logger = logging.getLogger(__name__)

# S3 error codes that no retry can change for the task: it names something this replica cannot read.
# AccessDenied among them: S3 answers it for a missing key when the caller may not list the bucket.
_FINAL_CODES = {
    "NoSuchKey", "NoSuchBucket", "InvalidBucketName", "KeyTooLongError", "InvalidArgument", "InvalidObjectState",
    "AccessDenied", "AllAccessDisabled", "PermanentRedirect", "TemporaryRedirect", "Redirect",
    "AuthorizationHeaderMalformed", "IllegalLocationConstraintException",
}  # fmt: skip
# Codes that say the replica's credentials or clock are wrong: every frame fails alike until they are fixed.
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "RequestTimeTooSkewed", "TokenRefreshRequired",
    "InvalidToken",
}  # fmt: skip
# Rejected credentials are looked up again (a rotated secret in the credential chain) at most this often.
CREDENTIALS_REFRESH_S = 5.0
_ERROR_CODE = re.compile(rb"<Code>([^<]{1,64})</Code>")
_ERROR_BODY_BYTES = 4096
_PROBE_KEY = "frame-store-probe"


def object_url(base: str, key: str) -> str:
    """The object's URL under its bucket's base URL, the key encoded as botocore encodes it."""
    return base + quote(key, safe="/~")


def status_error(status: int, body: bytes, where: str) -> FrameNotFound | StorageUnavailable:
    """The exception for a non-200 answer: final for the task, or the replica's outage (retried)."""
    found = _ERROR_CODE.search(body)
    code = found.group(1).decode(errors="replace") if found else ""
    answer = f"HTTP {status} {code}".rstrip()
    if code in _CREDENTIAL_CODES:
        return CredentialsRejected(f"{where}: {answer}")
    if status in (301, 307, 403, 404) or code in _FINAL_CODES:
        return FrameNotFound(f"{where}: {answer}")
    return StorageUnavailable(f"{where}: {answer}")


class FrameStore:
    """An S3 reader for frames with bounded concurrency; use as an async context manager."""

    def __init__(
        self, settings: S3Settings, max_frame_bytes: int, frame_timeout_s: float = 60.0, concurrency: int = 16
    ) -> None:
        self._settings = settings
        self._max_frame_bytes = max_frame_bytes
        self._frame_timeout_s = frame_timeout_s
        self._semaphore = asyncio.Semaphore(concurrency)
        self._client: Any = None
        self._credentials: Any = None
        self._credentials_read = 0.0
        # The replica's outage: the latest failure, while no fetch has succeeded since.
        self._outage: str | None = None
        self._last_success = float("-inf")
        self._http: aiohttp.ClientSession | None = None
        self._bases: dict[str, str] = {}
        self._signer = GetSigner(settings.region)
        self._stack = contextlib.AsyncExitStack()
        self._outage_log = RetryLog(logger, "s3_unavailable")

    def _session(self) -> aioboto3.Session:
        """A session that resolves the credentials afresh through the chain (or the keys set)."""
        options = self._settings.client_options()
        options.pop("endpoint_url", None)
        return aioboto3.Session(**options)

    async def __aenter__(self) -> FrameStore:
        session = self._session()
        config = AioConfig(retries={"max_attempts": 1, "mode": "standard"})
        self._client = await self._stack.enter_async_context(
            session.client("s3", endpoint_url=self._settings.endpoint_url, config=config)
        )
        self._credentials = await session.get_credentials()
        self._credentials_read = time.monotonic()
        self._http = await self._stack.enter_async_context(
            aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._settings.max_connections),
                # total: an object that trickles in is cut off like one that never answers.
                timeout=aiohttp.ClientTimeout(total=self._frame_timeout_s, sock_connect=5, sock_read=30),
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

    def outage(self) -> str | None:
        """What fails every fetch since the last success, for the readiness probe; None when S3 serves."""
        return self._outage

    async def fetch(self, bucket: str | None, key: str, describe: dict[str, object]) -> bytes:
        """The object's bytes; retries the replica's outage until it passes or the caller cancels."""
        bucket = bucket or self._settings.frames_bucket
        first_failure: float | None = None

        async def get() -> bytes:
            nonlocal first_failure
            try:
                async with self._semaphore:
                    data = await self._get(bucket, key)
            except StorageUnavailable as exc:
                now = time.monotonic()
                first_failure = first_failure or now
                self._outage = str(exc)
                if self._last_success > first_failure and now - first_failure > self._frame_timeout_s:
                    alone = f"{now - first_failure:.0f}s while other frames were fetched"
                    raise FrameNotFound(f"{exc}, failing for {alone}") from None
                if isinstance(exc, CredentialsRejected):
                    await self._reread_credentials(now)
                raise
            self._last_success = time.monotonic()
            self._outage = None
            return data

        return await retry(get, backoff=S3_BACKOFF, log=self._outage_log, fields=describe)

    async def _reread_credentials(self, now: float) -> None:
        """Look the credentials up again through the chain: a rotated secret is picked up without a restart."""
        if now - self._credentials_read < CREDENTIALS_REFRESH_S:
            return
        self._credentials_read = now
        credentials = await self._session().get_credentials()
        if credentials is not None:
            self._credentials = credentials

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
        return self._signer.headers(url, await self._credentials.get_frozen_credentials())
