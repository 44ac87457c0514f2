"""Video ids: the contract's pattern (messages.VIDEO_ID_PATTERN), also for ids derived from file names."""

from __future__ import annotations

import re
from pathlib import Path

from inference.messages import VIDEO_ID_PATTERN
from runner.errors import InputError

_VIDEO_ID = re.compile(VIDEO_ID_PATTERN)
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._:-]+")
MAX_VIDEO_ID_CHARS = 200


def is_video_id(value: str) -> bool:
    return _VIDEO_ID.fullmatch(value) is not None


def require_video_id(value: str) -> str:
    if not is_video_id(value):
        raise InputError(f"invalid video id {value!r}: use 1-200 characters of A-Z a-z 0-9 . _ : -")
    return value


def video_id_for(path: Path) -> str:
    """A valid id from a file name: disallowed runs become '-', e.g. 'cam 1 (day).mp4' -> 'cam-1-day'."""
    cleaned = _NOT_ALLOWED.sub("-", path.stem).strip("-")[:MAX_VIDEO_ID_CHARS]
    return cleaned or "video"
