"""`runner collect` and `runner run` publish their videos' status and upload complete documents,
against real Kafka and S3 (results produced by the test: no worker needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from botocore.exceptions import ClientError
from jsonschema import Draft202012Validator

from inference.messages import FrameResult
from scripts.schemas.files import committed
from scripts.synthetic import write_demo_video
from tests.stack import Endpoints
from tests.support import Topics, produce, read_to_end, run_runner, s3_session

FRAMES = 5


def statuses(stack: Endpoints, topics: Topics, video_id: str) -> list[dict[str, Any]]:
    records = asyncio.run(read_to_end(stack.bootstrap_servers, topics.status))
    return [orjson.loads(r.value) for r in records if r.key == video_id.encode() and r.value is not None]


def results_object(stack: Endpoints, key: str) -> bytes:
    async def read() -> bytes:
        async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
            response = await s3.get_object(Bucket="results", Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
                return data

    return asyncio.run(read())


def result(video_id: str, frame_id: int, status: str = "ok") -> FrameResult:
    error = {"code": "invalid_image", "message": "broken"} if status == "error" else None
    return FrameResult.model_validate({"video_id": video_id, "frame_id": frame_id, "total_frames": FRAMES,
                                       "timestamp_ms": frame_id * 100.0, "status": status, "error": error})  # fmt: skip


def test_collect_publishes_progress_then_completed_with_the_uploaded_document(
    stack: Endpoints, topics: Topics, tmp_path: Path
) -> None:
    env = {**stack.env(), **topics.env(), "LOG_FORMAT": "json"}
    answers = [result("collected-1", i, "error" if i == 2 else "ok") for i in range(FRAMES)]
    answers.append(answers[0])  # a redelivery: counted once
    records = [(r.video_id.encode(), r.to_json()) for r in answers]
    asyncio.run(produce(stack.bootstrap_servers, topics.results, records))

    out = tmp_path / "out"
    done = run_runner(env, "collect", "--out", str(out), "--video-id", "collected-1", "--group", topics.group,
                      "--timeout", "60")  # fmt: skip
    assert done.returncode == 0, done.stderr

    history = statuses(stack, topics, "collected-1")
    final = history[-1]
    assert (final["state"], final["total_frames"], final["answered"], final["errors"]) == ("completed", 5, 5, 1)
    assert final["result_uri"] == "s3://results/collected-1.json"
    assert {record["state"] for record in history} <= {"running", "completed"}
    validator = Draft202012Validator(committed("status.json"))
    assert all(list(validator.iter_errors(record)) == [] for record in history)
    uploaded = orjson.loads(results_object(stack, "collected-1.json"))
    assert uploaded == orjson.loads((out / "collected-1.json").read_bytes())
    assert uploaded["duplicate_count"] == 1


def test_a_run_that_times_out_is_failed_and_uploads_nothing(stack: Endpoints, topics: Topics, tmp_path: Path) -> None:
    video = tmp_path / "clip.mp4"
    write_demo_video(video, tmp_path / "truth.json", 3, 160, 96, 10.0)
    env = {**stack.env(), **topics.env(), "LOG_FORMAT": "json"}
    done = run_runner(env, "run", str(video), "--out", str(tmp_path / "clip.json"), "--video-id", "lonely-run",
                      "--timeout", "1")  # fmt: skip
    assert done.returncode == 3, done.stderr
    history = statuses(stack, topics, "lonely-run")
    assert history[0]["state"] == "queued"
    final = history[-1]
    assert (final["state"], final["total_frames"], final["answered"], final["result_uri"]) == ("failed", 3, 0, None)
    with pytest.raises(ClientError):
        results_object(stack, "lonely-run.json")
