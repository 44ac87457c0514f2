"""Answering one task record: the result to publish, or the record itself for the DLQ.

No Kafka here: a record is answered from a model router, a frame store and a detector pool, so
every error code and the DLQ path can be driven in a unit test with fakes. Whatever happens, the answer
is a record to publish; an exception never leaves `answer`, so no task stalls its partition.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from inference.backends import ModelTarget
from inference.detector import DetectOutput
from inference.errors import FrameError, InferenceFailed, InvalidTask, ModelUnavailable, UnreadableTask
from inference.logs import log_event
from inference.messages import Detection, FrameResult, FrameTask, ModelInfo, failed_result, ok_result, parse_task
from inference.metrics import Metrics
from inference.publish import Outgoing, fit_to_request
from inference.route import Routed

logger = logging.getLogger(__name__)


class TaskRecord(Protocol):
    """What the handler reads of a consumed record (aiokafka's ConsumerRecord has it)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


class FrameSource(Protocol):
    async def fetch(self, bucket: str | None, key: str, describe: dict[str, object]) -> bytes: ...


class Detector(Protocol):
    async def detect(
        self, data: bytes, target: ModelTarget | None, describe: dict[str, object], priority: int = ...
    ) -> DetectOutput: ...


class Router(Protocol):
    local: Routed

    async def route(self, reference: str | None) -> Routed: ...

    def unavailable(self, ref: str, exc: ModelUnavailable) -> None: ...

    def loaded(self, routed: Routed, output: DetectOutput) -> None: ...


@dataclass(frozen=True)
class Destinations:
    """Where answers go: results, and the DLQ for records whose ids cannot be read."""

    results_topic: str
    dlq_topic: str


BucketPolicy = Callable[[str | None], bool]


class FrameHandler:
    """Turns task records into outgoing records; counts and measures what it answers."""

    def __init__(
        self,
        store: FrameSource,
        detector: Detector,
        router: Router,
        destinations: Destinations,
        metrics: Metrics,
        worker: str,
        allows_bucket: BucketPolicy,
    ) -> None:
        self._allows_bucket = allows_bucket
        self._store = store
        self._detector = detector
        self._router = router
        self._destinations = destinations
        self._metrics = metrics
        self._worker = worker
        self.counts: dict[str, int] = defaultdict(int)

    async def answer(self, record: TaskRecord, describe: dict[str, object], priority: int = 1) -> Outgoing:
        """The record to publish for one task; `describe` gains the task's video_id and frame_id.

        `priority` (0 high, 1 normal, 2 low) orders the frame in the detector pool's queue.
        """
        started = time.perf_counter()
        try:
            task = self._parse(record.value)
        except UnreadableTask as exc:
            return self._dead_letter(record, exc, describe)
        except InvalidTask as exc:
            describe.update(video_id=exc.video_id, frame_id=exc.frame_id)
            model = self._router.local.info
            return self._result(self._failed(exc.video_id, exc.frame_id, exc, None, model, started, describe))
        describe.update(video_id=task.video_id, frame_id=task.frame_id)
        model = _requested(task.model, self._router.local.info)
        try:
            routed = await self._router.route(task.model)
            model = routed.info
            describe.update(model=model.name, version=model.version)
            result = await self._detect(task, routed, started, describe, priority)
        except FrameError as exc:
            result = self._failed(task.video_id, task.frame_id, exc, task, model, started, describe)
        except Exception as exc:  # noqa: BLE001 - a bug must answer the frame, not stall the partition
            log_event(logger, logging.ERROR, "frame_crashed", exc_info=True, **describe)
            failure = InferenceFailed(f"unexpected {type(exc).__name__}: {exc}")
            result = self._failed(task.video_id, task.frame_id, failure, task, model, started, describe)
        return self._result(result)

    def _parse(self, value: bytes | None) -> FrameTask:
        task = parse_task(value)
        if not self._allows_bucket(task.bucket):
            # Checked before any request: a task must not make the worker read a bucket it was not meant to.
            message = f"bucket: {task.bucket!r} is not among the buckets this worker may read (S3_ALLOWED_BUCKETS)"
            raise InvalidTask(message, video_id=task.video_id, frame_id=task.frame_id)
        return task

    async def _detect(
        self, task: FrameTask, routed: Routed, started: float, describe: dict[str, object], priority: int
    ) -> FrameResult:
        data = await self._store.fetch(task.bucket, task.s3_key, describe)
        fetched = time.perf_counter()
        try:
            output = await self._detector.detect(data, routed.target, describe, priority)
        except ModelUnavailable as exc:
            self._router.unavailable(routed.ref, exc)
            raise
        done = time.perf_counter()
        self._router.loaded(routed, output)
        detect_s = output.detect_ms / 1000
        queue_s = max(0.0, done - fetched - detect_s - output.load_ms / 1000)
        self.counts["ok"] += 1
        self._metrics.frame_done("ok")
        self._metrics.model_frames.labels(model=routed.info.name, version=routed.info.version or "").inc()
        self._metrics.observe("fetch", fetched - started)
        self._metrics.observe("detect", detect_s)
        self._metrics.observe("queue", queue_s)
        timing_ms = {"fetch": (fetched - started) * 1000, "detect": output.detect_ms, "queue": queue_s * 1000}
        if output.load_ms > 0:
            timing_ms["load"] = output.load_ms  # this frame waited for its model to load
        return ok_result(
            task,
            width=output.width,
            height=output.height,
            detections=[Detection.model_validate(d, from_attributes=True) for d in output.detections],
            model=routed.info,
            timing_ms={**timing_ms, "total": (done - started) * 1000},
            worker=self._worker,
        )

    def _failed(
        self,
        video_id: str,
        frame_id: int,
        exc: FrameError,
        task: FrameTask | None,
        model: ModelInfo,
        started: float,
        describe: dict[str, object],
    ) -> FrameResult:
        self.counts[exc.code] += 1
        self._metrics.frame_done("error", exc.code)
        log_event(logger, logging.ERROR, "frame_failed", code=exc.code, error=str(exc)[:300], **describe)
        timing = {"total": (time.perf_counter() - started) * 1000}
        return failed_result(video_id, frame_id, exc, task=task, model=model, timing_ms=timing, worker=self._worker)

    def _result(self, result: FrameResult) -> Outgoing:
        return Outgoing(self._destinations.results_topic, result.video_id.encode(), result.to_json())

    def _dead_letter(self, record: TaskRecord, exc: UnreadableTask, describe: dict[str, object]) -> Outgoing:
        self.counts["dlq"] += 1
        self._metrics.frame_done("dlq", exc.code)
        self._metrics.dlq_messages.inc()
        log_event(logger, logging.ERROR, "task_unreadable", error=str(exc), video_id=None, frame_id=None, **describe)
        headers = [("error.code", exc.code.encode()), ("error.message", str(exc).encode()[:1000])]
        # aiokafka cannot produce a record with neither key nor value: such a record keeps an empty value.
        value = b"" if record.key is None and record.value is None else record.value
        return fit_to_request(Outgoing(self._destinations.dlq_topic, record.key, value, headers))


def _requested(reference: str | None, local: ModelInfo) -> ModelInfo:
    """What a failed frame reports as its model before one was routed: the one it asked for."""
    if reference is None:
        return local
    name, _, version = reference.partition("@")
    return ModelInfo(name=name, conf=local.conf, iou=local.iou, version=version or None)
