"""The /v1 API: upload a video, list and read statuses, fetch results, frames, the annotated video, models."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import orjson
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response, status
from fastapi import Path as PathParam
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile
from starlette.types import Message, Receive

from inference.messages import MODEL_REF_PATTERN, VIDEO_ID_PATTERN, ModelRecord
from runner.errors import InfrastructureError
from runner.serve.auth import require_key
from runner.serve.jobs import API_VIDEO_ID, Jobs, NotReady, UnknownVideo, is_video_file, new_video_id
from runner.serve.models import registered_models
from runner.serve.settings import ApiSettings
from runner.status import PriorityName, VideoState, VideoStatus

# The form's own fields around the file: allowed on top of API_MAX_UPLOAD_BYTES.
FORM_OVERHEAD_BYTES = 64 * 1024
MAX_EVERY = 10_000
MODEL = re.compile(MODEL_REF_PATTERN)
PRIORITIES: dict[str, PriorityName] = {"high": "high", "normal": "normal", "low": "low"}
FORM_FIELDS = ("file", "video_id", "every", "priority", "model")
COPY_CHUNK_BYTES = 1 << 20


class Problem(BaseModel):
    detail: str


class Accepted(BaseModel):
    video_id: str
    status_url: str


def _problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": Problem} for code in codes}


_FILE_FIELDS = {
    "file": {"type": "string", "format": "binary", "description": "The video"},
    "video_id": {
        "type": "string",
        "pattern": f"^{API_VIDEO_ID.pattern}$",
        "description": "Default: from the file name, with a random suffix",
    },
    "every": {"type": "integer", "minimum": 1, "maximum": MAX_EVERY, "default": 1, "description": "Every Nth frame"},
    "priority": {
        "type": "string",
        "enum": list(PRIORITIES),
        "default": "normal",
        "description": "The task topic of that level",
    },
    "model": {"type": "string", "pattern": MODEL_REF_PATTERN, "description": "A registered model for every task"},
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": _FILE_FIELDS,
                }
            }
        },
    }
}

VideoIdParam = Annotated[str, PathParam(pattern=VIDEO_ID_PATTERN)]
router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)], responses=_problems(401, 403, 429, 503))


def _jobs(request: Request) -> Jobs:
    jobs: Jobs = request.app.state.jobs
    return jobs


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """The jobs' refusals as HTTP answers."""
    try:
        yield
    except UnknownVideo as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except NotReady as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None
    except (InfrastructureError, KafkaError) as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"storage or Kafka unavailable: {exc}") from None


class _TooLarge(Exception):
    pass


def _counted(receive: Receive, limit: int) -> Receive:
    """`receive` that gives up once the body passes `limit` bytes: a large upload is refused while it arrives."""
    seen = 0

    async def counted() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > limit:
            raise _TooLarge
        return message

    return counted


def _too_large(api: ApiSettings) -> HTTPException:
    return HTTPException(status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, f"the upload is over {api.max_upload_bytes} bytes")


def _field(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"{name} must be a form field, not a file")
    return value


def _options(form: FormData) -> tuple[str | None, int, PriorityName, str | None]:
    """video_id, every, priority and model from the form, each checked (422 naming the field)."""
    unknown = set(form.keys()) - set(FORM_FIELDS)
    if unknown:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"unknown form fields: {sorted(unknown)}")
    video_id = _field(form, "video_id")
    if video_id is not None and not API_VIDEO_ID.fullmatch(video_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "video_id: 1-200 characters of A-Z a-z 0-9 . _ : -, not starting with '.'")  # fmt: skip
    every_text = _field(form, "every") or "1"
    if not every_text.isdigit() or not 1 <= int(every_text) <= MAX_EVERY:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, f"every: an integer from 1 to {MAX_EVERY}")
    priority = PRIORITIES.get(_field(form, "priority") or "normal")
    if priority is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "priority: high, normal or low")
    model = _field(form, "model")
    if model is not None and not MODEL.fullmatch(model):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "model: NAME or NAME@VERSION")
    return video_id, int(every_text), priority, model


def _copy(source: BinaryIO, target: Path, limit: int) -> bool:
    """Copy in chunks; False (and nothing kept) once more than `limit` bytes came."""
    copied = 0
    with target.open("wb") as out:
        while chunk := source.read(COPY_CHUNK_BYTES):
            copied += len(chunk)
            if copied > limit:
                break
            out.write(chunk)
    if copied > limit:
        target.unlink()
        return False
    return True


async def _read_form(request: Request, api: ApiSettings) -> FormData:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > api.max_upload_bytes + FORM_OVERHEAD_BYTES:
        raise _too_large(api)
    limited = Request(request.scope, _counted(request.receive, api.max_upload_bytes + FORM_OVERHEAD_BYTES))
    try:
        return await limited.form(max_files=1, max_fields=len(FORM_FIELDS))
    except _TooLarge:
        raise _too_large(api) from None


@router.post(
    "/videos",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Upload a video to detect on",
    responses=_problems(400, 409, 413, 415, 422),
    openapi_extra=UPLOAD_BODY,
)
async def upload_video(request: Request) -> Accepted:
    """Multipart `file` (+ optional `video_id`, `every`, `priority`, `model`): kept in S3, split in the background."""
    jobs, api = _jobs(request), request.app.state.api
    form = await _read_form(request, api)
    try:
        video_id, every, priority, model = _options(form)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "file: the video is required")
        video_id = video_id or new_video_id(upload.filename)
        source = jobs.source_path()
        if not await asyncio.to_thread(_copy, upload.file, source, api.max_upload_bytes):
            raise _too_large(api)
        try:
            if not await asyncio.to_thread(is_video_file, source):
                raise HTTPException(status.HTTP_415_UNSUPPORTED_MEDIA_TYPE, "file: not a video this server can decode")
            with _answers():
                await jobs.accept(video_id, source, every, priority, model)
        except BaseException:
            source.unlink(missing_ok=True)
            raise
    finally:
        await form.close()
    return Accepted(video_id=video_id, status_url=f"/v1/videos/{video_id}")


@router.get("/videos", summary="Videos, newest first")
async def list_videos(
    request: Request,
    state: Annotated[VideoState | None, Query(description="Only videos in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[VideoStatus]:
    videos = _jobs(request).board.videos()
    return [v for v in videos if state is None or v.state == state][:limit]


@router.get("/videos/{video_id}", summary="A video's status", responses=_problems(404))
async def get_video(request: Request, video_id: VideoIdParam) -> VideoStatus:
    with _answers():
        return _jobs(request).status(video_id)


@router.get(
    "/videos/{video_id}/result",
    summary="The assembled result document",
    responses={**_problems(404, 409), 200: {"content": {"application/json": {"schema": {"type": "object"}}}}},
    response_class=Response,
)
async def get_result(request: Request, video_id: VideoIdParam) -> Response:
    with _answers():
        document = await _jobs(request).document(video_id)
    return Response(orjson.dumps(document), media_type="application/json")


@router.get(
    "/videos/{video_id}/frames/{frame_id}",
    summary="One sampled frame with its detections drawn (JPEG)",
    responses={**_problems(404, 409), 200: {"content": {"image/jpeg": {}}}},
    response_class=Response,
)
async def get_frame(
    request: Request, video_id: VideoIdParam, frame_id: Annotated[int, PathParam(ge=0, le=2**63 - 1)]
) -> Response:
    with _answers():
        data = await _jobs(request).frame(video_id, frame_id)
    return Response(data, media_type="image/jpeg")


@router.get(
    "/videos/{video_id}/annotated.mp4",
    summary="The video with its detections drawn (rendered on the first request, then kept)",
    responses={**_problems(404, 409), 200: {"content": {"video/mp4": {}}}},
    response_class=StreamingResponse,
)
async def get_annotated(request: Request, video_id: VideoIdParam) -> StreamingResponse:
    jobs = _jobs(request)
    with _answers():
        key = await jobs.annotated(video_id)
    return StreamingResponse(jobs.stream(key), media_type="video/mp4",
                             headers={"Content-Disposition": f'attachment; filename="{video_id}.mp4"'})  # fmt: skip


@router.get("/models", summary="Registered models, by name (the current version of each)")
async def list_models(request: Request) -> list[ModelRecord]:
    return await registered_models(request.app.state.kafka)
