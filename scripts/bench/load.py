"""The bench's load: frames staged in S3, offered as tasks on Kafka, read back as results."""

from __future__ import annotations

import asyncio
import time

import cv2
import numpy as np
import orjson

from scripts.bench.readings import Sample
from scripts.synthetic import make_frame

PARTITIONS = 6
VIDEOS_PER_PARTITION = 2


def frames(n: int, width: int = 640, height: int = 360) -> list[bytes]:
    """`n` JPEG frames of synthetic shapes, the same for every run (a fixed seed)."""
    rng = np.random.default_rng(7)
    out = []
    for _ in range(n):
        image, _ = make_frame(rng, width, height)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        out.append(bytes(data))
    return out


def balanced_video_ids() -> list[str]:
    """Video ids that Kafka's default partitioner spreads evenly, VIDEOS_PER_PARTITION per partition.

    Tasks are keyed by video, so a hash-skewed set of ids loads one replica more than another and
    caps the group-scaling ratio by luck rather than by the worker.
    """
    from aiokafka.partitioner import DefaultPartitioner

    partitioner, partitions = DefaultPartitioner(), list(range(PARTITIONS))
    chosen: dict[int, list[str]] = {p: [] for p in partitions}
    i = 0
    while any(len(ids) < VIDEOS_PER_PARTITION for ids in chosen.values()):
        video_id = f"bench-{i}"
        ids = chosen[partitioner(video_id.encode(), partitions, partitions)]
        if len(ids) < VIDEOS_PER_PARTITION:
            ids.append(video_id)
        i += 1
    return [video_id for p in partitions for video_id in chosen[p]]


async def stage(
    env: dict[str, str], data: list[bytes], tag: str, fields: dict[str, str] | None = None
) -> list[tuple[bytes, bytes]]:
    """Upload the frames once per run and return the task records (not yet produced), with `fields` in each."""
    import aioboto3
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"])
    await admin.start()
    # The broker stamps each record as it appends it: the latency is from a task's arrival in Kafka
    # to its result's, so a producer's linger and its round trip count, and no two clocks are mixed.
    appended = {"message.timestamp.type": "LogAppendTime"}
    await admin.create_topics(
        [
            NewTopic(f"{tag}-tasks", PARTITIONS, 1, topic_configs=appended),
            NewTopic(f"{tag}-results", PARTITIONS, 1, topic_configs=appended),
            NewTopic(f"{tag}-dlq", 1, 1),
        ]
    )
    await admin.close()
    session = aioboto3.Session(
        aws_access_key_id=env["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=env["S3_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    records, videos = [], balanced_video_ids()
    async with session.client("s3", endpoint_url=env["S3_ENDPOINT_URL"]) as s3:
        for i, body in enumerate(data):
            video, key = videos[i % len(videos)], f"bench/{tag}/{i:06d}.jpg"
            await s3.put_object(Bucket="frames", Key=key, Body=body)
            task = {"video_id": video, "frame_id": i, "s3_key": key, "total_frames": len(data), **(fields or {})}
            records.append((video.encode(), orjson.dumps(task)))
    return records


async def produce(env: dict[str, str], topic: str, records: list[tuple[bytes, bytes]], rate: float | None) -> None:
    """Send the records, all at once or paced at `rate` per second."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], acks="all")
    await producer.start()
    started = time.perf_counter()
    try:
        for i, (key, value) in enumerate(records):
            if rate:
                await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))  # paces the offered load
            await producer.send(topic, value, key=key)
        await producer.flush()
    finally:
        await producer.stop()


async def await_results(
    env: dict[str, str], tasks_topic: str, results_topic: str, count: int
) -> tuple[float, list[Sample]]:
    """Seconds from the first task to the last result, and a sample per result in arrival order."""
    from aiokafka import AIOKafkaConsumer

    stages: dict[int, dict[str, float]] = {}

    async def read(topic: str, n: int) -> dict[int, int]:
        # Large, infrequent fetches: the latencies come from the records' timestamps, not from when
        # this reader sees them, and a fetch per result would charge the broker (which shares the
        # cores with the pipeline) a request per frame that belongs to the measurement, not the worker.
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"],
                                    auto_offset_reset="earliest", isolation_level="read_committed",
                                    fetch_min_bytes=1 << 20, fetch_max_wait_ms=250)  # fmt: skip
        await consumer.start()
        stamps: dict[int, int] = {}
        deadline = time.monotonic() + 1800
        try:
            while len(stamps) < n and time.monotonic() < deadline:
                for part in (await consumer.getmany(timeout_ms=500)).values():
                    for r in part:
                        message = orjson.loads(r.value)
                        stamps.setdefault(message["frame_id"], r.timestamp)
                        if "timing_ms" in message:
                            stages.setdefault(message["frame_id"], message["timing_ms"])
        finally:
            await consumer.stop()
        return stamps

    done = await read(results_topic, count)
    sent = await read(tasks_topic, count)
    first = min(sent.values())
    timeline = sorted(
        (Sample((done[i] - first) / 1000, float(done[i] - sent[i]), stages.get(i, {})) for i in done if i in sent),
        key=lambda s: s.seconds,
    )
    return (max(done.values()) - first) / 1000, timeline
