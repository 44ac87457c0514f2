"""Render: an annotated copy of a video from its assembled result document.

Mapping: every result carries the timestamp_ms of its source frame, which the splitter read
from the same decoder, so video frames are matched to results by timestamp, whatever the
sampling step was (the document does not record it). A video frame shows the boxes of the
latest result at or before its timestamp: with `split --every N` the boxes are held until the
next sampled frame instead of flickering on and off, and a frame missing from an incomplete
document keeps the boxes before it. Frames before the first result are copied unchanged; a
result without timestamp_ms cannot be placed and is not drawn. A result with status "error"
shows its error code instead of boxes.

The output is mp4 (mp4v) at the source's frame rate and size, one frame per source frame,
drawn with OpenCV only (Hershey fonts: nothing to download). It is written beside OUT and
renamed into place, so OUT is never a half-written video.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import orjson
from pydantic import ValidationError

from inference.messages import Detection, FrameResult
from runner.errors import InputError
from runner.video import Image, fps, open_video, retrieve, sampled

FONT = cv2.FONT_HERSHEY_SIMPLEX
FONT_SCALE = 0.5
LINE_PX = 2
# BGR, one per class id (modulo): saturated colours that stay apart on most backgrounds.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (56, 56, 255),
    (49, 210, 207),
    (255, 112, 31),
    (10, 249, 72),
    (187, 26, 255),
    (0, 194, 255),
)
ERROR_COLOUR = (0, 0, 255)
DARK_TEXT = (0, 0, 0)
LIGHT_TEXT = (255, 255, 255)
# Timestamps are rounded to the microsecond in the document; anything closer is the same frame.
TIMESTAMP_TOLERANCE_MS = 0.5


@dataclass(frozen=True)
class RenderSummary:
    frames: int
    annotated: int


class ResultTrack:
    """Results ordered by timestamp; `at(t)` is the latest one at or before t."""

    def __init__(self, results: Iterable[FrameResult]) -> None:
        timed = sorted((r for r in results if r.timestamp_ms is not None), key=lambda r: r.timestamp_ms or 0.0)
        self._times = [r.timestamp_ms or 0.0 for r in timed]
        self._results = timed

    def at(self, timestamp_ms: float) -> FrameResult | None:
        index = bisect_right(self._times, timestamp_ms + TIMESTAMP_TOLERANCE_MS)
        return self._results[index - 1] if index else None


def load_results(path: Path) -> list[FrameResult]:
    """The frames of an assembled document; InputError when the file is not one."""
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise InputError(f"no such result file: {path}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(f"{path} is not JSON: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("frames"), list):
        raise InputError(f"{path} is not an assembled video document: it has no 'frames' list")
    video_id = document.get("video_id", "")
    try:
        return [FrameResult.model_validate({**frame, "video_id": video_id}) for frame in document["frames"]]
    except (ValidationError, TypeError) as exc:
        raise InputError(f"{path} has a malformed frame: {str(exc).splitlines()[0]}") from None


def render_video(video: Path, result_json: Path, out: Path) -> RenderSummary:
    track = ResultTrack(load_results(result_json))
    partial = out.with_name(f".{out.stem}.partial{out.suffix}")
    frames = annotated = 0
    writer: cv2.VideoWriter | None = None
    try:
        with open_video(video) as capture:
            rate = fps(capture)
            for timestamp_ms in sampled(capture, 1, None):
                image = retrieve(capture, video)
                if writer is None:
                    writer = _writer(partial, rate, image)
                result = track.at(timestamp_ms)
                if result is not None:
                    annotate(image, result)
                    annotated += 1
                writer.write(image)
                frames += 1
        if writer is None:
            raise InputError(f"{video} has no decodable frames")
        writer.release()
        partial.replace(out)
    except BaseException:
        if writer is not None:
            writer.release()
        partial.unlink(missing_ok=True)
        raise
    return RenderSummary(frames, annotated)


def _writer(path: Path, rate: float, first: Image) -> cv2.VideoWriter:
    height, width = first.shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), rate, (width, height))
    if not writer.isOpened():
        raise InputError(f"cannot write a video to {path}")
    return writer


def annotate(image: Image, result: FrameResult) -> None:
    """Draw a result's boxes and labels onto `image` in place."""
    if result.status == "error":
        code = result.error.code if result.error else "error"
        _label(image, f"error: {code}", (4, 4), ERROR_COLOUR)
        return
    for detection in result.detections:
        _box(image, detection)


def _box(image: Image, detection: Detection) -> None:
    colour = PALETTE[detection.class_id % len(PALETTE)]
    x1, y1, x2, y2 = (round(v) for v in detection.bbox)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, LINE_PX)
    _label(image, f"{detection.class_name} {detection.confidence:.2f}", (x1, y1), colour)


def _label(image: Image, text: str, corner: tuple[int, int], colour: tuple[int, int, int]) -> None:
    """Text on a filled strip above `corner`, or below it when there is no room above."""
    (width, height), baseline = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    x, y = corner
    top = y - height - baseline - 2 if y - height - baseline - 2 >= 0 else y
    cv2.rectangle(image, (x, top), (x + width + 4, top + height + baseline + 2), colour, -1)
    blue, green, red = colour
    # Rec. 601 luma: dark text on light strips, light text on dark ones.
    text_colour = DARK_TEXT if 0.114 * blue + 0.587 * green + 0.299 * red > 150 else LIGHT_TEXT
    cv2.putText(image, text, (x + 2, top + height + 1), FONT, FONT_SCALE, text_colour, 1, cv2.LINE_AA)
