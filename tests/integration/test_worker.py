"""The worker against real Kafka and S3: results, scale-out, crashes, shutdown, bad input."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import orjson
import psutil
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from jsonschema import Draft202012Validator

from scripts.schemas.files import committed
from tests.stack import Endpoints
from tests.support import (
    MODEL_PATH,
    Topics,
    WorkerProcess,
    committed_offsets,
    committed_total,
    consume,
    distinct_frames,
    produce,
    read_to_end,
    result_values,
    stage_video,
    wait_for,
)

StartWorker = Callable[..., WorkerProcess]


def direct_predictions(images: dict[str, bytes]) -> dict[str, list[tuple[int, list[float]]]]:
    """What ultralytics itself says on the same images, for the equality check."""
    from ultralytics import YOLO

    model = YOLO(str(MODEL_PATH))
    out = {}
    for key, data in images.items():
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        boxes = model.predict(image, conf=0.25, iou=0.45, verbose=False)[0].boxes
        out[key] = sorted(
            (int(c), [float(v) for v in b]) for c, b in zip(boxes.cls.tolist(), boxes.xyxy.tolist(), strict=True)
        )
    return out


def same_detections(got: list[dict[str, Any]], expected: list[tuple[int, list[float]]]) -> bool:
    mine = sorted((d["class_id"], d["bbox"]) for d in got)
    if len(mine) != len(expected):
        return False
    return all(
        c1 == c2 and all(abs(a - b) <= 1.0 for a, b in zip(b1, b2, strict=True))
        for (c1, b1), (c2, b2) in zip(mine, expected, strict=True)
    )


async def stage_videos(stack: Endpoints, topics: Topics, frames_per_video: dict[str, int]) -> dict[str, bytes]:
    objects: dict[str, bytes] = {}
    for seed, (video_id, n) in enumerate(frames_per_video.items()):
        objects.update(await stage_video(stack, topics, video_id, n, seed=seed))
    return objects


def results_for(stack: Endpoints, topics: Topics, expected: int, timeout_s: float = 240) -> list[Any]:
    """Every result record read by the time `expected` distinct frames have one; fails at the deadline."""
    return asyncio.run(
        consume(stack.bootstrap_servers, topics.results, lambda r: len(distinct_frames(r)) >= expected, timeout_s)
    )


def test_every_task_gets_one_ok_result_equal_to_ultralytics(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    videos = {"cam-a": 80, "cam-b": 60, "cam-c": 40, "cam-d": 20}
    objects = asyncio.run(stage_videos(stack, topics, videos))
    # The torch backend serves the .pt itself, so equality is exact; the exported backends are held
    # to torch's detections within tolerances in tests/unit/test_backends.py.
    worker = start_worker(WORKER_PROCESSES="2", MODEL_BACKEND="torch")
    worker.wait_started()
    records = results_for(stack, topics, expected=200)
    values = result_values(records)
    assert len(values) == 200
    assert collections.Counter((v["video_id"], v["frame_id"]) for v in values).most_common(1)[0][1] == 1
    assert all(v["status"] == "ok" for v in values)
    assert all(r.key == orjson.loads(r.value)["video_id"].encode() for r in records)
    assert {(v["video_id"], v["frame_id"]) for v in values} == {(vid, i) for vid, n in videos.items() for i in range(n)}
    expected = direct_predictions(objects)
    mismatched = [v["s3_key"] for v in values if not same_detections(v["detections"], expected[v["s3_key"]])]
    assert mismatched == []
    assert sum(len(v["detections"]) for v in values) > 0
    assert worker.terminate() == 0


def test_two_replicas_share_the_partitions_and_answer_each_task_once(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    first, second = start_worker(), start_worker()
    first.wait_started()
    second.wait_started()
    wait_for(lambda: len(first.assignments()) == 3 and len(second.assignments()) == 3, 60, "a balanced group")
    assert first.assignments().isdisjoint(second.assignments())
    videos = {f"cam-{i}": 10 for i in range(8)}
    asyncio.run(stage_videos(stack, topics, videos))
    values = result_values(results_for(stack, topics, expected=80))
    assert len(values) == 80
    assert len({(v["video_id"], v["frame_id"]) for v in values}) == 80
    workers = collections.Counter(v["worker"] for v in values)
    assert len(workers) == 2


def test_kill_9_mid_stream_loses_nothing(stack: Endpoints, topics: Topics, start_worker: StartWorker) -> None:
    videos = {"cam-x": 60, "cam-y": 60}
    asyncio.run(stage_videos(stack, topics, videos))
    doomed = start_worker()
    doomed.wait_started()
    wait_for(lambda: doomed_progress(stack, topics) >= 10, 120, "some results before the kill")
    pool = psutil.Process(doomed.proc.pid).children(recursive=True)
    assert pool, "the replica has no pool processes to watch"
    doomed.kill()
    # Orphaned pool processes would each keep a model in memory until the host runs out.
    wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in pool), 30,
             "the killed replica's pool processes to exit")  # fmt: skip
    survivor = start_worker()
    survivor.wait_started()
    frames = distinct_frames(results_for(stack, topics, expected=120))
    assert frames == {(vid, i) for vid, n in videos.items() for i in range(n)}


def doomed_progress(stack: Endpoints, topics: Topics) -> int:
    """Results published so far."""
    return len(asyncio.run(read_to_end(stack.bootstrap_servers, topics.results)))


async def tasks_by_offset(stack: Endpoints, topics: Topics, count: int) -> dict[tuple[int, int], tuple[str, int]]:
    records = await read_to_end(stack.bootstrap_servers, topics.tasks)
    assert len(records) == count
    return {
        (r.partition, r.offset): (orjson.loads(r.value)["video_id"], orjson.loads(r.value)["frame_id"]) for r in records
    }


def test_sigterm_drains_commits_and_exits_0(stack: Endpoints, topics: Topics, start_worker: StartWorker) -> None:
    videos = {"cam-s": 50, "cam-t": 50}
    asyncio.run(stage_videos(stack, topics, videos))
    worker = start_worker(WORKER_PROCESSES="2")
    worker.wait_started()
    wait_for(lambda: doomed_progress(stack, topics) >= 10, 120, "some results before SIGTERM")
    assert worker.terminate(timeout_s=60) == 0
    assert any(line.get("event") == "worker_stopped" for line in worker.log_lines())
    published = distinct_frames(asyncio.run(read_to_end(stack.bootstrap_servers, topics.results)))
    committed = asyncio.run(committed_offsets(stack, topics))
    tasks = asyncio.run(tasks_by_offset(stack, topics, 100))
    below_commit = {ids for (p, o), ids in tasks.items() if o < committed[p]}
    assert below_commit, "the drained worker committed nothing"
    assert below_commit <= published
    successor = start_worker()
    successor.wait_started()
    frames = distinct_frames(results_for(stack, topics, expected=100))
    assert frames == set(tasks.values())


def test_a_dying_pool_process_is_replaced_and_its_frames_retried(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    asyncio.run(stage_videos(stack, topics, {"cam-p": 40}))
    worker = start_worker(WORKER_PROCESSES="1")
    worker.wait_started()
    children = psutil.Process(worker.proc.pid).children(recursive=True)
    pool_processes = [c for c in children if "spawn" in " ".join(c.cmdline())]
    assert pool_processes
    pool_processes[0].kill()
    values = result_values(results_for(stack, topics, expected=40))
    ok = {(v["video_id"], v["frame_id"]) for v in values if v["status"] == "ok"}
    assert ok == {("cam-p", i) for i in range(40)}
    assert any(line.get("event") == "pool_replaced" for line in worker.log_lines())
    assert worker.proc.poll() is None


def jpeg_bomb() -> bytes:
    ok, data = cv2.imencode(".jpg", np.zeros((16, 16, 3), np.uint8))
    assert ok
    raw = bytearray(bytes(data))
    sof = raw.find(b"\xff\xc0")
    raw[sof + 5 : sof + 9] = (60000).to_bytes(2, "big") * 2
    return bytes(raw)


@pytest.fixture
def bad_input(stack: Endpoints, topics: Topics) -> dict[str, str]:
    """Bad tasks by frame id of video `bad`, with the error code each must get."""
    from tests.support import synthetic_jpeg, task, upload

    good = synthetic_jpeg(7)
    objects = {
        "bad/0.jpg": b"this is not an image",
        "bad/1.jpg": good[: len(good) // 2],
        "bad/2.jpg": jpeg_bomb(),
        "bad/3.jpg": b"",
        "bad/4.jpg": b"\xff\xd8" + b"\x00" * 2_000_000,
    }
    asyncio.run(upload(stack, objects))
    tasks: list[tuple[bytes | None, bytes | None]] = [
        (b"bad", task("bad", 0, "bad/0.jpg")),
        (b"bad", task("bad", 1, "bad/1.jpg")),
        (b"bad", task("bad", 2, "bad/2.jpg")),
        (b"bad", task("bad", 3, "bad/3.jpg")),
        (b"bad", task("bad", 4, "bad/4.jpg")),
        (b"bad", task("bad", 5, "bad/missing.jpg")),
        (b"bad", task("bad", 6, "../etc/passwd")),
        (b"bad", task("bad", 7, "bad/0.jpg", total_frames="many")),
        (b"junk", b"not json at all"),
        (b"junk", b"[1, 2, 3]"),
        (b"junk", b'{"video_id": "v"}'),
        (b"junk", None),
    ]
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, tasks))
    return {
        "0": "invalid_image",
        "1": "invalid_image",
        "2": "invalid_image",
        "3": "invalid_image",
        "4": "frame_too_large",
        "5": "frame_not_found",
        "6": "invalid_task",
        "7": "invalid_task",
    }


def test_bad_input_gets_its_error_and_good_frames_flow(
    stack: Endpoints, topics: Topics, start_worker: StartWorker, bad_input: dict[str, str]
) -> None:
    asyncio.run(stage_videos(stack, topics, {"good": 20}))
    worker = start_worker(MAX_FRAME_BYTES="1000000")
    worker.wait_started()
    values = result_values(results_for(stack, topics, expected=28))
    codes = {str(v["frame_id"]): v["error"]["code"] for v in values if v["video_id"] == "bad"}
    assert codes == bad_input
    assert [e.message for v in values for e in Draft202012Validator(committed("result.json")).iter_errors(v)] == []
    assert {v["frame_id"] for v in values if v["video_id"] == "good" and v["status"] == "ok"} == set(range(20))
    dlq = asyncio.run(consume(stack.bootstrap_servers, topics.dlq, lambda r: len(r) >= 4, 60))
    assert sorted((r.value or b"") for r in dlq) == sorted(
        [b"not json at all", b"[1, 2, 3]", b'{"video_id": "v"}', b""]
    )
    assert all(dict(r.headers)["error.code"] == b"unreadable_task" and dict(r.headers)["error.message"] for r in dlq)
    errors = [
        line for line in worker.log_lines() if line.get("level") == "error" and line["logger"].startswith("inference")
    ]
    assert len(errors) >= 12
    assert all({"partition", "offset", "video_id", "frame_id"} <= set(line) for line in errors)
    assert worker.proc.poll() is None
    assert sum(1 for line in worker.log_lines() if line.get("event") == "worker_started") == 1
    wait_for(lambda: committed_total(stack, topics) >= 12 + 20, 30, "offsets committed past the bad input")


async def test_an_assignment_filled_while_it_is_set_up_is_not_left_paused(
    stack: Endpoints, topics: Topics, start_worker: StartWorker
) -> None:
    """aiokafka fetches while the rebalance listener runs; records admitted then pause the new assignment.

    The worker once kept its own copy of the pause state and reset it when the listener ended,
    so a pause from that window was never lifted: on that code 4 runs of this test in 4 stalled
    after the first batch or two. Open transactions of a previous owner stretch the window (the worker's producer
    start waits for the broker to abort each), and answers that need no detection (each task
    here is unreadable: it goes to the DLQ) fill the in-flight bound at once.
    """
    count = 600
    await produce(stack.bootstrap_servers, topics.tasks, [(str(i % 12).encode(), b"not a task") for i in range(count)])
    previous_owner = [await open_transaction(stack, topics, p) for p in range(6)]
    try:
        # Every task is unreadable on purpose here: the DLQ guard (a producer's bug otherwise) is off.
        worker = start_worker(KAFKA_DELIVERY="exactly_once", WORKER_DLQ_MAX_RATIO="1.0")
        await asyncio.to_thread(wait_for, lambda: committed_total(stack, topics) >= count, 90,
                                "every task committed", alive=worker.proc)  # fmt: skip
    finally:
        for producer in previous_owner:
            # Fenced by the worker by now: its stop fails, and only its connections are left to close.
            with contextlib.suppress(KafkaError):
                await producer.stop()
    dlq = await read_to_end(stack.bootstrap_servers, topics.dlq)
    assert len(dlq) == count


async def open_transaction(stack: Endpoints, topics: Topics, partition: int) -> AIOKafkaProducer:
    """A producer holding an open transaction under the worker's transactional id for `partition`."""
    producer = AIOKafkaProducer(
        bootstrap_servers=stack.bootstrap_servers, transactional_id=f"{topics.group}-{topics.tasks}-{partition}"
    )
    await producer.start()
    await producer.begin_transaction()
    await producer.send_and_wait(topics.results, b"never committed", key=b"previous-owner")
    return producer
