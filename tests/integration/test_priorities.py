"""Priorities and overload against the real broker: a high-priority video through a low backlog,
the lag in seconds, and the DLQ guard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from scripts.devstack import free_port
from tests.stack import Endpoints
from tests.support import (
    Topics,
    WorkerProcess,
    consume,
    create_topics,
    produce,
    read_to_end,
    readiness,
    result_values,
    samples,
    synthetic_jpeg,
    task,
    upload,
    wait_for,
)

StartWorker = Callable[..., WorkerProcess]
BACKLOG, VIDEO = 1000, 30
IN_FLIGHT = 16  # WORKER_MAX_IN_FLIGHT of these tests' one process


def answered(stack: Endpoints, topics: Topics, video_prefix: str) -> int:
    values = result_values(asyncio.run(read_to_end(stack.bootstrap_servers, topics.results)))
    return len({(v["video_id"], v["frame_id"]) for v in values if v["video_id"].startswith(video_prefix)})


def video(topics: Topics, video_id: str, key: str, frames: int) -> list[tuple[bytes, bytes]]:
    return [(video_id.encode(), task(video_id, i, key, total_frames=frames)) for i in range(frames)]


def timed_video(stack: Endpoints, topics: Topics, video_id: str, key: str) -> float:
    """Seconds from producing a high-priority video until all its frames are answered."""
    started = time.monotonic()
    asyncio.run(produce(stack.bootstrap_servers, topics.high, video(topics, video_id, key, VIDEO)))

    def complete(records: list) -> bool:  # type: ignore[type-arg]
        return len({r.value for r in records if orjson.loads(r.value)["video_id"] == video_id}) >= VIDEO

    asyncio.run(consume(stack.bootstrap_servers, topics.results, complete, 300))
    return time.monotonic() - started


def lag_seconds(port: int) -> dict[str, float]:
    found = samples(port)
    return {
        f"{dict(labels)['topic']}[{dict(labels)['partition']}]": value
        for (name, labels), value in found.items()
        if name == "inference_consumer_lag_seconds"
    }


def test_a_high_priority_video_overtakes_a_low_backlog_that_keeps_moving(
    stack: Endpoints, priority_topics: Topics, start_worker: StartWorker
) -> None:
    topics = priority_topics
    key = f"{topics.group}/frame.jpg"
    asyncio.run(upload(stack, {key: synthetic_jpeg(5)}))
    port = free_port()
    worker = start_worker(WORKER_MAX_IN_FLIGHT=str(IN_FLIGHT), WORKER_METRICS_PORT=str(port))
    worker.wait_started()
    idle_s = timed_video(stack, topics, "idle-high", key)

    backlog = [record for i in range(12) for record in video(topics, f"backlog-{i}", key, BACKLOG // 12)]
    asyncio.run(produce(stack.bootstrap_servers, topics.low, backlog))
    wait_for(lambda: answered(stack, topics, "backlog-") >= 50, 240, "the backlog under way", alive=worker.proc)
    wait_for(lambda: max(lag_seconds(port).values(), default=0) > 0, 60, "lag in seconds above 0")
    low_before = answered(stack, topics, "backlog-")
    busy_s = timed_video(stack, topics, "busy-high", key)
    low_during = answered(stack, topics, "backlog-") - low_before
    print(f"30-frame high video: idle {idle_s:.2f} s, through a {BACKLOG}-frame low backlog {busy_s:.2f} s "  # noqa: T201
          f"(x{busy_s / idle_s:.2f}); low frames answered meanwhile: {low_during}")  # fmt: skip
    assert low_during >= 1, "the low level slows down but never stops"
    # What was in flight when the video came finishes; beyond that the low level keeps its share.
    assert low_during <= IN_FLIGHT + VIDEO, f"{low_during} low frames went ahead of the high video"
    assert answered(stack, topics, "backlog-") < len(backlog), "the video did not wait for the backlog"

    wait_for(lambda: answered(stack, topics, "backlog-") == len(backlog), 600, "the backlog done", alive=worker.proc)
    wait_for(lambda: set(lag_seconds(port).values()) == {0.0}, 60, "lag in seconds back to 0 on every partition")
    assert {name.split("[")[0] for name in lag_seconds(port)} >= {topics.low, topics.high}
    assert worker.terminate() == 0


def test_a_burst_of_unreadable_tasks_trips_the_guard_and_a_raised_ratio_goes_on(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    key = f"{topics.group}/frame.jpg"
    asyncio.run(upload(stack, {key: synthetic_jpeg(6)}))
    bad = [(b"burst", b"{not json %d" % i) for i in range(100)]
    good = video(topics, "burst", key, 10)
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, bad + good))  # one key: one partition, in order
    port = free_port()
    guarded = {"WORKER_DLQ_WINDOW": "40", "WORKER_MAX_IN_FLIGHT": str(IN_FLIGHT)}
    worker = start_worker(**guarded, WORKER_METRICS_PORT=str(port))
    wait_for(lambda: any(line.get("event") == "dlq_guard_tripped" for line in worker.log_lines()), 120,
             "the DLQ guard to trip", alive=worker.proc)  # fmt: skip
    status, reason = readiness(port)
    assert status == 503 and "WORKER_DLQ_MAX_RATIO" in reason
    assert worker.terminate() == 0
    dead = asyncio.run(read_to_end(stack.bootstrap_servers, topics.dlq))
    assert 40 <= len(dead) < len(bad), "it stopped within the in-flight bound of the trip"
    assert answered(stack, topics, "burst") == 0, "the good tasks queued behind are untouched"

    again = start_worker(**guarded, WORKER_DLQ_MAX_RATIO="1.0")
    wait_for(lambda: answered(stack, topics, "burst") == len(good), 120, "the good tasks answered", alive=again.proc)
    wait_for(lambda: len(asyncio.run(read_to_end(stack.bootstrap_servers, topics.dlq))) >= len(bad), 60,
             "every bad task in the DLQ")  # fmt: skip
    assert len(asyncio.run(read_to_end(stack.bootstrap_servers, topics.dlq))) == len(bad), "none twice"
    assert again.terminate() == 0


def test_a_deployment_without_priority_topics_serves_its_tasks_topic(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    plain = f"{topics.tasks}-plain"  # no .high, no .low beside it
    asyncio.run(create_topics(stack.bootstrap_servers, {plain: 2}))
    key = f"{topics.group}/frame.jpg"
    asyncio.run(upload(stack, {key: synthetic_jpeg(7)}))
    worker = start_worker(KAFKA_TASKS_TOPIC=plain)
    worker.wait_started()
    asyncio.run(produce(stack.bootstrap_servers, plain, video(topics, "plain", key, 5)))
    wait_for(lambda: answered(stack, topics, "plain") == 5, 120, "the plain topic's tasks answered", alive=worker.proc)
    (subscribed,) = [line for line in worker.log_lines() if line.get("event") == "task_topics"]
    assert subscribed["topics"] == [plain] and subscribed["missing"] == [f"{plain}.high", f"{plain}.low"]
    assert worker.terminate() == 0
