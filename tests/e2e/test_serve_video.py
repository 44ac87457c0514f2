"""Videos through `runner serve` with two real workers: the API's result equals `runner run`'s, the
annotated video plays, and a server killed mid-video (twice) still completes it, counting nothing twice."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import orjson
import pytest

from scripts.synthetic import write_demo_video
from tests.e2e.conftest import Pipeline
from tests.support import ServeProcess, read_to_end, run_runner, s3_session, wait_for

FRAMES = 36
RESTART_FRAMES = 150
DEADLINE_S = 240.0
# Fields of a frame that depend on where and when it was answered, not on what is in it (the key
# holds the video id).
CIRCUMSTANCES = {"worker", "timing_ms", "s3_key"}


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while OPEN:
        OPEN.pop().close()


OPEN: list[httpx.Client] = []


def client(server: ServeProcess) -> httpx.Client:
    """A client of `server`, closed at the end of the test."""
    OPEN.append(httpx.Client(base_url=server.url, timeout=120))
    return OPEN[-1]


def status(api: httpx.Client, video_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/videos/{video_id}")
    assert answer.status_code == 200, answer.text
    found: dict[str, Any] = answer.json()
    return found


def wait_completed(api: httpx.Client, video_id: str, server: ServeProcess) -> dict[str, Any]:
    wait_for(lambda: status(api, video_id)["state"] in ("completed", "failed"), DEADLINE_S,
             f"{video_id} to complete", alive=server.proc)  # fmt: skip
    final = status(api, video_id)
    assert final["state"] == "completed", final
    return final


def collecting(server: ServeProcess) -> bool:
    """The server's collector has been given its partitions."""
    return any(
        '"partitions_assigned"' in line and "runner.collector" in line for line in server.log_text().splitlines()
    )


def content(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [{k: v for k, v in frame.items() if k not in CIRCUMSTANCES} for frame in document["frames"]]


def statuses_of(pipeline: Pipeline, video_id: str) -> list[dict[str, Any]]:
    """Every record the status topic holds for the video, in order (compaction may have dropped early ones)."""
    records = asyncio.run(read_to_end(pipeline.env["KAFKA_BOOTSTRAP_SERVERS"], pipeline.topics.status))
    return [orjson.loads(r.value) for r in records if r.key == video_id.encode() and r.value is not None]


def s3_object(pipeline: Pipeline, bucket: str, key: str) -> bytes:
    from tests.stack import Endpoints

    env = pipeline.env
    endpoints = Endpoints(env["KAFKA_BOOTSTRAP_SERVERS"], env["S3_ENDPOINT_URL"], env["S3_ACCESS_KEY_ID"],
                          env["S3_SECRET_ACCESS_KEY"], env["S3_REGION"], "environment")  # fmt: skip

    async def read() -> bytes:
        async with s3_session(endpoints).client("s3", endpoint_url=endpoints.s3_endpoint_url) as s3:
            response = await s3.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    return asyncio.run(read())


def test_a_video_uploaded_through_the_api_equals_runner_runs_result(
    pipeline: Pipeline, start_server: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    video = tmp_path / "clip.mp4"
    write_demo_video(video, tmp_path / "truth.json", n_frames=FRAMES)
    server = start_server(f"serve-{uuid.uuid4().hex[:8]}").wait_ready()
    api = client(server)
    started = time.monotonic()
    accepted = api.post("/v1/videos", files={"file": ("clip.mp4", video.read_bytes(), "video/mp4")},
                        data={"video_id": "api-clip", "priority": "low"})  # fmt: skip
    assert accepted.status_code == 202, accepted.text
    assert accepted.json() == {"video_id": "api-clip", "status_url": "/v1/videos/api-clip"}

    final = wait_completed(api, "api-clip", server)
    print(f"api: {FRAMES} frames uploaded, split, detected and assembled in {time.monotonic() - started:.1f} s")  # noqa: T201
    assert (final["total_frames"], final["answered"], final["errors"]) == (FRAMES, FRAMES, 0)
    assert (final["priority"], final["model"]) == ("low", None)
    assert final["result_uri"] == "s3://results/api-clip.json"
    document = api.get("/v1/videos/api-clip/result").json()
    assert document["complete"] is True and document["missing_frame_ids"] == []
    assert [f["frame_id"] for f in document["frames"]] == list(range(FRAMES))
    assert orjson.loads(s3_object(pipeline, "results", "api-clip.json")) == document

    ran = run_runner(pipeline.env, "run", str(video), "--out", str(tmp_path / "run.json"), "--video-id", "run-clip",
                     "--timeout", "300")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    by_run = orjson.loads((tmp_path / "run.json").read_bytes())
    assert content(document) == content(by_run)
    # `runner run` publishes its video's status and uploads its document too.
    run_final = statuses_of(pipeline, "run-clip")[-1]
    assert (run_final["state"], run_final["answered"], run_final["result_uri"]) == (
        "completed", FRAMES, "s3://results/run-clip.json")  # fmt: skip

    history = statuses_of(pipeline, "api-clip")
    assert history[0]["state"] == "queued" and history[-1] == final
    answered = [record["answered"] for record in history]
    assert answered == sorted(answered), "progress went backwards"

    rendered = api.get("/v1/videos/api-clip/annotated.mp4")
    assert rendered.status_code == 200 and rendered.headers["content-type"] == "video/mp4"
    annotated = tmp_path / "annotated.mp4"
    annotated.write_bytes(rendered.content)
    capture = cv2.VideoCapture(str(annotated))
    try:
        decoded = 0
        while capture.read()[0]:
            decoded += 1
    finally:
        capture.release()
    assert decoded == FRAMES
    assert s3_object(pipeline, "results", "annotated/api-clip.mp4") == rendered.content
    frame = api.get("/v1/videos/api-clip/frames/3")
    assert frame.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(frame.content, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)


def test_a_server_killed_mid_video_twice_still_completes_it_and_counts_nothing_twice(
    pipeline: Pipeline, start_server: Callable[..., ServeProcess], tmp_path: Path
) -> None:
    video = tmp_path / "long.mp4"
    write_demo_video(video, tmp_path / "truth.json", n_frames=RESTART_FRAMES)
    group = f"serve-{uuid.uuid4().hex[:8]}"

    first = start_server(group).wait_ready()
    api = client(first)
    accepted = api.post("/v1/videos", files={"file": ("long.mp4", video.read_bytes())}, data={"video_id": "restarted"})
    assert accepted.status_code == 202, accepted.text
    first_status = status(api, "restarted")
    first.kill()  # queued: the split had at most begun

    # Paused workers answer nothing until the restarted server's collector is in its group (a killed
    # member holds the group for its session timeout): then its progress is seen from the first answer.
    with pipeline.workers_paused():
        second = start_server(group).wait_ready()
        api = client(second)
        wait_for(lambda: collecting(second) and status(api, "restarted")["state"] == "running", DEADLINE_S,
                 "the split again and the collector's partitions", alive=second.proc)  # fmt: skip
    seen: list[dict[str, Any]] = []

    def partly_answered() -> bool:
        seen.append(status(api, "restarted"))
        assert seen[-1]["state"] != "completed", "the video finished before the server could be killed mid-way"
        return 0 < seen[-1]["answered"] < RESTART_FRAMES

    wait_for(partly_answered, DEADLINE_S, "the video to be partly answered", alive=second.proc)
    second.kill()  # running: the collector had part of the video buffered
    # What the killed server had not yet published (at most a second of progress) is not on the topic.
    published = statuses_of(pipeline, "restarted")[-1]

    third = start_server(group).wait_ready()
    api = client(third)
    assert status(api, "restarted")["answered"] >= published["answered"], "the restart reset the progress"
    final = wait_completed(api, "restarted", third)
    assert (final["total_frames"], final["answered"], final["errors"]) == (RESTART_FRAMES, RESTART_FRAMES, 0)
    assert final["created_at"] == first_status["created_at"]
    document = api.get("/v1/videos/restarted/result").json()
    assert document["complete"] is True
    assert [f["frame_id"] for f in document["frames"]] == list(range(RESTART_FRAMES))
    answered = [record["answered"] for record in statuses_of(pipeline, "restarted")]
    assert answered == sorted(answered) and answered[-1] == RESTART_FRAMES
    assert third.terminate() == 0
