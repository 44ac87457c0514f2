"""Reading video files with OpenCV: open with a clear error, walk frames with their timestamps.

Timestamps come from the decoder (CAP_PROP_POS_MSEC after each grab), so the
splitter and the renderer, reading the same file, agree on them exactly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from runner.errors import InputError

Image = npt.NDArray[np.uint8]
JPEG_QUALITY = 90


@contextlib.contextmanager
def open_video(path: Path) -> Iterator[cv2.VideoCapture]:
    """A capture positioned at the first frame; InputError when the file is missing or not decodable."""
    if not path.is_file():
        raise InputError(f"no such video file: {path}")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise InputError(f"cannot read {path}: not a video file OpenCV can decode")
        yield capture
    finally:
        capture.release()


def frame_count_estimate(capture: cv2.VideoCapture) -> int:
    """The container's frame count: good for a progress bar, not for total_frames (it can be wrong)."""
    return max(0, int(capture.get(cv2.CAP_PROP_FRAME_COUNT)))


def fps(capture: cv2.VideoCapture, default: float = 25.0) -> float:
    value = float(capture.get(cv2.CAP_PROP_FPS))
    return value if value > 0 else default


def sampled(capture: cv2.VideoCapture, every: int, limit: int | None) -> Iterator[float]:
    """Grab frames in order and yield the timestamp (ms) of every `every`-th, at most `limit` of them.

    Only grab() runs for skipped frames; the caller calls retrieve() for the ones it wants
    pixels of (the colour conversion is skipped for the rest).
    """
    index = 0
    taken = 0
    while (limit is None or taken < limit) and capture.grab():
        if index % every == 0:
            taken += 1
            yield round(float(capture.get(cv2.CAP_PROP_POS_MSEC)), 3)
        index += 1


def retrieve(capture: cv2.VideoCapture, path: Path) -> Image:
    """The pixels of the frame grabbed last."""
    ok, image = capture.retrieve()
    if not ok:
        raise InputError(f"cannot decode a frame of {path}")
    frame: Image = np.asarray(image, np.uint8)
    return frame


def encode_jpeg(image: Image) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise InputError("cannot JPEG-encode a frame")
    return bytes(data)
