"""The wire contract: shapes, validation, error codes."""

from __future__ import annotations

import orjson
import pytest

from inference.errors import (
    FrameError,
    FrameNotFound,
    FrameTooLarge,
    InferenceFailed,
    InvalidImage,
    InvalidTask,
    UnreadableTask,
)
from inference.messages import (
    Detection,
    FrameResult,
    FrameTask,
    ModelInfo,
    error_info,
    failed_result,
    ok_result,
    parse_task,
)

GOOD = {"video_id": "cam1-2026-11-22", "frame_id": 17, "s3_key": "cam1-2026-11-22/000017.jpg"}
MODEL = ModelInfo(name="best.pt", conf=0.25, iou=0.45, version="local", sha256="a" * 64)


def raw(**fields: object) -> bytes:
    return orjson.dumps({**GOOD, **fields})


def test_full_task_round_trips() -> None:
    task = parse_task(raw(bucket="frames", total_frames=240, timestamp_ms=566.7))
    assert task == FrameTask(
        video_id="cam1-2026-11-22",
        frame_id=17,
        s3_key="cam1-2026-11-22/000017.jpg",
        bucket="frames",
        total_frames=240,
        timestamp_ms=566.7,
    )


def test_optional_fields_default_and_extra_fields_are_ignored() -> None:
    task = parse_task(raw(camera="north", nested={"a": 1}))
    assert task.bucket is None
    assert task.total_frames is None
    assert task.timestamp_ms is None
    assert not hasattr(task, "camera")


@pytest.mark.parametrize(
    "payload",
    [b"not json", b"", b"[1, 2]", b'"text"', b"null", b"{}", b'{"video_id": "v"}', b'{"frame_id": 1}'],
)
def test_unreadable_tasks_go_to_the_dlq(payload: bytes) -> None:
    with pytest.raises(UnreadableTask):
        parse_task(payload)


def test_missing_value_is_unreadable() -> None:
    with pytest.raises(UnreadableTask):
        parse_task(None)


@pytest.mark.parametrize(
    "fields",
    [
        {"video_id": "has space"},
        {"video_id": "x" * 201},
        {"video_id": ""},
        {"video_id": 12},
        {"frame_id": -1},
        {"frame_id": "17"},
        {"frame_id": 1.5},
        {"frame_id": True},
        {"frame_id": 2**63},
    ],
)
def test_unreadable_ids_go_to_the_dlq(fields: dict[str, object]) -> None:
    with pytest.raises(UnreadableTask):
        parse_task(raw(**fields))


def test_frame_ids_beyond_64_bits_are_unreadable() -> None:
    huge = b'{"video_id": "v", "frame_id": 18446744073709551616, "s3_key": "k"}'
    with pytest.raises(UnreadableTask):
        parse_task(huge)


def test_deeply_nested_json_is_unreadable_not_a_crash() -> None:
    with pytest.raises(UnreadableTask):
        parse_task(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "fields",
    [
        {"s3_key": "/abs/000017.jpg"},
        {"s3_key": "a/../b.jpg"},
        {"s3_key": ".."},
        {"s3_key": ""},
        {"s3_key": "a/b\x00.jpg"},
        {"s3_key": "a/b\n.jpg"},
        {"s3_key": "a/b\x1f.jpg"},
        {"s3_key": "a/b\x7f.jpg"},
        {"s3_key": "k" * 2000},
        {"s3_key": None},
        {"bucket": "Not_A_Bucket"},
        {"total_frames": 0},
        {"total_frames": "240"},
        {"timestamp_ms": -1},
    ],
)
def test_invalid_fields_with_readable_ids_are_invalid_task(fields: dict[str, object]) -> None:
    with pytest.raises(InvalidTask) as caught:
        parse_task(raw(**fields))
    assert caught.value.video_id == GOOD["video_id"]
    assert caught.value.frame_id == GOOD["frame_id"]
    assert caught.value.code == "invalid_task"


def test_dotted_names_that_are_not_parent_segments_are_fine() -> None:
    assert parse_task(raw(s3_key="a/..b/c..jpg")).s3_key == "a/..b/c..jpg"


def test_ok_result_has_the_contract_shape() -> None:
    task = parse_task(raw(total_frames=240, timestamp_ms=566.7))
    result = ok_result(
        task,
        width=640,
        height=480,
        detections=[Detection(class_id=0, class_name="circle", confidence=0.91, bbox=(1.0, 2.0, 30.0, 40.0))],
        model=MODEL,
        timing_ms={"fetch": 3.1, "detect": 92.4, "total": 97.0},
        worker="host-1",
    )
    data = orjson.loads(result.to_json())
    assert data == {
        "video_id": "cam1-2026-11-22",
        "frame_id": 17,
        "s3_key": "cam1-2026-11-22/000017.jpg",
        "total_frames": 240,
        "timestamp_ms": 566.7,
        "status": "ok",
        "detections": [{"class_id": 0, "class_name": "circle", "confidence": 0.91, "bbox": [1.0, 2.0, 30.0, 40.0]}],
        "image": {"width": 640, "height": 480},
        "model": {"name": "best.pt", "conf": 0.25, "iou": 0.45, "version": "local", "sha256": "a" * 64},
        "timing_ms": {"fetch": 3.1, "detect": 92.4, "total": 97.0},
        "worker": "host-1",
    }
    assert FrameResult.from_json(result.to_json()) == result


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (InvalidTask("bad", video_id="v", frame_id=1), "invalid_task"),
        (FrameNotFound("gone"), "frame_not_found"),
        (FrameTooLarge("big"), "frame_too_large"),
        (InvalidImage("garbage"), "invalid_image"),
        (InferenceFailed("crashed"), "inference_failed"),
    ],
)
def test_every_error_code_has_its_wire_form(exc: FrameError, code: str) -> None:
    result = failed_result("v", 1, exc, task=None, model=MODEL, timing_ms={"total": 1.0}, worker="w")
    data = orjson.loads(result.to_json())
    assert data["status"] == "error"
    assert data["detections"] == []
    assert data["error"] == {"code": code, "message": str(exc)}
    assert error_info(exc).code == code
