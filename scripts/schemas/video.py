"""The per-video document's model: what `runner.assembler.Assembly.document()` writes, for its schema."""

from __future__ import annotations

from pydantic import BaseModel, Field

from inference.messages import FrameResult, VideoId


class FrameEntry(FrameResult):
    """A FrameResult inside a video document, without the video_id the document already names."""

    # Excluded fields leave the serialization schema: an entry is written without it.
    video_id: str = Field("", exclude=True)


class VideoDocument(BaseModel):
    """One video's results in frame order, written as `<video_id>.json` by `runner collect` and `runner run`."""

    video_id: VideoId
    total_frames: int | None = Field(description="Frames the splitter announced; null while no task or result said")
    complete: bool = Field(description="True when every frame id below total_frames has a result")
    frames: list[FrameEntry] = Field(description="One result per frame id, sorted by frame_id")
    missing_frame_ids: list[int] = Field(description="Frame ids without a result yet")
    error_count: int = Field(description="Frames whose result has status error")
    duplicate_count: int = Field(description="Results dropped because their frame already had one")
