"""Reassembly: FrameResults of one video -> its ordered result document.

`Assembly` is one video's reorder buffer: it keeps one result per frame_id (a later
duplicate is counted and dropped, except that a success replaces an earlier failure of
the same frame, as after a redelivery), knows when all `total_frames` are in, and hands
out frames in frame order as soon as each next one is there.

`commit_offsets` is the collector's watermark: offsets may be committed only up to the
first result of any video still being buffered, so that a restarted collector re-reads
and rebuilds every incomplete buffer. `write_document` makes a document durable before
the offsets behind it are committed.

`ReadPositions` tells a record read for the first time from one read again after a position
reset; `Collection` is a collector's set of buffers on top of both: what it assembles, when a
video is complete, and how far it may commit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import orjson

from inference.messages import FrameResult

P = TypeVar("P", bound=Hashable)
# How long a buffer may go without a new result and still hold back its partition's commit point:
# above any pause of a running video (a worker outage retried), far below "for good".
IDLE_RELEASE_S = 300.0
# Released buffers kept in memory, in case their video resumes; the oldest beyond it are dropped.
MAX_RELEASED_BUFFERS = 1_000


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


class ReadPositions(Generic[P]):
    """Per partition, one past the highest offset read: a record below it is a re-read, not news.

    A consumer's position can go back without a rebalance (an out-of-range reset, a seek); the
    records it then reads again were already taken into account, so counting them as duplicates
    or assembling them again would be wrong.
    """

    def __init__(self) -> None:
        self._next: dict[P, int] = {}

    def start_at(self, partition: P, offset: int) -> None:
        """Records below `offset` on `partition` are not to be read (they precede where reading began)."""
        self._next[partition] = max(self._next.get(partition, offset), offset)

    def read_before(self, partition: P, offset: int) -> bool:
        """The record at `offset` was read already (or precedes where reading began)."""
        return offset < self._next.get(partition, offset)

    def first_read(self, partition: P, offset: int) -> bool:
        """True, advancing the partition, when the record at `offset` has not been read before."""
        if self.read_before(partition, offset):
            return False
        self._next[partition] = offset + 1
        return True

    def next_offset(self, partition: P) -> int | None:
        return self._next.get(partition)

    def forget(self, partitions: Iterable[P]) -> None:
        for partition in partitions:
            self._next.pop(partition, None)

    def snapshot(self) -> dict[P, int]:
        return dict(self._next)


@dataclass
class _Buffer(Generic[P]):
    assembly: Assembly
    partitions: set[P]
    last_result_s: float
    # The first offset per partition of the results that pin the commit point; empty once released.
    pins: dict[P, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Released(Generic[P]):
    """A buffer that stopped holding back the commit point: where it was pinned, and what it held."""

    video_id: str
    partition: P
    offset: int
    received: int
    total_frames: int | None


class Collection(Generic[P]):
    """The videos a collector assembles from its partitions, and the offsets it may commit.

    - A record read again after a position reset is skipped (`ReadPositions`): it is no
      duplicate and it does not rebuild a video already written.
    - A video is its results up to its document: one whose document was written and that
      gets results again (a rerun under the same id, or a late duplicate) starts over.
    - A buffer pins its partition's commit point at its first result, so a restart rebuilds it,
      until it has had no new result for `idle_release_s` (`release_idle`): a late duplicate
      completes nothing and would otherwise pin the partition for good. A released buffer keeps
      its results, and pins again from its next result's offset.
    """

    def __init__(self, idle_release_s: float = IDLE_RELEASE_S, max_released: int = MAX_RELEASED_BUFFERS) -> None:
        self._idle_release_s = idle_release_s
        self._max_released = max_released
        self.positions: ReadPositions[P] = ReadPositions()
        self._buffers: dict[str, _Buffer[P]] = {}
        # Video ids of released buffers, oldest first.
        self._released: dict[str, None] = {}

    def assembly(self, video_id: str) -> Assembly | None:
        buffered = self._buffers.get(video_id)
        return buffered.assembly if buffered else None

    def take(self, partition: P, offset: int, result: FrameResult | None, now_s: float) -> Assembly | None:
        """Account for the record at `offset`; the assembly `result` went to, None for a re-read or no result."""
        if not self.positions.first_read(partition, offset) or result is None:
            return None
        buffered = self._buffers.get(result.video_id)
        if buffered is None:
            buffered = self._buffers[result.video_id] = _Buffer(Assembly(result.video_id), set(), now_s)
        if not buffered.pins:
            self._released.pop(result.video_id, None)
        buffered.pins.setdefault(partition, offset)
        buffered.partitions.add(partition)
        buffered.last_result_s = now_s
        buffered.assembly.add(result)
        return buffered.assembly

    def complete(self) -> list[Assembly]:
        """The videos now complete; `finish` each once its document is durable."""
        return [b.assembly for b in self._buffers.values() if b.assembly.complete]

    def finish(self, video_id: str) -> None:
        """Drop a written video: its commit point may pass it, and its next result starts over."""
        self._buffers.pop(video_id, None)
        self._released.pop(video_id, None)

    def release_idle(self, now_s: float) -> list[Released[P]]:
        """Unpin every buffer without a new result for `idle_release_s`; what was released."""
        released = []
        for video_id, buffered in self._buffers.items():
            if buffered.pins and now_s - buffered.last_result_s >= self._idle_release_s:
                assembly = buffered.assembly
                released += [
                    Released(video_id, partition, offset, assembly.received, assembly.total_frames)
                    for partition, offset in buffered.pins.items()
                ]
                buffered.pins.clear()
                self._released[video_id] = None
        while len(self._released) > self._max_released:
            oldest = next(iter(self._released))
            self.finish(oldest)
        return released

    def commit_points(self) -> dict[P, int]:
        """Per partition read here, the offset a restart must resume from."""
        return commit_offsets(self.positions.snapshot(), (b.pins for b in self._buffers.values()))

    def forget(self, partitions: set[P]) -> None:
        """Drop what `partitions` fed (revoked): their next owner rebuilds it from the commit point."""
        for video_id, buffered in list(self._buffers.items()):
            if buffered.partitions & partitions:
                self.finish(video_id)
        self.positions.forget(partitions)


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
