"""A model rollout mid-stream under exactly_once: no frame lost, failed or answered twice, no restart.

Frames for one registered name stream through two replicas; version 2 is pushed while they
flow; once both replicas have it, half of the next frames pin version 1. Each frame must be
answered once, without error, by the version it asked for: pinned frames by version 1,
unpinned ones by whatever was current when their replica routed them, which can only move
forward within a partition (frames are routed in offset order).
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.faults.report import record
from tests.stack import Endpoints
from tests.support import (
    ITEMS_PATH,
    MODEL_PATH,
    Topics,
    WorkerProcess,
    committed_total,
    produce,
    push_model,
    read_to_end,
    result_values,
    task,
    upload_video,
    wait_for,
)

StartWorker = Callable[..., WorkerProcess]
VIDEOS, FRAMES = 6, 30
# Slow enough that version 2 is pushed while version 1's frames still arrive.
TASKS_PER_SECOND = 12.0


def push(env: dict[str, str], weights: Path, name: str) -> None:
    # --imgsz: the runner then needs no torch to read it from the checkpoint, and pushes in a second.
    push_model(env, weights, name, "--imgsz", "320")


def tasks_of(
    phase: str, objects: dict[str, dict[str, bytes]], model: Callable[[int], str]
) -> list[tuple[bytes, bytes]]:
    records = []
    for video_id, frames in objects.items():
        if video_id.startswith(phase):
            records += [(video_id.encode(), task(video_id, i, key, model=model(i))) for i, key in enumerate(frames)]
    return records


def rolled_out(worker: WorkerProcess, answered_by: set[str], version: str) -> bool:
    """The replica routes the name's new version: it rolled it out, or read it before routing the name at all."""
    lines = worker.log_lines()
    if worker.worker_id in answered_by:
        return any(line.get("event") == "model_rolled_out" and line["version"] == version for line in lines)
    return any(line.get("event") == "model_registered" and line["version"] == version for line in lines)


def test_rollout_mid_stream_then_pins_lose_and_fail_nothing(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    started = time.monotonic()
    name = f"shapes-{uuid.uuid4().hex[:8]}"
    env = {**stack.env(), **topics.env(), "YOLO_OFFLINE": "1", "LOG_LEVEL": "WARNING"}
    push(env, MODEL_PATH, name)
    objects = asyncio.run(_upload(stack, topics))
    workers = [start_worker(KAFKA_DELIVERY="exactly_once") for _ in range(2)]
    for worker in workers:
        worker.wait_started()

    phase_a = tasks_of("a", objects, lambda i: name)
    streaming = threading.Thread(
        target=lambda: asyncio.run(produce(stack.bootstrap_servers, topics.tasks, phase_a, TASKS_PER_SECOND))
    )
    streaming.start()
    wait_for(lambda: _results(stack, topics) != [], 120, "the first answers of version 1")
    push(env, ITEMS_PATH, name)
    streaming.join()
    answered_by = {v["worker"] for v in _results(stack, topics)}
    wait_for(lambda: all(rolled_out(w, answered_by, "2") for w in workers), 120, "version 2 on both replicas")
    # Half pinned to the version that is no longer current, half following the name.
    phase_b = tasks_of("b", objects, lambda i: f"{name}@1" if i % 2 else name)
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, phase_b, TASKS_PER_SECOND))

    expected = len(phase_a) + len(phase_b)
    wait_for(lambda: committed_total(stack, topics) >= expected, 240, "every task committed")
    values = _results(stack, topics)
    keys = [(v["video_id"], v["frame_id"]) for v in values]
    record("model_rollout_mid_stream", expected, keys, time.monotonic() - started)
    assert max(collections.Counter(keys).values()) == 1
    assert len(set(keys)) == expected
    assert [v for v in values if v["status"] != "ok"] == []
    _assert_versions(values, name)
    for worker in workers:
        assert not [line for line in worker.log_lines() if line.get("event") == "pool_replaced"]
        assert worker.terminate() == 0


def _assert_versions(values: list[dict[str, Any]], name: str) -> None:
    by_video: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    for value in sorted(values, key=lambda v: (v["video_id"], v["frame_id"])):
        by_video[value["video_id"]].append(value)
    for video_id, frames in by_video.items():
        pinned = [v for v in frames if video_id.startswith("b") and v["frame_id"] % 2]
        following = [v["model"]["version"] for v in frames if v not in pinned]
        assert all(v["model"] == {**v["model"], "name": name, "version": "1"} for v in pinned)
        assert all({d["class_name"] for d in v["detections"]} <= {"circle", "square", "triangle"} for v in pinned)
        # Routed in offset order within the partition: the version never goes back.
        assert following == sorted(following), f"{video_id}: {following}"
        if video_id.startswith("b"):
            assert set(following) == {"2"}
            assert {d["class_name"] for v in frames if v not in pinned for d in v["detections"]} <= {"item"}


def _results(stack: Endpoints, topics: Topics) -> list[dict[str, Any]]:
    records = asyncio.run(read_to_end(stack.bootstrap_servers, topics.results))
    unique = {(r.partition, r.offset): r for r in records}
    return result_values([unique[place] for place in sorted(unique)])


async def _upload(stack: Endpoints, topics: Topics) -> dict[str, dict[str, bytes]]:
    videos = [f"{phase}{i}-rollout" for phase in "ab" for i in range(VIDEOS // 2)]
    uploads = [upload_video(stack, topics, video_id, FRAMES, seed=n) for n, video_id in enumerate(videos)]
    return dict(zip(videos, await asyncio.gather(*uploads), strict=True))
