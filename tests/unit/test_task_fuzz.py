"""Fuzzing the way in: random bytes and mutated valid tasks never raise out of the handler.

Each record becomes either a result with a contract error code (or ok) keyed by its video,
or the record itself, unchanged, on the DLQ.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.config import S3Settings
from inference.handler import Destinations, FrameHandler
from inference.messages import FrameResult
from inference.metrics import Metrics
from tests.unit.test_handler import OUTPUT, Detector, Record, Router, Store

DESTINATIONS = Destinations(results_topic="results", dlq_topic="tasks.dlq")
CODES = {"invalid_task", "frame_not_found", "frame_too_large", "invalid_image", "inference_failed"}
VALID = {"video_id": "cam-1", "frame_id": 7, "s3_key": "cam-1/7.jpg", "total_frames": 9, "timestamp_ms": 1.5}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_values = (
    json_values
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from(["", "/abs", "a/../b", "x" * 1100, "ok.jpg", "bad id!", "\x00", "UPPER", "frames"])
)


@st.composite
def mutated_tasks(draw: st.DrawFn) -> dict[str, Any]:
    task: dict[str, Any] = dict(VALID)
    for field in draw(st.sets(st.sampled_from([*VALID, "bucket", "extra"]), max_size=4)):
        if draw(st.booleans()):
            task.pop(field, None)
        else:
            task[field] = draw(field_values)
    return task


def handler() -> FrameHandler:
    store = Store({VALID["s3_key"]: b"jpeg"})
    return FrameHandler(store, Detector(OUTPUT), Router(), DESTINATIONS, Metrics(), "w", S3Settings().allows)


def check(key: bytes | None, value: bytes | None) -> None:
    outgoing = asyncio.run(handler().answer(Record(key, value), {"topic": "t", "partition": 0, "offset": 1}))
    if outgoing.topic == DESTINATIONS.dlq_topic:
        assert (outgoing.key, outgoing.value) in {(key, value), (None, b"")}
        assert dict(outgoing.headers)["error.code"] == b"unreadable_task"
        return
    assert outgoing.topic == DESTINATIONS.results_topic
    assert outgoing.value is not None
    result = FrameResult.from_json(outgoing.value)
    assert outgoing.key == result.video_id.encode()
    assert result.status == "ok" or (result.error is not None and result.error.code in CODES)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.none(), st.binary(max_size=300)), st.one_of(st.none(), st.binary(max_size=300)))
def test_random_bytes_become_a_result_or_a_dlq_record(key: bytes | None, value: bytes | None) -> None:
    check(key, value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_tasks())
def test_mutated_tasks_become_a_result_or_a_dlq_record(task: dict[str, Any]) -> None:
    check(b"cam-1", orjson.dumps(task, option=orjson.OPT_NON_STR_KEYS) if _encodable(task) else b"{")


@settings(max_examples=200, deadline=None)
@given(json_values)
def test_any_json_document_becomes_a_result_or_a_dlq_record(document: Any) -> None:
    check(None, orjson.dumps(document) if _encodable(document) else b"[")


def _encodable(value: Any) -> bool:
    try:
        orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:
        return False
    return True
