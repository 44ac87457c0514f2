"""Reassembly: FrameResults of one video -> its ordered result document.

`Assembly` is one video's reorder buffer: it keeps one result per frame_id (a later
duplicate is counted and dropped, except that a success replaces an earlier failure of
the same frame, as after a redelivery), knows when all `total_frames` are in, and hands
out frames in frame order as soon as each next one is there.

`commit_offsets` is the collector's watermark: offsets may be committed only up to the
first result of any video still being buffered, so that a restarted collector re-reads
and rebuilds every incomplete buffer. `write_document` makes a document durable before
the offsets behind it are committed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson

from inference.messages import FrameResult

P = TypeVar("P", bound=Hashable)


class Assembly:
    """The results of one video received so far."""

    def __init__(self, video_id: str) -> None:
        self.video_id = video_id
        self.total_frames: int | None = None
        self.duplicate_count = 0
        self._frames: dict[int, FrameResult] = {}
        self._in_range = 0
        self._next_in_order = 0

    def add(self, result: FrameResult) -> bool:
        """Keep `result`; False when its frame was already in (a duplicate, counted)."""
        if result.video_id != self.video_id:
            raise ValueError(f"result of video {result.video_id!r} added to {self.video_id!r}")
        if result.total_frames is not None:
            self.expect_total(result.total_frames)
        held = self._frames.get(result.frame_id)
        if held is not None:
            self.duplicate_count += 1
            if held.status == "error" and result.status == "ok":
                self._frames[result.frame_id] = result
            return False
        self._frames[result.frame_id] = result
        if self.total_frames is not None and result.frame_id < self.total_frames:
            self._in_range += 1
        return True

    def expect_total(self, total_frames: int) -> None:
        """Learn the number of frames; the first total known (from the splitter or a result) stays."""
        if self.total_frames is None:
            self.total_frames = total_frames
            self._in_range = sum(1 for frame_id in self._frames if frame_id < total_frames)

    @property
    def received(self) -> int:
        """Distinct frames in hand."""
        return len(self._frames)

    @property
    def complete(self) -> bool:
        return self.total_frames is not None and self._in_range == self.total_frames

    @property
    def missing_frame_ids(self) -> list[int]:
        """Frames not yet in; without a known total, the gaps below the highest frame seen."""
        end = self.total_frames if self.total_frames is not None else max(self._frames, default=-1) + 1
        return [frame_id for frame_id in range(end) if frame_id not in self._frames]

    @property
    def error_count(self) -> int:
        return sum(1 for result in self._frames.values() if result.status == "error")

    @property
    def streamed_all(self) -> bool:
        """Every frame has been handed out by `take_in_order`."""
        return self.total_frames is not None and self._next_in_order >= self.total_frames

    def take_in_order(self) -> list[FrameResult]:
        """The frames that now continue the ordered stream, each handed out once."""
        ready = []
        while self._next_in_order in self._frames:
            ready.append(self._frames[self._next_in_order])
            self._next_in_order += 1
        return ready

    def results(self) -> list[FrameResult]:
        return [self._frames[frame_id] for frame_id in sorted(self._frames)]

    def document(self) -> dict[str, Any]:
        """The assembled video, as written to `<video_id>.json`."""
        return {
            "video_id": self.video_id,
            "total_frames": self.total_frames,
            "complete": self.complete,
            "frames": [frame_entry(result) for result in self.results()],
            "missing_frame_ids": self.missing_frame_ids,
            "error_count": self.error_count,
            "duplicate_count": self.duplicate_count,
        }


def frame_entry(result: FrameResult) -> dict[str, Any]:
    """A result as on the wire (FrameResult.to_json) without the video_id its document already names."""
    data = result.model_dump(mode="json", exclude={"video_id"})
    if data["error"] is None:
        del data["error"]
    return data


def commit_offsets(consumed: Mapping[P, int], first_offsets: Iterable[Mapping[P, int]]) -> dict[P, int]:
    """Per partition, the offset a collector may commit: where a restart must resume.

    `consumed` is the next offset to read per partition (last consumed + 1); `first_offsets`
    holds, for every video still being buffered, the offset of its first result per partition.
    A partition's commit point is the earliest of those on it, or all it consumed when none is.
    """
    points = dict(consumed)
    for firsts in first_offsets:
        for partition, offset in firsts.items():
            if partition in points:
                points[partition] = min(points[partition], offset)
    return points


def write_document(path: Path, document: Mapping[str, Any]) -> None:
    """Write atomically and durably: a temp file in the same directory, fsynced, renamed over `path`.

    Readers see the old file or the new one, never a torn one; the fsyncs make the file
    survive a crash before the collector commits the offsets of the results in it.
    """
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temp = Path(name)
    try:
        with os.fdopen(fd, "wb") as file:
            # mkstemp creates the file readable by its owner only; the document is for everyone.
            os.fchmod(file.fileno(), 0o644)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        temp.replace(path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
