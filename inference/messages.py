"""The wire contract: FrameTask in, FrameResult out, orjson on the wire."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError, field_validator

from inference.errors import ErrorCode, FrameError, InvalidTask, UnreadableTask

VIDEO_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,200}$"
MAX_FRAME_ID = 2**63 - 1
MAX_S3_KEY_BYTES = 1024
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")

# A registry name or version: what may sit in an S3 key and a Prometheus label unescaped.
MODEL_PART_PATTERN = r"[A-Za-z0-9._-]{1,64}"
MODEL_REF_PATTERN = rf"^{MODEL_PART_PATTERN}(@{MODEL_PART_PATTERN})?$"
LOCAL_VERSION = "local"

VideoId = Annotated[str, Field(pattern=VIDEO_ID_PATTERN)]
ModelPart = Annotated[str, Field(pattern=rf"^{MODEL_PART_PATTERN}$")]
FrameId = Annotated[StrictInt, Field(ge=0, le=MAX_FRAME_ID)]


class FrameTask(BaseModel):
    """One frame to detect on; unknown fields are ignored so producers can add their own."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    video_id: VideoId
    frame_id: FrameId
    s3_key: str = Field(min_length=1)
    bucket: str | None = Field(None, min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    total_frames: Annotated[StrictInt, Field(ge=1, le=MAX_FRAME_ID)] | None = None
    timestamp_ms: Annotated[StrictFloat, Field(ge=0)] | None = None
    # "name" (its current version) or "name@version" (pinned); absent: the replica's own model.
    model: Annotated[str, Field(pattern=MODEL_REF_PATTERN)] | None = None

    @field_validator("s3_key")
    @classmethod
    def _safe_key(cls, key: str) -> str:
        if key.startswith("/"):
            raise ValueError("must not start with '/'")
        if ".." in key.split("/"):
            raise ValueError("must not contain a '..' segment")
        if _CONTROL_CHARACTER.search(key):
            raise ValueError("must not contain control characters")
        if len(key.encode()) > MAX_S3_KEY_BYTES:
            raise ValueError(f"must be at most {MAX_S3_KEY_BYTES} bytes")
        return key


# Decimals on the wire: a hundredth of a pixel or millisecond is below what anyone measures.
CONFIDENCE_DECIMALS = 5
PIXEL_DECIMALS = 2
MS_DECIMALS = 2


class Detection(BaseModel):
    class_id: int
    class_name: str
    confidence: float
    bbox: tuple[float, float, float, float]

    @field_validator("confidence")
    @classmethod
    def _round_confidence(cls, confidence: float) -> float:
        return round(confidence, CONFIDENCE_DECIMALS)

    @field_validator("bbox")
    @classmethod
    def _round_bbox(cls, bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        x1, y1, x2, y2 = (round(v, PIXEL_DECIMALS) for v in bbox)
        return x1, y1, x2, y2


class ImageInfo(BaseModel):
    width: int
    height: int


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    conf: float
    iou: float
    # "local" for the replica's own MODEL_PATH; None where the frame failed before a model was chosen.
    version: str | None = None
    sha256: str | None = None


class ModelRecord(BaseModel):
    """One version of a model in the registry (the value on the models topic, keyed by name)."""

    model_config = ConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    name: ModelPart
    version: ModelPart
    uri: str = Field(pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    imgsz: Annotated[StrictInt, Field(ge=32, le=4096)] | None = None
    created_at: str | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def bucket_and_key(self) -> tuple[str, str]:
        bucket, _, key = self.uri.removeprefix("s3://").partition("/")
        return bucket, key

    def to_json(self) -> bytes:
        return orjson.dumps(self.model_dump(mode="json"))


class ErrorInfo(BaseModel):
    code: ErrorCode
    message: str


class FrameResult(BaseModel):
    """The answer to one FrameTask; status "error" carries `error` and no detections."""

    model_config = ConfigDict(protected_namespaces=())

    video_id: str
    frame_id: int
    s3_key: str | None = None
    total_frames: int | None = None
    timestamp_ms: float | None = None
    status: Literal["ok", "error"]
    detections: list[Detection] = Field(default_factory=list)
    image: ImageInfo | None = None
    model: ModelInfo | None = None
    timing_ms: dict[str, float] = Field(default_factory=dict)
    worker: str = ""
    error: ErrorInfo | None = None

    @field_validator("timing_ms")
    @classmethod
    def _round_timing(cls, timing: dict[str, float]) -> dict[str, float]:
        return {stage: round(ms, MS_DECIMALS) for stage, ms in timing.items()}

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json", exclude_none=False)
        if data["error"] is None:
            del data["error"]
        return orjson.dumps(data)

    @classmethod
    def from_json(cls, raw: bytes) -> FrameResult:
        return cls.model_validate(orjson.loads(raw))


def task_ids(data: Any) -> tuple[str, int]:
    """The ids a result can be addressed by, or UnreadableTask when they cannot be read."""
    if not isinstance(data, dict):
        raise UnreadableTask(f"task is JSON {type(data).__name__}, not an object")
    try:
        ids = _TaskIds.model_validate({"video_id": data.get("video_id"), "frame_id": data.get("frame_id")})
    except ValidationError as exc:
        raise UnreadableTask(f"unreadable ids: {_first_error(exc)}") from None
    return ids.video_id, ids.frame_id


class _TaskIds(BaseModel):
    video_id: VideoId
    frame_id: FrameId


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "task"
    return f"{where}: {first['msg']}"[:300]


def parse_task(raw: bytes | None) -> FrameTask:
    """Decode a task: UnreadableTask (to the DLQ) or InvalidTask (to an error result) on bad input."""
    if raw is None:
        raise UnreadableTask("message has no value")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise UnreadableTask(f"not JSON: {str(exc)[:200]}") from None
    video_id, frame_id = task_ids(data)
    try:
        return FrameTask.model_validate(data)
    except ValidationError as exc:
        raise InvalidTask(_first_error(exc), video_id=video_id, frame_id=frame_id) from None


def error_info(exc: FrameError) -> ErrorInfo:
    """The one place an exception becomes its wire form."""
    return ErrorInfo(code=exc.code, message=str(exc)[:500])


def ok_result(
    task: FrameTask,
    *,
    width: int,
    height: int,
    detections: list[Detection],
    model: ModelInfo,
    timing_ms: dict[str, float],
    worker: str,
) -> FrameResult:
    return FrameResult(
        video_id=task.video_id,
        frame_id=task.frame_id,
        s3_key=task.s3_key,
        total_frames=task.total_frames,
        timestamp_ms=task.timestamp_ms,
        status="ok",
        detections=detections,
        image=ImageInfo(width=width, height=height),
        model=model,
        timing_ms=timing_ms,
        worker=worker,
    )


def failed_result(
    video_id: str,
    frame_id: int,
    exc: FrameError,
    *,
    task: FrameTask | None,
    model: ModelInfo,
    timing_ms: dict[str, float],
    worker: str,
) -> FrameResult:
    return FrameResult(
        video_id=video_id,
        frame_id=frame_id,
        s3_key=task.s3_key if task else None,
        total_frames=task.total_frames if task else None,
        timestamp_ms=task.timestamp_ms if task else None,
        status="error",
        model=model,
        timing_ms=timing_ms,
        worker=worker,
        error=error_info(exc),
    )
