"""`python -m runner` against real Kafka and S3: split, collect (with a real worker), kill and
restart of a collector, the ordered stream, run, render."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from inference.config import KafkaSettings
from inference.messages import Detection, ErrorInfo, FrameResult
from runner.collector import ordered_results
from scripts.synthetic import write_demo_video
from tests.stack import Endpoints
from tests.support import REPO_ROOT, Topics, consume, eventually, run_runner, s3_session

FPS = 10.0
WIDTH, HEIGHT = 640, 360


@pytest.fixture
def env(stack: Endpoints, topics: Topics) -> dict[str, str]:
    return {**stack.env(), **topics.env(), "LOG_FORMAT": "json", "YOLO_OFFLINE": "1"}


@pytest.fixture
def video(tmp_path: Path) -> Path:
    path = tmp_path / "demo.mp4"
    write_demo_video(path, tmp_path / "truth.json", 24, WIDTH, HEIGHT, FPS)
    return path


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def one_error_line(completed: subprocess.CompletedProcess[str]) -> str:
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1, completed.stderr
    return lines[0]


async def s3_keys(stack: Endpoints, prefix: str) -> list[str]:
    async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
        listing = await s3.list_objects_v2(Bucket="frames", Prefix=prefix)
        return sorted(o["Key"] for o in listing.get("Contents", []))


async def s3_object(stack: Endpoints, key: str) -> bytes:
    async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
        response = await s3.get_object(Bucket="frames", Key=key)
        async with response["Body"] as body:
            data: bytes = await body.read()
            return data


def frame_result(video_id: str, frame_id: int, total: int, status: str = "ok") -> FrameResult:
    failed = status == "error"
    return FrameResult(
        video_id=video_id,
        frame_id=frame_id,
        s3_key=f"{video_id}/{frame_id:06d}.jpg",
        total_frames=total,
        timestamp_ms=frame_id * 100.0,
        status="error" if failed else "ok",
        detections=[] if failed else [Detection(class_id=0, class_name="circle", confidence=0.9, bbox=(1, 2, 30, 40))],
        error=ErrorInfo(code="invalid_image", message="broken") if failed else None,
    )


async def produce_results(bootstrap: str, topic: str, results: list[FrameResult], partition: int | None = None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for r in results:
            await producer.send_and_wait(topic, r.to_json(), key=r.video_id.encode(), partition=partition)
    finally:
        await producer.stop()


async def committed_offset(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        offset: int | None = await consumer.committed(tp)
        return offset
    finally:
        await consumer.stop()


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = orjson.loads(path.read_bytes())
    return document


# --------------------------------------------------------------------------- split


async def test_split_uploads_sampled_frames_then_produces_their_tasks(
    stack: Endpoints, topics: Topics, env: dict[str, str], video: Path
) -> None:
    video_id = unique_id("split")
    completed = await asyncio.to_thread(run_runner, env, "split", str(video), "--video-id", video_id, "--every", "2")
    assert completed.returncode == 0, completed.stderr
    assert f"{video_id}: 12 frames" in completed.stdout

    keys = await s3_keys(stack, f"{video_id}/")
    assert keys == [f"{video_id}/{i:06d}.jpg" for i in range(12)]
    image = cv2.imdecode(np.frombuffer(await s3_object(stack, keys[5]), np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (HEIGHT, WIDTH, 3)

    records = await consume(stack.bootstrap_servers, topics.tasks, lambda r: len(r) >= 12, timeout_s=30)
    tasks = sorted((orjson.loads(r.value) for r in records), key=lambda t: t["frame_id"])
    assert len(records) == 12
    assert {r.key for r in records} == {video_id.encode()}
    assert len({r.partition for r in records}) == 1
    assert [t["frame_id"] for t in tasks] == list(range(12))
    assert {(t["total_frames"], t["bucket"]) for t in tasks} == {(12, "frames")}
    assert [t["s3_key"] for t in tasks] == keys
    # Every second frame of a 10 frames/s video: 200 ms apart, from the decoder's clock.
    assert [t["timestamp_ms"] for t in tasks] == pytest.approx([i * 200.0 for i in range(12)])


def test_split_of_a_missing_file_fails_with_one_line(env: dict[str, str], tmp_path: Path) -> None:
    completed = run_runner(env, "split", str(tmp_path / "nope.mp4"), "--video-id", "nope")
    assert completed.returncode == 2
    assert one_error_line(completed) == f"runner: no such video file: {tmp_path / 'nope.mp4'}"
    assert completed.stdout == ""


def test_split_rejects_an_invalid_video_id(env: dict[str, str], video: Path) -> None:
    completed = run_runner(env, "split", str(video), "--video-id", "../etc")
    assert completed.returncode == 2
    assert "invalid video id '../etc'" in one_error_line(completed)


async def test_split_with_an_unreachable_broker_uploads_nothing(
    stack: Endpoints, env: dict[str, str], video: Path
) -> None:
    video_id = unique_id("nobroker")
    dead = {**env, "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    completed = await asyncio.to_thread(run_runner, dead, "split", str(video), "--video-id", video_id)
    assert completed.returncode == 1
    assert one_error_line(completed).startswith("runner: cannot reach Kafka at 127.0.0.1:1")
    assert await s3_keys(stack, f"{video_id}/") == []


def test_split_with_an_unreachable_s3_fails_with_one_line(env: dict[str, str], video: Path) -> None:
    dead = {**env, "S3_ENDPOINT_URL": "http://127.0.0.1:1"}
    completed = run_runner(dead, "split", str(video), "--video-id", unique_id("nos3"))
    assert completed.returncode == 1
    assert one_error_line(completed).startswith("runner: cannot reach S3 at http://127.0.0.1:1")


# --------------------------------------------------------------------------- collect, with a real worker


def test_collect_with_a_worker_writes_a_complete_sorted_file(
    env: dict[str, str], video: Path, tmp_path: Path, start_worker: Any
) -> None:
    worker = start_worker()  # loads its model while the video is split
    video_id = unique_id("collect")
    split = run_runner(env, "split", str(video), "--video-id", video_id, "--every", "2")
    assert split.returncode == 0, split.stderr
    worker.wait_started()

    out = tmp_path / "out"
    completed = run_runner(env, "collect", "--out", str(out), "--video-id", video_id, "--timeout", "180")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == str(out / f"{video_id}.json")

    document = load(out / f"{video_id}.json")
    assert (document["video_id"], document["total_frames"], document["complete"]) == (video_id, 12, True)
    assert (document["missing_frame_ids"], document["error_count"], document["duplicate_count"]) == ([], 0, 0)
    frames = document["frames"]
    assert [f["frame_id"] for f in frames] == list(range(12))
    assert all(f["status"] == "ok" and "video_id" not in f for f in frames)
    assert [f["timestamp_ms"] for f in frames] == pytest.approx([i * 200.0 for i in range(12)])


def test_run_splits_waits_and_writes_the_assembled_file(
    env: dict[str, str], video: Path, tmp_path: Path, start_worker: Any
) -> None:
    start_worker().wait_started()
    out = tmp_path / "result.json"
    completed = run_runner(env, "run", str(video), "--out", str(out), "--timeout", "180")
    assert completed.returncode == 0, completed.stderr
    assert "frames     24/24" in completed.stdout
    assert "frames/s" in completed.stdout

    document = load(out)
    assert (document["video_id"], document["complete"], document["total_frames"]) == ("demo", True, 24)
    assert [f["frame_id"] for f in document["frames"]] == list(range(24))


# --------------------------------------------------------------------------- collect, with results made here


async def test_a_collector_killed_mid_video_resumes_and_writes_the_same_file(
    stack: Endpoints, topics: Topics, env: dict[str, str], tmp_path: Path
) -> None:
    """Partition 0 holds B (complete) at 0-3, then 10 of A's 16 frames (one failed, one twice) at 4-14."""
    bootstrap, tp = stack.bootstrap_servers, TopicPartition(topics.results, 0)
    a, b = unique_id("a"), unique_id("b")
    first = [frame_result(b, i, 4) for i in range(4)]
    first += [frame_result(a, i, 16, "error" if i == 5 else "ok") for i in range(10)] + [frame_result(a, 3, 16)]
    await produce_results(bootstrap, topics.results, first, partition=0)

    out, group = tmp_path / "out", unique_id("collector")
    log = (tmp_path / "collector.log").open("wb")
    collector = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "runner", "collect", "--out", str(out), "--group", group),
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # B is written and the commit point stops at A's first result, which is still buffered.
        await eventually(
            lambda: committed_is(bootstrap, group, tp, 4), 60, "the collector to commit offset 4 (A's first result)"
        )
        assert (out / f"{b}.json").exists()
        assert not (out / f"{a}.json").exists()
    finally:
        collector.kill()
        await collector.wait()
        log.close()

    await produce_results(bootstrap, topics.results, [frame_result(a, i, 16) for i in range(10, 16)], partition=0)
    resumed = await asyncio.to_thread(
        run_runner, env, "collect", "--out", str(out), "--group", group, "--video-id", a, "--timeout", "60"
    )
    assert resumed.returncode == 0, resumed.stderr
    document = load(out / f"{a}.json")
    assert document["complete"] is True
    assert [f["frame_id"] for f in document["frames"]] == list(range(16))
    assert (document["error_count"], document["duplicate_count"]) == (1, 1)
    assert await committed_offset(bootstrap, group, tp) == 21

    reference = tmp_path / "reference"
    uninterrupted = await asyncio.to_thread(
        run_runner, env, "collect", "--out", str(reference), "--group", unique_id("reference"), "--video-id", a,
        "--timeout", "60",
    )  # fmt: skip
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert (out / f"{a}.json").read_bytes() == (reference / f"{a}.json").read_bytes()
    assert (out / f"{b}.json").read_bytes() == (reference / f"{b}.json").read_bytes()


async def committed_is(bootstrap: str, group: str, tp: TopicPartition, offset: int) -> bool:
    return await committed_offset(bootstrap, group, tp) == offset


async def test_collect_for_a_video_times_out_naming_the_missing_frames(
    stack: Endpoints, topics: Topics, env: dict[str, str], tmp_path: Path
) -> None:
    video_id = unique_id("partial")
    await produce_results(stack.bootstrap_servers, topics.results, [frame_result(video_id, i, 5) for i in (0, 1, 2)])
    args = ("collect", "--out", str(tmp_path), "--video-id", video_id, "--timeout", "5", "--group", unique_id("g"))
    completed = await asyncio.to_thread(run_runner, env, *args)
    assert completed.returncode == 3
    last = completed.stderr.strip().splitlines()[-1]
    assert last == f"runner: timed out after 5 s: video {video_id} has 3/5 frames; missing frame ids 3-4"
    assert not (tmp_path / f"{video_id}.json").exists()


async def test_ordered_results_streams_one_video_in_frame_order(stack: Endpoints, topics: Topics) -> None:
    video_id, other = unique_id("stream"), unique_id("other")
    order = [4, 0, 2, 1, 1, 3, 5]  # shuffled, with one duplicate
    results = [frame_result(video_id, i, 6) for i in order] + [frame_result(other, 0, 1)]
    await produce_results(stack.bootstrap_servers, topics.results, results)

    kafka = KafkaSettings(bootstrap_servers=stack.bootstrap_servers, results_topic=topics.results)
    async with asyncio.timeout(60):
        streamed = [(r.video_id, r.frame_id) async for r in ordered_results(kafka, video_id)]
    assert streamed == [(video_id, i) for i in range(6)]


# --------------------------------------------------------------------------- render


def read_frames(path: Path) -> list[np.ndarray[Any, Any]]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(image)
    capture.release()
    return frames


def test_render_draws_each_result_from_its_timestamp_until_the_next(video: Path, tmp_path: Path) -> None:
    """Results for video frames 3, 6 and 9 (as if split with --every 3 from frame 3)."""
    box = (100.0, 80.0, 300.0, 200.0)
    detections = [{"class_id": 0, "class_name": "circle", "confidence": 0.9, "bbox": list(box)}]
    frames = [
        {"frame_id": i, "timestamp_ms": (3 + 3 * i) * 100.0, "status": "ok", "detections": detections} for i in range(3)
    ]
    document = {"video_id": "demo", "total_frames": 3, "complete": True, "frames": frames}
    result_json = tmp_path / "demo.json"
    result_json.write_bytes(orjson.dumps(document))

    out = tmp_path / "rendered.mp4"
    completed = run_runner({}, "render", str(video), str(result_json), "--out", str(out))
    assert completed.returncode == 0, completed.stderr

    source, rendered = read_frames(video), read_frames(out)
    assert len(rendered) == len(source) == 24
    assert rendered[0].shape == (HEIGHT, WIDTH, 3)

    def box_edge_change(index: int) -> float:
        """Mean change along the box's left edge, where the rectangle is drawn."""
        x, y1, y2 = int(box[0]), int(box[1]) + 20, int(box[3]) - 20
        edge = np.s_[y1:y2, x - 1 : x + 2]
        return float(np.abs(rendered[index][edge].astype(int) - source[index][edge].astype(int)).mean())

    # Before the first result: copied; at and after it: boxes drawn, held between results.
    assert [box_edge_change(i) < 15 for i in range(3)] == [True, True, True]
    assert [box_edge_change(i) > 40 for i in (3, 4, 5, 10, 23)] == [True] * 5
