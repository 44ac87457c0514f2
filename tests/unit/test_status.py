"""runner.status and runner.status_reporter without Kafka: the board's merge and pacing, the record's schema."""

from __future__ import annotations

import time
from datetime import timedelta

import orjson
from jsonschema import Draft202012Validator

from inference.config import KafkaSettings
from inference.messages import ModelInfo, ok_result
from runner.assembler import Assembly
from runner.status import PROGRESS_INTERVAL_S, StatusBoard, VideoStatus, decode_status, utc_now
from runner.status_reporter import VideoReporter
from scripts.schemas.files import committed
from tests.unit.test_schemas import TASK

MODEL = ModelInfo(name="best.pt", conf=0.25, iou=0.45)


def board() -> StatusBoard:
    # Never started: the board keeps its records in memory and publishes nothing.
    return StatusBoard(KafkaSettings(bootstrap_servers="127.0.0.1:9"), required=False)


def result(frame_id: int, total: int = 4) -> object:
    task = TASK.model_copy(update={"frame_id": frame_id, "total_frames": total})
    return ok_result(task, width=640, height=360, detections=[], model=MODEL, timing_ms={"total": 1.0}, worker="w")


def test_a_new_video_is_queued_and_a_change_of_state_is_due_at_once() -> None:
    statuses = board()
    first = statuses.update("cam1", priority="high")
    assert (first.state, first.priority, first.answered, first.result_uri) == ("queued", "high", 0, None)
    assert first.created_at == first.updated_at
    due = statuses._pending["cam1"]
    assert due <= time.monotonic()
    running = statuses.update("cam1", state="running", total_frames=4)
    assert running.created_at == first.created_at and running.state == "running"


def test_progress_within_a_state_waits_for_its_second() -> None:
    statuses = board()
    statuses.update("cam1", state="running")
    statuses._published_at["cam1"] = time.monotonic()
    statuses._pending.clear()
    statuses.update("cam1", answered=1)
    assert statuses._pending["cam1"] >= statuses._published_at["cam1"] + PROGRESS_INTERVAL_S
    unchanged = statuses.update("cam1", answered=1)
    assert unchanged is statuses.get("cam1")


def test_a_record_from_the_topic_replaces_only_an_older_one() -> None:
    statuses = board()
    held = statuses.update("cam1", state="running", answered=3)
    statuses.take(held.model_copy(update={"answered": 1, "updated_at": held.updated_at - timedelta(seconds=5)}))
    assert statuses.get("cam1") == held
    newer = held.model_copy(update={"state": "completed", "updated_at": held.updated_at + timedelta(seconds=1)})
    statuses.take(newer)
    assert statuses.get("cam1") == newer


def test_videos_are_listed_newest_first() -> None:
    statuses = board()
    now = utc_now()
    for age, video_id in ((3, "old"), (1, "new"), (2, "middle")):
        created = now - timedelta(seconds=age)
        statuses.take(VideoStatus(video_id=video_id, state="queued", created_at=created, updated_at=created))
    assert [s.video_id for s in statuses.videos()] == ["new", "middle", "old"]


def test_a_record_validates_against_the_schema_and_reads_back() -> None:
    status = board().update("cam1", state="completed", total_frames=4, answered=4, result_uri="s3://results/cam1.json")
    data = orjson.loads(status.to_json())
    assert list(Draft202012Validator(committed("status.json")).iter_errors(data)) == []
    assert set(data) == set(committed("status.json")["properties"])
    assert decode_status(status.to_json()) == status
    assert decode_status(b"not json") is None
    assert decode_status(b'{"video_id": "cam 1", "state": "queued"}') is None
    assert decode_status(None) is None


def test_the_reporter_never_moves_a_record_backwards() -> None:
    reporter = VideoReporter(board(), None, required=False)
    reporter.accepted("cam1", "low", "shapes@2")
    full = Assembly("cam1")
    for frame_id in range(3):
        full.add(result(frame_id))
    reporter.progressed(full)
    assert reporter.board.get("cam1").answered == 3
    rebuilt = Assembly("cam1")
    rebuilt.add(result(0))
    reporter.progressed(rebuilt)
    held = reporter.board.get("cam1")
    assert (held.state, held.answered, held.total_frames, held.model) == ("running", 3, 4, "shapes@2")
    reporter.board.update("cam1", state="completed")
    reporter.progressed(full)
    assert reporter.board.get("cam1").state == "completed"


def test_progress_right_after_a_change_of_state_does_not_hold_the_change_back() -> None:
    statuses = board()
    statuses.update("cam1", state="queued")
    statuses._published_at["cam1"] = time.monotonic()
    statuses._pending.clear()
    statuses.update("cam1", state="running")
    statuses.update("cam1", answered=1)
    assert statuses._pending["cam1"] <= time.monotonic()
