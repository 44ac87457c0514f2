"""kill -9 while tasks stream on all three priority topics, in both delivery modes.

One group consumes `<tasks>.high`, `<tasks>` and `<tasks>.low`; each input partition of each topic
has its own transactional producer in exactly_once (its id names the topic). Two replicas are
killed mid-stream in turn: no task may be lost in either mode, and none answered twice in
exactly_once.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.faults.report import record
from tests.stack import Endpoints
from tests.support import (
    Topics,
    WorkerProcess,
    produce,
    read_to_end,
    result_values,
    upload_video,
    video_tasks,
    wait_for,
)

StartWorker = Callable[..., WorkerProcess]
FRAMES = 60
PER_SECOND = 30.0


def committed(stack: Endpoints, topics: Topics) -> int:
    async def read() -> int:
        consumer = AIOKafkaConsumer(bootstrap_servers=stack.bootstrap_servers, group_id=topics.group)
        await consumer.start()
        try:
            partitions = [TopicPartition(t, p) for t in (topics.high, topics.tasks, topics.low) for p in range(6)]
            return sum([await consumer.committed(tp) or 0 for tp in partitions])
        finally:
            await consumer.stop()

    return asyncio.run(read())


def answered(stack: Endpoints, topics: Topics) -> list[tuple[str, int]]:
    records = asyncio.run(read_to_end(stack.bootstrap_servers, topics.results))
    unique = {(r.partition, r.offset): r for r in records}  # a re-read record is not a second answer
    return [(v["video_id"], v["frame_id"]) for v in result_values([unique[k] for k in sorted(unique)])]


@pytest.mark.parametrize("delivery", ["exactly_once", "at_least_once"])
def test_kill_9_twice_with_tasks_on_the_three_priority_topics(
    stack: Endpoints, priority_topics: Topics, start_worker: StartWorker, delivery: str
) -> None:
    topics = priority_topics
    started = time.monotonic()
    streams = {topics.high: "prio-high", topics.tasks: "prio-normal", topics.low: "prio-low"}

    async def stage() -> dict[str, list[tuple[bytes, bytes]]]:
        staged = {}
        for seed, (topic, video_id) in enumerate(streams.items()):
            keys = list(await upload_video(stack, topics, video_id, FRAMES, seed=seed))
            staged[topic] = video_tasks(video_id, keys)
        return staged

    staged = asyncio.run(stage())
    worker = start_worker(KAFKA_DELIVERY=delivery)
    worker.wait_started()
    senders = [
        threading.Thread(target=lambda t=t, r=r: asyncio.run(produce(stack.bootstrap_servers, t, r, PER_SECOND)))
        for t, r in staged.items()
    ]
    for sender in senders:
        sender.start()
    for mark in (40, 100):
        wait_for(lambda m=mark: len(set(answered(stack, topics))) >= m, 240, f"{mark} answered", alive=worker.proc)
        worker.kill()
        worker = start_worker(KAFKA_DELIVERY=delivery)
        worker.wait_started()
    for sender in senders:
        sender.join()
    total = FRAMES * len(streams)
    wait_for(lambda: committed(stack, topics) >= total, 300, "every task committed", alive=worker.proc)
    keys = answered(stack, topics)
    record(f"kill_9_three_priority_topics[{delivery}]", total, keys, time.monotonic() - started)
    counts = collections.Counter(keys)
    assert set(counts) == {(video_id, i) for video_id in streams.values() for i in range(FRAMES)}
    if delivery == "exactly_once":
        assert max(counts.values()) == 1
    assert worker.terminate() == 0
