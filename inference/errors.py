"""Errors as types: each FrameResult error code is one exception class.

`retriable` tells the retry policy whether trying again can help; the wire form
of an error is built in one place (`messages.error_info`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

ErrorCode = Literal[
    "invalid_task",
    "frame_not_found",
    "frame_too_large",
    "invalid_image",
    "inference_failed",
    "model_not_found",
    "model_unavailable",
]


class PipelineError(Exception):
    """Base of every error the pipeline handles on purpose."""

    retriable: ClassVar[bool] = False


class FrameError(PipelineError):
    """A frame cannot be turned into detections; it becomes an error result."""

    code: ClassVar[ErrorCode]


class InvalidTask(FrameError):
    """Fields are wrong, but video_id and frame_id are readable, so an error result can answer it."""

    code = "invalid_task"

    def __init__(self, message: str, *, video_id: str, frame_id: int) -> None:
        super().__init__(message)
        self.video_id = video_id
        self.frame_id = frame_id


class FrameNotFound(FrameError):
    code = "frame_not_found"


class FrameTooLarge(FrameError):
    code = "frame_too_large"


class InvalidImage(FrameError):
    code = "invalid_image"


class InferenceFailed(FrameError):
    code = "inference_failed"


class ModelNotFound(FrameError):
    """The task names a model, or a version of one, that the registry does not have."""

    code = "model_not_found"


class ModelUnavailable(FrameError):
    """The model is registered, but its weights cannot be had: object missing, checksum, load failure."""

    code = "model_unavailable"


class UnreadableTask(PipelineError):
    """Not even video_id and frame_id can be read: the message goes to the DLQ unchanged."""

    code: ClassVar[str] = "unreadable_task"


class StorageUnavailable(PipelineError):
    """S3 failed in a way that may pass (timeouts, 5xx, throttling): the replica's outage, not the task's."""

    retriable = True


class CredentialsRejected(StorageUnavailable):
    """S3 refused the replica's credentials or clock; it passes when they are fixed or rotated."""
