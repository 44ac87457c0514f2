"""The server's videos: accepted uploads kept in S3, split in the background, assembled by the
server's collector, finished into the results bucket, rendered on request.

Ownership survives restarts through S3: a video is this server's to finish when its upload is in
`uploads/<video_id>` (with the sampling step as object metadata). At start (`resume`), a video
still queued is split again from that upload (a split killed half-way announced nothing), one
already running is left to the collector (which rebuilds its buffers from its commit point), and
one whose document is already in the results bucket is marked completed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import tempfile
from collections import OrderedDict
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import orjson
from aiokafka.errors import KafkaError

from inference.config import KafkaSettings, S3Settings
from inference.logs import log_event
from inference.messages import FrameResult
from inference.retry import S3_BACKOFF, RetryLog, retry
from runner.assembler import Assembly
from runner.errors import InfrastructureError, RunnerError
from runner.ids import video_id_for
from runner.render import annotate, render_video
from runner.splitter import SplitRequest, execute_split
from runner.status import LEVELS, PriorityName, StatusBoard, VideoStatus
from runner.status_reporter import VideoReporter
from runner.status_store import ResultStore, annotated_key, document_key, upload_key
from runner.video import Image

logger = logging.getLogger(__name__)

# Stricter than the contract's id: no leading dot, so an id is never `.` or `..` in a key or path.
API_VIDEO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
GENERATED_SUFFIX_BYTES = 3
MAX_STEM_CHARS = 180
CACHED_DOCUMENTS = 8
JPEG_QUALITY = 85


class UnknownVideo(Exception):
    """No such video (404)."""


class NotReady(Exception):
    """The video exists but has no result yet, or it already exists (409)."""


def new_video_id(filename: str | None) -> str:
    """An id from the upload's file name (never a path: only its cleaned stem) and a random suffix."""
    stem = video_id_for(Path(filename or "video")).lstrip(".")[:MAX_STEM_CHARS] or "video"
    return f"{stem}-{secrets.token_hex(GENERATED_SUFFIX_BYTES)}"


def is_video_file(path: Path) -> bool:
    """True when OpenCV opens the file and decodes a first frame."""
    capture = cv2.VideoCapture(str(path))
    try:
        return bool(capture.isOpened() and capture.grab())
    finally:
        capture.release()


def annotated_jpeg(data: bytes, result: FrameResult) -> bytes:
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise UnknownVideo(f"frame {result.frame_id} is not a readable image")
    image: Image = np.asarray(decoded, np.uint8)
    annotate(image, result)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise UnknownVideo(f"frame {result.frame_id} cannot be encoded")
    return bytes(encoded)


class Jobs:
    def __init__(
        self,
        kafka: KafkaSettings,
        s3: S3Settings,
        reporter: VideoReporter,
        results: ResultStore,
        work_dir: Path,
        max_concurrent_splits: int,
    ) -> None:
        self._kafka = kafka
        self._s3 = s3
        self._reporter = reporter
        self._results = results
        self._frames = results.for_bucket(s3.frames_bucket)
        self._work_dir = work_dir
        self._split_slots = asyncio.Semaphore(max_concurrent_splits)
        self._owned: set[str] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._render_locks: dict[str, asyncio.Lock] = {}
        self._documents: OrderedDict[str, dict[str, Any]] = OrderedDict()

    @property
    def board(self) -> StatusBoard:
        return self._reporter.board

    def status(self, video_id: str) -> VideoStatus:
        status = self.board.get(video_id)
        if status is None:
            raise UnknownVideo(f"no video {video_id!r}")
        return status

    def source_path(self) -> Path:
        """A new file in the work directory for an upload on its way in."""
        return self._work_dir / f"upload-{secrets.token_hex(8)}"

    async def accept(self, video_id: str, source: Path, every: int, priority: PriorityName, model: str | None) -> None:
        """Keep the upload in S3, publish `queued`, split in the background; `source` is the job's from now on."""
        if self.board.get(video_id) is not None or video_id in self._owned:
            raise NotReady(f"video {video_id!r} already exists")
        self._owned.add(video_id)
        try:
            metadata = {"every": str(every)}
            await self._results.put_file(upload_key(video_id), source, "application/octet-stream", metadata)
        except InfrastructureError:
            self._owned.discard(video_id)
            raise
        self._reporter.accepted(video_id, priority, model)
        await self.board.publish_now(video_id)
        log_event(logger, logging.INFO, "video_accepted", video_id=video_id, every=every, priority=priority,
                  model=model)  # fmt: skip
        self._spawn(self._split(video_id, source, every, model, priority))

    async def resume(self) -> None:
        """Take up the unfinished videos this server accepted before it last stopped."""
        for status in self.board.videos():
            if status.terminal:
                continue
            if await self._results.exists(document_key(status.video_id)):
                await self._finish_from_bucket(status.video_id)
                continue
            metadata = await self._results.metadata(upload_key(status.video_id))
            if metadata is None:
                continue  # assembled elsewhere (`runner run`, `runner collect`)
            self._owned.add(status.video_id)
            log_event(logger, logging.INFO, "video_resumed", video_id=status.video_id, state=status.state)
            if status.state == "queued":
                every = int(metadata.get("every", "1"))
                self._spawn(self._split_again(status.video_id, every, status.model, status.priority))

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    def on_progress(self, assembly: Assembly) -> None:
        if assembly.video_id in self._owned:
            self._reporter.progressed(assembly)

    async def on_written(self, path: Path, assembly: Assembly) -> None:
        """A video is complete: its document and `completed` are out before the collector commits past it."""
        try:
            if assembly.video_id in self._owned:
                await retry(
                    lambda: self._reporter.completed(assembly),
                    backoff=S3_BACKOFF,
                    log=RetryLog(logger, "finish_failed"),
                    retriable=lambda exc: isinstance(exc, InfrastructureError | KafkaError),
                    fields={"video_id": assembly.video_id},
                )
                log_event(logger, logging.INFO, "video_completed", video_id=assembly.video_id,
                          frames=assembly.received, errors=assembly.error_count)  # fmt: skip
        finally:
            await asyncio.to_thread(path.unlink, missing_ok=True)

    async def document(self, video_id: str) -> dict[str, Any]:
        """The completed video's assembled document (409 before that)."""
        if self.status(video_id).state != "completed":
            raise NotReady(f"video {video_id!r} is not completed")
        cached = self._documents.get(video_id)
        if cached is not None:
            self._documents.move_to_end(video_id)
            return cached
        data = await self._results.get_bytes(document_key(video_id))
        if data is None:
            raise UnknownVideo(f"the result of {video_id!r} is not in the results bucket")
        document: dict[str, Any] = orjson.loads(data)
        self._documents[video_id] = document
        if len(self._documents) > CACHED_DOCUMENTS:
            self._documents.popitem(last=False)
        return document

    async def frame(self, video_id: str, frame_id: int) -> bytes:
        """One sampled frame as a JPEG with its detections drawn."""
        document = await self.document(video_id)
        entry = next((f for f in document["frames"] if f.get("frame_id") == frame_id), None)
        if entry is None:
            raise UnknownVideo(f"video {video_id!r} has no frame {frame_id}")
        result = FrameResult.model_validate({**entry, "video_id": video_id})
        data = await self._frames.get_bytes(result.s3_key or "")
        if data is None:
            raise UnknownVideo(f"frame {frame_id} of {video_id!r} is no longer in the frames bucket")
        return await asyncio.to_thread(annotated_jpeg, data, result)

    async def annotated(self, video_id: str) -> str:
        """The key of the annotated video, rendered from the upload the first time it is asked for."""
        document = await self.document(video_id)
        key = annotated_key(video_id)
        async with self._render_locks.setdefault(video_id, asyncio.Lock()):
            if await self._results.exists(key):
                return key
            if not await self._results.exists(upload_key(video_id)):
                raise UnknownVideo(f"video {video_id!r} was not uploaded here: there is nothing to render")
            with tempfile.TemporaryDirectory(dir=self._work_dir) as tmp:
                source, result, out = Path(tmp) / "source", Path(tmp) / "result.json", Path(tmp) / "annotated.mp4"
                await self._results.download(upload_key(video_id), source)
                result.write_bytes(orjson.dumps(document))
                summary = await asyncio.to_thread(render_video, source, result, out)
                await self._results.put_file(key, out, "video/mp4")
            log_event(logger, logging.INFO, "video_rendered", video_id=video_id, frames=summary.frames)
        return key

    def stream(self, key: str) -> Any:
        return self._results.stream(key)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _split_again(self, video_id: str, every: int, model: str | None, priority: PriorityName) -> None:
        source = self.source_path()
        try:
            await self._results.download(upload_key(video_id), source)
        except InfrastructureError as exc:
            source.unlink(missing_ok=True)
            await self._fail(video_id, exc)
            return
        await self._split(video_id, source, every, model, priority)

    async def _split(self, video_id: str, source: Path, every: int, model: str | None, priority: PriorityName) -> None:
        try:
            async with self._split_slots:
                request = SplitRequest(source, video_id, every, model=model, priority=LEVELS[priority])
                summary = await execute_split(request, self._kafka, self._s3)
        except RunnerError as exc:
            await self._fail(video_id, exc)
            return
        finally:
            await asyncio.to_thread(source.unlink, missing_ok=True)
        held = self.board.get(video_id)
        # Results may already have moved the record on; the split only opens the running state.
        if held is not None and held.state == "queued":
            self.board.update(video_id, state="running", total_frames=summary.total_frames)
        log_event(logger, logging.INFO, "video_split", video_id=video_id, frames=summary.total_frames,
                  seconds=round(summary.seconds, 2))  # fmt: skip

    async def _fail(self, video_id: str, exc: RunnerError) -> None:
        log_event(logger, logging.WARNING, "video_failed", video_id=video_id, error=str(exc))
        self.board.update(video_id, state="failed")
        with contextlib.suppress(KafkaError):
            await self.board.publish_now(video_id)

    async def _finish_from_bucket(self, video_id: str) -> None:
        """A document uploaded before a crash that left the record behind: completed, counted from it."""
        data = await self._results.get_bytes(document_key(video_id))
        if data is None:
            return
        document = orjson.loads(data)
        self.board.update(video_id, state="completed", total_frames=document.get("total_frames"),
                          answered=len(document.get("frames", [])), errors=document.get("error_count", 0),
                          result_uri=self._results.uri(document_key(video_id)))  # fmt: skip
        await self.board.publish_now(video_id)
