"""Split stage: a video file -> sampled JPEG frames in S3 -> one FrameTask per frame on the tasks topic.

Steps (`split_video`):
1. `check_request`: the video id, the sampling options, and that the file opens as a video;
   cheap, so bad input fails (exit 2) before anything connects.
2. `execute_split`: connect to S3 and Kafka and check that the bucket and the topic exist
   (before the long work, so a wrong setting fails fast); decode the file once, keeping no
   pixels, to count the sampled frames (every task carries total_frames, and the container's
   frame count is only an estimate: variable frame rate, damaged tails); decode again,
   JPEG-encode and upload with at most UPLOAD_CONCURRENCY uploads in flight; then produce
   every task in one Kafka transaction.

Memory: at most UPLOAD_CONCURRENCY + 1 encoded frames are held at a time. Keeping every JPEG
to skip the counting pass would hold the whole video (gigabytes for an hour of camera footage).
The counting pass only grabs (no colour conversion, no encoding), so it costs a fraction of
the encoding pass and nothing in memory.

Nothing is half-announced: tasks are produced only after every upload succeeded, inside one
transaction, so read_committed consumers (the workers) see all of a video's tasks or none, even
when the broker fails halfway. The transactional id is per video id, so a split that was killed
mid-transaction is aborted by the next split of the same video instead of holding back the
partition until the transaction times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import orjson
from aiobotocore.config import AioConfig
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from botocore.exceptions import BotoCoreError, ClientError

from inference.config import KafkaSettings, S3Settings
from inference.messages import FrameTask
from inference.priority import Priority, topic_for
from runner.errors import InfrastructureError, InputError, KafkaUse, kafka_errors, unreachable_failure
from runner.ids import require_video_id
from runner.progress import ProgressFactory, silent
from runner.video import encode_jpeg, frame_count_estimate, open_video, retrieve, sampled

UPLOAD_CONCURRENCY = 16
S3_ATTEMPTS = 4
KAFKA_REQUEST_TIMEOUT_MS = 15_000


@dataclass(frozen=True)
class SplitRequest:
    video: Path
    video_id: str
    every: int = 1
    max_frames: int | None = None
    # The model every task asks for ("name" or "name@version"); None: each worker's own.
    model: str | None = None
    # Which of the three task topics the tasks go to (inference/priority.py).
    priority: Priority = Priority.NORMAL

    def topic(self, kafka: KafkaSettings) -> str:
        return topic_for(kafka.tasks_topic, self.priority)


@dataclass(frozen=True)
class SplitSummary:
    video_id: str
    total_frames: int
    uploaded_bytes: int
    seconds: float


async def split_video(
    request: SplitRequest, kafka: KafkaSettings, s3: S3Settings, progress: ProgressFactory = silent
) -> SplitSummary:
    check_request(request)
    return await execute_split(request, kafka, s3, progress)


def check_request(request: SplitRequest) -> None:
    """InputError unless the video id and options are valid and the file opens as a video."""
    require_video_id(request.video_id)
    if request.every < 1:
        raise InputError(f"--every must be at least 1, not {request.every}")
    if request.max_frames is not None and request.max_frames < 1:
        raise InputError(f"--max-frames must be at least 1, not {request.max_frames}")
    with open_video(request.video):
        pass


def _count_sampled(request: SplitRequest, progress: ProgressFactory) -> int:
    with open_video(request.video) as capture:
        estimate = -(-frame_count_estimate(capture) // request.every)
        if request.max_frames is not None:
            estimate = min(estimate, request.max_frames)
        bar = progress("counting", estimate)
        count = 0
        for _ in sampled(capture, request.every, request.max_frames):
            count += 1
            bar.update(count)
        bar.close()
    if count == 0:
        raise InputError(f"{request.video} has no decodable frames")
    return count


async def execute_split(
    request: SplitRequest, kafka: KafkaSettings, s3: S3Settings, progress: ProgressFactory = silent
) -> SplitSummary:
    """Upload every sampled frame, then announce them all; returns only when everything is acknowledged."""
    started = time.perf_counter()
    async with _s3_client(s3) as client, _producer(kafka, request.video_id) as producer:
        await _check_bucket(client, s3)
        await _check_topic(producer, kafka, request.topic(kafka))
        total = await asyncio.to_thread(_count_sampled, request, progress)
        tasks, uploaded_bytes = await _upload_all(client, s3.frames_bucket, request, total, progress)
        await _announce(producer, kafka, request, tasks)
    return SplitSummary(request.video_id, total, uploaded_bytes, time.perf_counter() - started)


@contextlib.asynccontextmanager
async def _s3_client(settings: S3Settings) -> AsyncIterator[Any]:
    config = AioConfig(
        max_pool_connections=max(UPLOAD_CONCURRENCY, settings.max_connections),
        connect_timeout=5,
        read_timeout=30,
        retries={"max_attempts": S3_ATTEMPTS, "mode": "standard"},
    )
    async with aioboto3.Session().client("s3", config=config, **settings.client_options()) as client:
        yield client


async def _check_bucket(client: Any, settings: S3Settings) -> None:
    where = settings.endpoint_url or "AWS"
    try:
        await client.head_bucket(Bucket=settings.frames_bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "?")
        raise InfrastructureError(f"S3 bucket {settings.frames_bucket!r} is not usable at {where}: {code}") from None
    except (BotoCoreError, OSError) as exc:
        raise InfrastructureError(f"cannot reach S3 at {where}: {exc}") from None


@contextlib.asynccontextmanager
async def _producer(kafka: KafkaSettings, video_id: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(
        **kafka.client_options(),
        acks="all",
        enable_idempotence=True,
        transactional_id=(producer_id := split_transactional_id(video_id)),
        request_timeout_ms=KAFKA_REQUEST_TIMEOUT_MS,
        linger_ms=5,
    )
    try:
        with kafka_errors(kafka, KafkaUse(kafka.tasks_topic, "Write", transactional_id=producer_id)):
            try:
                await producer.start()
            except KafkaConnectionError as exc:
                raise await unreachable_failure(exc, kafka) from None
        yield producer
    finally:
        await producer.stop()


async def _check_topic(producer: AIOKafkaProducer, kafka: KafkaSettings, topic: str) -> None:
    # Write, not Describe: Write implies Describe, and Write is what split needs.
    with kafka_errors(kafka, KafkaUse(topic, "Write")):
        await producer.partitions_for(topic)


async def _upload_all(
    client: Any, bucket: str, request: SplitRequest, total: int, progress: ProgressFactory
) -> tuple[list[FrameTask], int]:
    """Every sampled frame in S3, as the tasks that will announce them and the bytes uploaded."""
    frames = _encoded_frames(request, total)
    bar = progress("uploading", total)
    slots = asyncio.Semaphore(UPLOAD_CONCURRENCY)
    tasks: list[FrameTask] = []
    sizes: list[int] = []
    loop = asyncio.get_running_loop()
    try:
        # One thread owns the decoder; leaving the `with` waits for it, so closing `frames` is safe.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="runner-encode") as encoder:
            async with asyncio.TaskGroup() as group:
                while (frame := await loop.run_in_executor(encoder, next, frames, None)) is not None:
                    timestamp_ms, jpeg = frame
                    task = _task(request.video_id, len(tasks), bucket, total, timestamp_ms, request.model)
                    await slots.acquire()
                    group.create_task(_upload(client, task, jpeg, slots, bar.advance))
                    tasks.append(task)
                    sizes.append(len(jpeg))
    except ExceptionGroup as failures:
        raise failures.exceptions[0] from None
    finally:
        frames.close()
        bar.close()
    if len(tasks) < total:
        raise InputError(f"{request.video} gave {total} frames on a first read, {len(tasks)} on a second")
    return tasks, sum(sizes)


def _encoded_frames(request: SplitRequest, total: int) -> Generator[tuple[float, bytes], None, None]:
    with open_video(request.video) as capture:
        for timestamp_ms in sampled(capture, request.every, total):
            yield timestamp_ms, encode_jpeg(retrieve(capture, request.video))


def _task(video_id: str, frame_id: int, bucket: str, total: int, timestamp_ms: float, model: str | None) -> FrameTask:
    return FrameTask(
        video_id=video_id,
        frame_id=frame_id,
        s3_key=f"{video_id}/{frame_id:06d}.jpg",
        bucket=bucket,
        total_frames=total,
        timestamp_ms=timestamp_ms,
        model=model,
    )


async def _upload(
    client: Any, task: FrameTask, body: bytes, slots: asyncio.Semaphore, done: Callable[[], None]
) -> None:
    try:
        await client.put_object(Bucket=task.bucket, Key=task.s3_key, Body=body, ContentType="image/jpeg")
    except (ClientError, BotoCoreError, OSError) as exc:
        raise InfrastructureError(f"upload to s3://{task.bucket}/{task.s3_key} failed: {exc}") from None
    finally:
        slots.release()
    done()


def split_transactional_id(video_id: str) -> str:
    """One per video: a split of the same video that restarts fences the one it replaces."""
    return f"runner-split-{video_id}"


async def _announce(
    producer: AIOKafkaProducer, kafka: KafkaSettings, request: SplitRequest, tasks: list[FrameTask]
) -> None:
    """Produce every task in one transaction; any failure aborts it, so none of them becomes visible."""
    topic = request.topic(kafka)
    announce = KafkaUse(topic, "Write", transactional_id=split_transactional_id(request.video_id),
                        doing="Kafka did not acknowledge the tasks, none were announced")  # fmt: skip
    with kafka_errors(kafka, announce):
        async with producer.transaction():
            sent = [
                await producer.send(
                    topic, orjson.dumps(task.model_dump(mode="json", exclude_none=True)), key=task.video_id.encode()
                )
                for task in tasks
            ]
            outcomes = await asyncio.gather(*sent, return_exceptions=True)
            failure = next((o for o in outcomes if isinstance(o, BaseException)), None)
            if failure is not None:
                raise failure
