"""What an assembler tells the world about a video: its status records and, once complete, its
document in the results bucket (named by the record's result_uri).

The document is uploaded and the `completed` record acknowledged before the caller moves on
(a collector commits its offsets after that), so a crash in between repeats the upload instead
of leaving a video that never completes.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from inference.config import KafkaSettings, S3Settings
from inference.logs import log_event
from runner.assembler import Assembly
from runner.errors import InfrastructureError
from runner.status import PriorityName, StatusBoard, VideoState, status_board, utc_now
from runner.status_store import ResultStore, result_store

logger = logging.getLogger(__name__)


class VideoReporter:
    """Status and results of the videos one assembler works on; `required=False` only warns on failures."""

    def __init__(self, board: StatusBoard, store: ResultStore | None, *, required: bool) -> None:
        self.board = board
        self.store = store
        self._required = required

    def accepted(self, video_id: str, priority: PriorityName = "normal", model: str | None = None) -> None:
        """A new job for this id: its record starts over as queued."""
        now = utc_now()
        self.board.update(video_id, state="queued", total_frames=None, answered=0, errors=0, priority=priority,
                          model=model, created_at=now, result_uri=None)  # fmt: skip

    def progressed(self, assembly: Assembly, state: VideoState = "running") -> None:
        """Counts of an unfinished video (published at most once a second, a new state at once)."""
        held = self.board.get(assembly.video_id)
        if held is not None and (held.terminal or assembly.received < held.answered):
            # A late duplicate of a finished video, or a buffer rebuilt after a restart that has not
            # caught up with what was published: the record never goes backwards.
            return
        self.board.update(assembly.video_id, state=state, **_counts(assembly))

    async def completed(self, assembly: Assembly) -> None:
        """Upload the document, then publish `completed` with its URI and wait for the acknowledgement."""
        uri = None
        if self.store is not None:
            try:
                uri = await self.store.put_document(assembly.video_id, assembly.document())
            except InfrastructureError as exc:
                self._degrade("result_upload_failed", assembly.video_id, exc)
        self.board.update(assembly.video_id, state="completed", result_uri=uri, **_counts(assembly))
        await self.board.publish_now(assembly.video_id)

    async def failed(self, assembly: Assembly) -> None:
        self.board.update(assembly.video_id, state="failed", **_counts(assembly))
        await self.board.publish_now(assembly.video_id)

    def _degrade(self, event: str, video_id: str, exc: InfrastructureError) -> None:
        if self._required:
            raise exc
        log_event(logger, logging.WARNING, event, video_id=video_id, error=str(exc))


def _counts(assembly: Assembly) -> dict[str, int | None]:
    return {"total_frames": assembly.total_frames, "answered": assembly.received, "errors": assembly.error_count}


@contextlib.asynccontextmanager
async def video_reporter(
    kafka: KafkaSettings, s3: S3Settings, *, required: bool, history: bool = True
) -> AsyncIterator[VideoReporter]:
    """A reporter with its board and results bucket; without `required`, what cannot be used is left out.

    `history`: read the status topic first, to carry on from the records of videos already under way."""
    async with status_board(kafka, required=required, history=history) as board, result_store(s3) as store:
        try:
            await store.check()
        except InfrastructureError as exc:
            if required:
                raise
            log_event(logger, logging.WARNING, "results_bucket_unavailable", bucket=s3.results_bucket, error=str(exc))
            yield VideoReporter(board, None, required=required)
            return
        yield VideoReporter(board, store, required=required)
