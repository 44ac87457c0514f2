"""The results bucket: completed documents as `<video_id>.json`, named by the status's result_uri.

`runner serve` also keeps each uploaded video (`uploads/<video_id>`) and its annotated copy
(`annotated/<video_id>.mp4`) there. Video ids cannot hold a `/`, so no id reaches another's
keys, and the document keys never start with those prefixes' `/`-separated names.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aioboto3
import orjson
from aiobotocore.config import AioConfig
from botocore.exceptions import BotoCoreError, ClientError

from inference.config import S3Settings
from runner.errors import InfrastructureError

S3_ATTEMPTS = 4
MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
STREAM_CHUNK_BYTES = 1 << 20
S3_ERRORS = (ClientError, BotoCoreError, OSError)


def document_key(video_id: str) -> str:
    return f"{video_id}.json"


def upload_key(video_id: str) -> str:
    return f"uploads/{video_id}"


def annotated_key(video_id: str) -> str:
    return f"annotated/{video_id}.mp4"


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code", "")) in MISSING_CODES


class ResultStore:
    """One bucket through one open client; S3 failures become InfrastructureError naming the object."""

    def __init__(self, client: Any, bucket: str) -> None:
        self._client = client
        self.bucket = bucket

    def for_bucket(self, bucket: str) -> ResultStore:
        """Another bucket through the same client."""
        return ResultStore(self._client, bucket)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    async def check(self) -> None:
        try:
            await self._client.head_bucket(Bucket=self.bucket)
        except S3_ERRORS as exc:
            raise InfrastructureError(f"S3 bucket {self.bucket!r} is not usable: {exc}") from None

    async def put_document(self, video_id: str, document: dict[str, Any]) -> str:
        """Upload a video's assembled document; returns its URI."""
        key = document_key(video_id)
        body = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
        await self._call("put_object", key, Body=body, ContentType="application/json")
        return self.uri(key)

    async def put_file(self, key: str, path: Path, content_type: str, metadata: dict[str, str] | None = None) -> None:
        """Upload a file in parts: never more than a part of it in memory."""
        extra = {"ContentType": content_type, "Metadata": metadata or {}}
        try:
            with path.open("rb") as file:
                await self._client.upload_fileobj(file, self.bucket, key, ExtraArgs=extra)
        except S3_ERRORS as exc:
            raise InfrastructureError(f"upload to {self.uri(key)} failed: {exc}") from None

    async def get_bytes(self, key: str) -> bytes | None:
        """The object, or None when there is none."""
        try:
            response = await self._client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data
        except ClientError as exc:
            if _missing(exc):
                return None
            raise InfrastructureError(f"reading {self.uri(key)} failed: {exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise InfrastructureError(f"reading {self.uri(key)} failed: {exc}") from None

    async def metadata(self, key: str) -> dict[str, str] | None:
        """The object's user metadata, or None when there is no such object."""
        try:
            head = await self._client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _missing(exc):
                return None
            raise InfrastructureError(f"checking {self.uri(key)} failed: {exc}") from None
        except (BotoCoreError, OSError) as exc:
            raise InfrastructureError(f"checking {self.uri(key)} failed: {exc}") from None
        found: dict[str, str] = head.get("Metadata", {})
        return found

    async def exists(self, key: str) -> bool:
        return await self.metadata(key) is not None

    async def download(self, key: str, path: Path) -> None:
        try:
            await self._client.download_file(self.bucket, key, str(path))
        except S3_ERRORS as exc:
            raise InfrastructureError(f"download of {self.uri(key)} failed: {exc}") from None

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        """The object in chunks, for a response body."""
        response = await self._client.get_object(Bucket=self.bucket, Key=key)
        body = response["Body"]
        try:
            async for chunk in body.iter_chunks(STREAM_CHUNK_BYTES):
                yield chunk
        finally:
            body.close()

    async def _call(self, operation: str, key: str, **arguments: Any) -> None:
        try:
            await getattr(self._client, operation)(Bucket=self.bucket, Key=key, **arguments)
        except S3_ERRORS as exc:
            raise InfrastructureError(f"{operation} {self.uri(key)} failed: {exc}") from None


@contextlib.asynccontextmanager
async def result_store(settings: S3Settings) -> AsyncIterator[ResultStore]:
    config = AioConfig(connect_timeout=5, read_timeout=60, retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"})
    async with aioboto3.Session().client("s3", config=config, **settings.client_options()) as client:
        yield ResultStore(client, settings.results_bucket)
