"""The fetch stage against the real S3 server: signed GETs, final errors, retried ones."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from pydantic import SecretStr

from inference.config import S3Settings
from inference.errors import FrameNotFound, FrameTooLarge
from inference.storage import FrameStore
from tests.stack import Endpoints
from tests.support import upload

# Keys a splitter may well write: spaces, reserved and non-ASCII characters must sign as S3 expects.
AWKWARD_KEYS = ["plain/0.jpg", "with space/1 + 2=3&4.jpg", "ünïcødé/€/5.jpg", "marks/a~b_c-d.e!f'g(h)*;@$,%41.jpg"]


def settings(stack: Endpoints, secret: str | None = None) -> S3Settings:
    return S3Settings(
        endpoint_url=stack.s3_endpoint_url,
        access_key_id=stack.s3_access_key_id,
        secret_access_key=SecretStr(secret or stack.s3_secret_access_key),
        region=stack.s3_region,
    )


@pytest.fixture
def prefix() -> str:
    return f"storage-{uuid.uuid4().hex[:8]}"


async def test_fetch_returns_the_bytes_of_awkwardly_named_keys(stack: Endpoints, prefix: str) -> None:
    objects = {f"{prefix}/{key}": f"body of {key}".encode() * 100 for key in AWKWARD_KEYS}
    await upload(stack, objects)
    async with FrameStore(settings(stack), max_frame_bytes=10**6) as store:
        # A request S3 refuses is retried forever, so a signing mistake shows as this deadline passing.
        fetched = {key: await asyncio.wait_for(store.fetch(None, key, {}), 30) for key in objects}
    assert fetched == objects


async def test_missing_key_or_bucket_is_final(stack: Endpoints, prefix: str) -> None:
    async with FrameStore(settings(stack), max_frame_bytes=10**6) as store:
        with pytest.raises(FrameNotFound, match="NoSuchKey"):
            await store.fetch(None, f"{prefix}/missing.jpg", {})
        with pytest.raises(FrameNotFound, match="NoSuchBucket"):
            await store.fetch(f"no-bucket-{uuid.uuid4().hex[:8]}", f"{prefix}/missing.jpg", {})


async def test_an_object_over_the_limit_is_refused(stack: Endpoints, prefix: str) -> None:
    await upload(stack, {f"{prefix}/big.jpg": b"x" * 5000})
    async with FrameStore(settings(stack), max_frame_bytes=4999) as store:
        with pytest.raises(FrameTooLarge, match="5000 bytes"):
            await store.fetch(None, f"{prefix}/big.jpg", {})


async def test_refused_credentials_are_retried_and_logged_not_failed(
    stack: Endpoints, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    await upload(stack, {f"{prefix}/0.jpg": b"frame"})
    async with FrameStore(settings(stack, secret="not-the-secret"), max_frame_bytes=10**6) as store:
        fetch = asyncio.create_task(store.fetch(None, f"{prefix}/0.jpg", {"frame_id": 0}))
        with caplog.at_level(logging.WARNING, logger="inference.storage"):
            done, _ = await asyncio.wait({fetch}, timeout=2)
            fetch.cancel()
    assert not done, "a refused request must be retried, never turned into a frame error"
    outage = [r for r in caplog.records if r.getMessage() == "s3_unavailable"]
    assert outage, "the outage is logged"
    assert "HTTP 403" in str(getattr(outage[0], "error", ""))
