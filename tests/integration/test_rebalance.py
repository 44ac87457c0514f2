"""A rebalance against the real broker while a member drains a frame slower than aiokafka's default
rebalance timeout (the 10 s session timeout): the group waits for it instead of evicting it."""

from __future__ import annotations

import asyncio
import collections
import functools
import time
from collections.abc import AsyncIterator, Callable

import pytest
from aiokafka import TopicPartition

from inference import service
from inference.backends import DetectorConfig
from inference.config import load_settings
from inference.pool import DetectorPool
from inference.service import Worker
from tests import fake_detector
from tests.stack import Endpoints
from tests.support import Topics, committed_offsets, eventually, produce, read_to_end, result_values, task, upload

# aiokafka's default rebalance timeout: its session timeout.
DEFAULT_REBALANCE_TIMEOUT_S = 10.0
# Longer than that with room for the second worker's start, well within WORKER_DRAIN_TIMEOUT_S (30 s).
SLOW_FRAME_S = 16
FAST_TASKS = 11
StartWorker = Callable[[], Worker]


@pytest.fixture
async def in_process_worker(monkeypatch: pytest.MonkeyPatch, worker_env: dict[str, str]) -> AsyncIterator[StartWorker]:
    """Workers in this process, their pools answering by the frame's bytes (tests/fake_detector.py)."""
    for name, value in worker_env.items():
        monkeypatch.setenv(name, value)
    fake_pool = functools.partial(DetectorPool, init=fake_detector.init, entry=fake_detector.detect_batch)
    monkeypatch.setattr(service, "DetectorPool", fake_pool)
    settings = load_settings()
    config = DetectorConfig("fake", "onnx", "cpu", 320, 0.25, 0.45, 1, 10**6)
    running: list[tuple[Worker, asyncio.Task[None]]] = []

    def start() -> Worker:
        worker = Worker(settings, config)
        running.append((worker, asyncio.create_task(worker.run())))
        return worker

    yield start
    for worker, _ in running:
        worker.stop()
    # Each drains, commits and stops its clients; one that failed fails the test here.
    await asyncio.wait_for(asyncio.gather(*(run for _, run in running)), 60)


def membership(worker: Worker) -> tuple[str, int]:
    """The member id and generation the group gave this worker."""
    assert worker._consumer is not None
    group = worker._consumer._coordinator
    return group.member_id, group.generation


def timed_revocations(worker: Worker) -> list[float]:
    """How long each of the worker's revocations (drain, last commit) takes, as they end."""
    durations: list[float] = []
    revoke = worker.on_revoked

    async def timed(revoked: set[TopicPartition]) -> None:
        started = time.monotonic()
        await revoke(revoked)
        durations.append(time.monotonic() - started)

    worker.on_revoked = timed  # type: ignore[method-assign]
    return durations


def tracked(worker: Worker) -> int:
    """Partitions the worker has set up."""
    checkpoint = worker._checkpoint
    return 0 if checkpoint is None else len(checkpoint.partitions)


async def committed(stack: Endpoints, topics: Topics) -> int:
    return sum((await committed_offsets(stack, topics)).values())


def slow_and_fast_tasks(topics: Topics) -> tuple[dict[str, bytes], list[tuple[bytes, bytes]]]:
    """FAST_TASKS frames that detect at once, then one that detects for SLOW_FRAME_S: objects and tasks."""
    objects: dict[str, bytes] = {}
    tasks = []
    for i in range(FAST_TASKS):
        key = f"{topics.group}/fast-{i}.jpg"
        objects[key] = b"fast"
        tasks.append((f"fast-{i}".encode(), task(f"fast-{i}", 0, key)))
    slow_key = f"{topics.group}/slow.jpg"
    objects[slow_key] = f"sleep {SLOW_FRAME_S}".encode()
    tasks.append((b"slow", task("slow", 0, slow_key)))
    return objects, tasks


async def test_a_member_draining_a_slow_frame_is_not_evicted(
    stack: Endpoints, topics: Topics, in_process_worker: StartWorker
) -> None:
    objects, tasks = slow_and_fast_tasks(topics)
    await upload(stack, objects)
    first = in_process_worker()

    async def alone() -> bool:
        return tracked(first) == 6

    await eventually(alone, 60, "the first worker to hold every partition")
    await produce(stack.bootstrap_servers, topics.tasks, tasks[:-1])

    async def fast_ones_answered() -> bool:
        return len(await read_to_end(stack.bootstrap_servers, topics.results)) == FAST_TASKS

    await eventually(fast_ones_answered, 30, "the fast tasks answered")
    # Alone in the pool: a single process would queue frames behind it.
    await produce(stack.bootstrap_servers, topics.tasks, tasks[-1:])

    async def detecting_the_slow_frame() -> bool:
        return first.in_flight == 1

    await eventually(detecting_the_slow_frame, 30, "the slow frame in detection")
    member, generation = membership(first)
    revocations = timed_revocations(first)
    second = in_process_worker()  # its join starts a rebalance: the first drains the slow frame, then rejoins

    async def balanced() -> bool:
        return tracked(first) == 3 and tracked(second) == 3

    await eventually(balanced, 45, "the group balanced")
    assert revocations[-1] > DEFAULT_REBALANCE_TIMEOUT_S, "the drain must outlast aiokafka's default to test anything"
    assert membership(first) == (member, generation + 1), "the draining member was evicted and rejoined"
    assert membership(second)[1] == generation + 1
    assert await committed(stack, topics) == FAST_TASKS + 1, "the slow frame's offset committed on revocation"
    results = result_values(await read_to_end(stack.bootstrap_servers, topics.results))
    assert collections.Counter(v["video_id"] for v in results) == {"slow": 1} | {
        f"fast-{i}": 1 for i in range(FAST_TASKS)
    }
