"""Hostile tasks and S3 outages against real Kafka and S3: no task stalls its partition, no outage fails a frame.

The worker runs as production workers do, with an S3 identity that may read the frames bucket
alone; a task naming another bucket is what a writer of the tasks topic could try.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scripts.devstack import S3_READER_KEY, S3_READER_SECRET, free_port
from tests.stack import Endpoints
from tests.support import (
    Topics,
    WorkerProcess,
    committed_total,
    consume,
    produce,
    read_to_end,
    readiness,
    result_values,
    s3_session,
    synthetic_jpeg,
    task,
    upload,
    wait_for,
)

StartWorker = Callable[..., WorkerProcess]
PRIVATE_BUCKET = f"private-{uuid.uuid4().hex[:8]}"


async def private_object(stack: Endpoints) -> str:
    """A bucket the worker's identity may not read, with an object in it."""
    async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
        buckets = {b["Name"] for b in (await s3.list_buckets())["Buckets"]}
        if PRIVATE_BUCKET not in buckets:
            await s3.create_bucket(Bucket=PRIVATE_BUCKET)
        await s3.put_object(Bucket=PRIVATE_BUCKET, Key="secret.jpg", Body=synthetic_jpeg(99))
    return "secret.jpg"


def reader_env(worker_env: dict[str, str], **settings: str) -> dict[str, str]:
    return {**worker_env, "S3_ACCESS_KEY_ID": S3_READER_KEY, "S3_SECRET_ACCESS_KEY": S3_READER_SECRET, **settings}


def by_frame(records: list[Any]) -> dict[int, dict[str, Any]]:
    return {value["frame_id"]: value for value in result_values(records)}


@pytest.mark.parametrize("delivery", ["at_least_once", "exactly_once"])
def test_a_task_for_a_forbidden_bucket_is_answered_and_frames_after_it_flow(
    stack: Endpoints, topics: Topics, worker_env: dict[str, str], start_worker: StartWorker, delivery: str
) -> None:
    video = f"hostile-{delivery}"
    good = {f"{topics.group}/{video}/{i}.jpg": synthetic_jpeg(i) for i in range(3)}
    asyncio.run(upload(stack, good))
    secret = asyncio.run(private_object(stack))
    keys = list(good)
    tasks = [
        task(video, 0, keys[0]),
        # Allowed by the worker's policy, refused by S3: AccessDenied is final for this task alone.
        task(video, 1, secret, bucket=PRIVATE_BUCKET),
        task(video, 2, keys[1]),
        # Outside the allow-list: refused before any request.
        task(video, 3, "anything.jpg", bucket="not-allowed-bucket"),
        task(video, 4, keys[2]),
    ]
    worker = start_worker(
        **reader_env(worker_env, KAFKA_DELIVERY=delivery, S3_ALLOWED_BUCKETS=f"frames,{PRIVATE_BUCKET}")
    )
    worker.wait_started()
    started = time.monotonic()
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, [(video.encode(), t) for t in tasks]))
    records = asyncio.run(consume(stack.bootstrap_servers, topics.results, lambda r: len(r) >= 5, 60))
    answered_s = time.monotonic() - started
    results = by_frame(records)
    assert sorted(results) == [0, 1, 2, 3, 4]
    assert [results[i]["status"] for i in (0, 2, 4)] == ["ok", "ok", "ok"]
    assert results[1]["error"]["code"] == "frame_not_found"
    assert "AccessDenied" in results[1]["error"]["message"]
    assert results[3]["error"]["code"] == "invalid_task"
    assert "not-allowed-bucket" in results[3]["error"]["message"]
    assert answered_s < 30, f"five frames took {answered_s:.1f}s: something held the partition"
    wait_for(lambda: committed_total(stack, topics) == 5, 30, "all five offsets committed", alive=worker.proc)
    assert worker.terminate() == 0


def test_rejected_credentials_fail_no_frame_and_a_rotated_secret_is_picked_up(
    stack: Endpoints, topics: Topics, start_worker: StartWorker, tmp_path: Path
) -> None:
    video = "outage"
    frames = {f"{topics.group}/{video}/{i}.jpg": synthetic_jpeg(i) for i in range(3)}
    asyncio.run(upload(stack, frames))
    credentials = tmp_path / "credentials"
    credentials.write_text(f"[default]\naws_access_key_id = {S3_READER_KEY}\naws_secret_access_key = wrong\n")
    port = free_port()
    chain = {"AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_CONFIG_FILE": str(tmp_path / "none")}
    # Empty keys are unset: the worker takes its credentials from the chain, here the credentials file.
    worker = start_worker(METRICS_PORT=str(port), S3_ACCESS_KEY_ID="", S3_SECRET_ACCESS_KEY="", **chain)
    worker.wait_started()
    tasks = [(video.encode(), task(video, i, key)) for i, key in enumerate(frames)]
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, tasks))
    wait_for(lambda: "S3 outage" in readiness(port)[1], 60, "/readyz to report the S3 outage", alive=worker.proc)
    status, reason = readiness(port)
    assert status == 503
    assert "SignatureDoesNotMatch" in reason or "InvalidAccessKeyId" in reason or "AccessDenied" in reason
    assert asyncio.run(read_to_end(stack.bootstrap_servers, topics.results)) == [], "an outage failed a frame"

    credentials.write_text(
        f"[default]\naws_access_key_id = {S3_READER_KEY}\naws_secret_access_key = {S3_READER_SECRET}\n"
    )
    records = asyncio.run(consume(stack.bootstrap_servers, topics.results, lambda r: len(r) >= 3, 90))
    assert [v["status"] for v in result_values(records)] == ["ok", "ok", "ok"]
    wait_for(lambda: readiness(port)[0] == 200, 30, "/readyz to recover", alive=worker.proc)
    assert S3_READER_SECRET not in worker.log_path.read_text()
