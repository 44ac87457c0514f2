"""Stand-ins for detector.init_process and detector.detect_batch, for pool tests in real spawned processes.

The frame's bytes say what to do: crash the process, hang, take `sleep SECONDS`, fail, or answer
with its length and the pid of the process that answered.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence

from inference.backends import DetectorConfig, ModelTarget
from inference.detector import WARM_ONLY, DetectOutput
from inference.errors import InvalidImage
from inference.framing import Reply

BROKEN_MODEL = "broken"


def init(config: DetectorConfig) -> None:
    if config.model_path == BROKEN_MODEL:
        raise RuntimeError("no model at 'broken'")


# The models this process has "loaded": a target's first frame here reports a load.
LOADED: set[ModelTarget] = set()


def _detect(data: bytes | None, target: ModelTarget | None) -> DetectOutput:
    """Answers with the frame's length and the pid; a target's first frame in this process reports a load."""
    load_ms = 0.0
    if target is not None and target not in LOADED:
        LOADED.add(target)
        load_ms = 1.0
    if data is WARM_ONLY:
        return DetectOutput(0, os.getpid(), (), 0.0, load_ms=load_ms)
    if data == b"crash":
        os._exit(3)
    if data == b"hang":
        time.sleep(3600)
    if data == b"slow":
        time.sleep(0.5)
    if data.startswith(b"sleep "):
        time.sleep(float(data.removeprefix(b"sleep ")))
    if data == b"invalid":
        raise InvalidImage("not an image")
    if data == b"bug":
        raise ValueError("a bug in the detector")
    return DetectOutput(width=len(data), height=os.getpid(), detections=(), detect_ms=0.0, load_ms=load_ms)


def detect_batch(frames: Sequence[tuple[bytes | None, ModelTarget | None]]) -> list[Reply]:
    """Each frame's answer as its bytes say; its detect_ms is the size of the batch it came in."""
    replies: list[Reply] = []
    for data, target in frames:
        try:
            replies.append((True, dataclasses.replace(_detect(data, target), detect_ms=float(len(frames)))))
        except Exception as exc:  # noqa: BLE001 - the frame's own failure, as the real batch answers it
            replies.append((False, exc))
    return replies
