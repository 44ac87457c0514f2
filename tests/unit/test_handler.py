"""Answering one record without Kafka: every error code, the DLQ path, and a result's rounding."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
import pytest

from inference.backends import ModelTarget
from inference.config import S3Settings
from inference.detector import DetectOutput, RawDetection
from inference.errors import (
    FrameNotFound,
    FrameTooLarge,
    InferenceFailed,
    InvalidImage,
    ModelNotFound,
    ModelUnavailable,
)
from inference.handler import Destinations, FrameHandler
from inference.messages import FrameResult, ModelInfo
from inference.metrics import Metrics
from inference.publish import Outgoing
from inference.route import Routed

DESTINATIONS = Destinations(results_topic="results", dlq_topic="tasks.dlq")
TASK = {"video_id": "cam-1", "frame_id": 7, "s3_key": "cam-1/000007.jpg", "total_frames": 9, "timestamp_ms": 280.0}
OUTPUT = DetectOutput(
    width=640,
    height=360,
    detections=(RawDetection(1, "square", 0.912345678, (10.123456, 20.0, 30.987654, 40.5)),),
    detect_ms=12.3456789,
)


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes | None


class Store:
    """Frames by key; a key mapped to an exception raises it."""

    def __init__(self, objects: dict[str, bytes | Exception]) -> None:
        self.objects = objects
        self.asked: list[tuple[str | None, str]] = []

    async def fetch(self, bucket: str | None, key: str, describe: dict[str, object]) -> bytes:
        self.asked.append((bucket, key))
        found = self.objects.get(key, FrameNotFound(f"s3://frames/{key}: NoSuchKey"))
        if isinstance(found, Exception):
            raise found
        return found


class Detector:
    def __init__(self, answer: DetectOutput | Exception = OUTPUT) -> None:
        self.answer = answer
        self.seen: list[bytes] = []
        self.targets: list[ModelTarget | None] = []

    async def detect(
        self, data: bytes, target: ModelTarget | None, describe: dict[str, object], priority: int = 1
    ) -> DetectOutput:
        self.seen.append(data)
        self.targets.append(target)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


LOCAL = Routed(ModelInfo(name="best.pt", conf=0.25, iou=0.45, version="local", sha256="a" * 64), None)
SHAPES_2 = Routed(
    ModelInfo(name="shapes", conf=0.25, iou=0.45, version="2", sha256="b" * 64),
    ModelTarget("/cache/b/shapes.onnx", 320, "shapes@2"),
)


class Router:
    """Model references to routed models; a reference mapped to an exception raises it."""

    local = LOCAL

    def __init__(self, models: dict[str, Routed | Exception] | None = None) -> None:
        self.models = models or {"shapes": SHAPES_2}
        self.unavailable_refs: list[str] = []
        self.loads: list[float] = []

    async def route(self, reference: str | None) -> Routed:
        if reference is None:
            return LOCAL
        found = self.models.get(reference, ModelNotFound(f"no model named {reference!r} is registered"))
        if isinstance(found, Exception):
            raise found
        return found

    def unavailable(self, ref: str, exc: ModelUnavailable) -> None:
        self.unavailable_refs.append(ref)

    def loaded(self, routed: Routed, output: DetectOutput) -> None:
        self.loads.append(output.load_ms)


def handler(store: Store | None = None, detector: Detector | None = None, router: Router | None = None) -> FrameHandler:
    return FrameHandler(
        store or Store({TASK["s3_key"]: b"jpeg"}),
        detector or Detector(),
        router or Router(),
        DESTINATIONS,
        Metrics(),
        "host-1",
        S3Settings(allowed_buckets="frames,other-bucket").allows,
    )


def task_record(**changes: object) -> Record:
    return Record(b"cam-1", orjson.dumps({**TASK, **changes}))


def result_of(outgoing: Outgoing) -> FrameResult:
    assert outgoing.topic == DESTINATIONS.results_topic
    assert outgoing.value is not None
    return FrameResult.from_json(outgoing.value)


async def test_a_good_frame_becomes_an_ok_result_keyed_by_video() -> None:
    frames = handler()
    describe: dict[str, object] = {"topic": "tasks", "partition": 3, "offset": 41}
    outgoing = await frames.answer(task_record(), describe)
    result = result_of(outgoing)
    assert outgoing.key == b"cam-1"
    assert (result.status, result.video_id, result.frame_id, result.total_frames) == ("ok", "cam-1", 7, 9)
    assert result.image is not None and (result.image.width, result.image.height) == (640, 360)
    assert [(d.class_name, d.confidence, d.bbox) for d in result.detections] == [
        ("square", 0.91235, (10.12, 20.0, 30.99, 40.5))
    ]
    assert result.worker == "host-1"
    assert describe == {"topic": "tasks", "partition": 3, "offset": 41, "video_id": "cam-1", "frame_id": 7,
                        "model": "best.pt", "version": "local"}  # fmt: skip
    assert frames.counts == {"ok": 1}
    assert result.model == LOCAL.info


async def test_timings_are_rounded_to_hundredths_of_a_millisecond() -> None:
    result = result_of(await handler().answer(task_record(), {}))
    assert set(result.timing_ms) == {"fetch", "detect", "queue", "total"}
    assert result.timing_ms["detect"] == 12.35
    assert all(round(ms, 2) == ms for ms in result.timing_ms.values())


async def test_the_frame_is_fetched_from_the_tasks_bucket_and_its_bytes_detected() -> None:
    store, detector = Store({"k.jpg": b"bytes-of-k"}), Detector()
    await handler(store, detector).answer(task_record(s3_key="k.jpg", bucket="other-bucket"), {})
    assert store.asked == [("other-bucket", "k.jpg")]
    assert detector.seen == [b"bytes-of-k"]


@pytest.mark.parametrize(
    ("store_answer", "detector_answer", "code"),
    [
        (FrameNotFound("s3://frames/k: NoSuchKey"), OUTPUT, "frame_not_found"),
        (FrameTooLarge("s3://frames/k is 99 bytes, over the limit of 10"), OUTPUT, "frame_too_large"),
        (b"jpeg", InvalidImage("not a JPEG or PNG image"), "invalid_image"),
        (b"jpeg", InferenceFailed("pool process died on this frame 3 times"), "inference_failed"),
    ],
)
async def test_each_frame_error_becomes_an_error_result_with_its_code(
    store_answer: bytes | Exception, detector_answer: DetectOutput | Exception, code: str
) -> None:
    frames = handler(Store({TASK["s3_key"]: store_answer}), Detector(detector_answer))
    result = result_of(await frames.answer(task_record(), {}))
    assert result.status == "error"
    assert result.error is not None and result.error.code == code
    assert result.error.message == str(store_answer if isinstance(store_answer, Exception) else detector_answer)
    assert result.detections == []
    assert (result.video_id, result.frame_id, result.s3_key) == ("cam-1", 7, TASK["s3_key"])
    assert frames.counts == {code: 1}


async def test_a_bug_in_a_stage_answers_the_frame_as_inference_failed() -> None:
    result = result_of(
        await handler(detector=Detector(ZeroDivisionError("division by zero"))).answer(task_record(), {})
    )
    assert result.error is not None
    assert result.error.code == "inference_failed"
    assert result.error.message == "unexpected ZeroDivisionError: division by zero"


async def test_a_task_with_readable_ids_but_a_bad_field_gets_invalid_task() -> None:
    store = Store({})
    outgoing = await handler(store).answer(task_record(s3_key="../etc/passwd"), {})
    result = result_of(outgoing)
    assert result.error is not None and result.error.code == "invalid_task"
    assert "s3_key" in result.error.message
    assert (result.video_id, result.frame_id) == ("cam-1", 7)
    assert store.asked == []  # nothing is fetched for a task that names a bad key


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"k", b"\xff not json", "not JSON"),
        (b"k", b"[1, 2]", "not an object"),
        (None, b'{"video_id": "cam-1"}', "frame_id"),
        (b"k", b'{"video_id": "bad id!", "frame_id": 1}', "video_id"),
        (b"k", None, "no value"),
    ],
)
async def test_an_unreadable_task_goes_to_the_dlq_unchanged(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    frames = handler()
    outgoing = await frames.answer(Record(key, value), {"topic": "tasks", "partition": 0, "offset": 5})
    assert outgoing.topic == DESTINATIONS.dlq_topic
    assert (outgoing.key, outgoing.value) == (key, value)
    headers = dict(outgoing.headers)
    assert headers["error.code"] == b"unreadable_task"
    assert reason in headers["error.message"].decode()
    assert frames.counts == {"dlq": 1}


async def test_a_record_with_neither_key_nor_value_goes_to_the_dlq_with_an_empty_value() -> None:
    outgoing = await handler().answer(Record(None, None), {})
    assert (outgoing.topic, outgoing.key, outgoing.value) == (DESTINATIONS.dlq_topic, None, b"")


async def test_metrics_count_answers_by_status_and_code() -> None:
    frames = handler(Store({}))
    await frames.answer(task_record(), {})
    await frames.answer(Record(None, b"nope"), {})
    metrics = frames._metrics.registry
    assert metrics.get_sample_value("inference_frames_total", {"status": "error", "code": "frame_not_found"}) == 1
    assert metrics.get_sample_value("inference_frames_total", {"status": "dlq", "code": "unreadable_task"}) == 1
    assert metrics.get_sample_value("inference_dlq_messages_total") == 1


async def test_a_bucket_outside_the_allow_list_gets_invalid_task_without_a_request() -> None:
    store = Store({TASK["s3_key"]: b"jpeg"})
    result = result_of(await handler(store).answer(task_record(bucket="private"), {}))
    assert result.error is not None and result.error.code == "invalid_task"
    assert "'private'" in result.error.message and "S3_ALLOWED_BUCKETS" in result.error.message
    assert store.asked == []


@pytest.mark.parametrize(
    ("allowed", "bucket", "allows"),
    [
        (None, None, True),
        (None, "frames", True),
        (None, "private", False),
        ("frames,archive", "archive", True),
        ("archive", None, False),
        (" frames , archive ", "frames", True),
        ("*", "anything-at-all", True),
    ],
)
def test_the_bucket_allow_list(allowed: str | None, bucket: str | None, allows: bool) -> None:
    assert S3Settings(allowed_buckets=allowed).allows(bucket) is allows


async def test_a_task_naming_a_model_runs_on_it_and_its_result_carries_version_and_sha256() -> None:
    detector = Detector()
    result = result_of(await handler(detector=detector).answer(task_record(model="shapes"), {}))
    assert result.status == "ok"
    assert detector.targets == [SHAPES_2.target]
    assert result.model == SHAPES_2.info


async def test_an_unknown_model_is_model_not_found_naming_what_was_asked_and_fetches_nothing() -> None:
    store = Store({TASK["s3_key"]: b"jpeg"})
    result = result_of(await handler(store).answer(task_record(model="nope@4"), {}))
    assert result.error is not None and result.error.code == "model_not_found"
    assert result.model is not None and (result.model.name, result.model.version) == ("nope", "4")
    assert store.asked == []


async def test_weights_that_fail_in_the_pool_are_model_unavailable_and_remembered() -> None:
    router = Router()
    detector = Detector(ModelUnavailable("model shapes@2 does not load: bad weights"))
    result = result_of(await handler(detector=detector, router=router).answer(task_record(model="shapes"), {}))
    assert result.error is not None and result.error.code == "model_unavailable"
    assert result.model == SHAPES_2.info
    assert router.unavailable_refs == ["shapes@2"]


async def test_a_frame_that_loaded_its_model_reports_the_load_apart_from_its_queue_time() -> None:
    router = Router()
    output = DetectOutput(640, 360, (), detect_ms=10.0, load_ms=2500.0, evicted=("old@1",))
    result = result_of(await handler(detector=Detector(output), router=router).answer(task_record(model="shapes"), {}))
    assert result.timing_ms["load"] == 2500.0
    assert result.timing_ms["queue"] < 2500.0
    assert router.loads == [2500.0]


async def test_a_malformed_model_reference_is_an_invalid_task() -> None:
    result = result_of(await handler().answer(task_record(model="a/b"), {}))
    assert result.error is not None and result.error.code == "invalid_task"
    assert result.error.message.startswith("model:")
