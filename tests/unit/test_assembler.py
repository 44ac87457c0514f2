"""Reassembly without Kafka: reorder buffer, duplicates, completion, the document, the commit watermark."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from inference.messages import ErrorInfo, FrameResult
from runner.assembler import Assembly, commit_offsets, write_document


def result(frame_id: int, total: int | None = 4, status: str = "ok", video_id: str = "vid") -> FrameResult:
    error = ErrorInfo(code="invalid_image", message="broken") if status == "error" else None
    return FrameResult.model_validate(
        {
            "video_id": video_id,
            "frame_id": frame_id,
            "s3_key": f"{video_id}/{frame_id:06d}.jpg",
            "total_frames": total,
            "timestamp_ms": frame_id * 100.0,
            "status": status,
            "error": error,
        }
    )


def ids(results: list[FrameResult]) -> list[int]:
    return [r.frame_id for r in results]


def test_frames_are_handed_out_in_order_as_soon_as_the_next_one_is_in() -> None:
    assembly = Assembly("vid")
    handed: list[list[int]] = []
    for frame_id in (2, 0, 3, 1):
        assembly.add(result(frame_id))
        handed.append(ids(assembly.take_in_order()))
    assert handed == [[], [0], [], [1, 2, 3]]
    assert assembly.streamed_all


def test_a_duplicate_is_counted_and_dropped() -> None:
    assembly = Assembly("vid")
    assert assembly.add(result(1)) is True
    assert assembly.add(result(1)) is False
    assert assembly.received == 1
    assert assembly.duplicate_count == 1
    assert ids(assembly.results()) == [1]


def test_a_success_replaces_an_earlier_failure_of_the_same_frame_but_not_the_reverse() -> None:
    assembly = Assembly("vid")
    assembly.add(result(0, status="error"))
    assembly.add(result(0, status="ok"))
    assembly.add(result(1, status="ok"))
    assembly.add(result(1, status="error"))
    assert [r.status for r in assembly.results()] == ["ok", "ok"]
    assert assembly.error_count == 0
    assert assembly.duplicate_count == 2


def test_complete_only_when_every_frame_below_total_is_in() -> None:
    assembly = Assembly("vid")
    for frame_id in (0, 3, 7):  # 7 is outside total_frames=4: kept, but completes nothing
        assembly.add(result(frame_id))
    assert not assembly.complete
    assert assembly.missing_frame_ids == [1, 2]
    assembly.add(result(1))
    assembly.add(result(2))
    assert assembly.complete
    assert assembly.missing_frame_ids == []


def test_without_a_total_the_gaps_below_the_highest_frame_are_missing() -> None:
    assembly = Assembly("vid")
    assembly.add(result(0, total=None))
    assembly.add(result(3, total=None))
    assert assembly.total_frames is None
    assert not assembly.complete
    assert assembly.missing_frame_ids == [1, 2]


def test_a_total_learned_late_counts_the_frames_already_in() -> None:
    assembly = Assembly("vid")
    assembly.add(result(0, total=None))
    assembly.add(result(1, total=None))
    assembly.expect_total(2)
    assert assembly.complete
    assembly.expect_total(5)  # the first total known stays
    assert assembly.total_frames == 2


def test_error_count_counts_kept_failures() -> None:
    assembly = Assembly("vid")
    assembly.add(result(0, status="error"))
    assembly.add(result(1))
    assembly.add(result(2, status="error"))
    assert assembly.error_count == 2


def test_document_follows_the_contract() -> None:
    assembly = Assembly("vid")
    for frame_id in (3, 1, 0, 2, 2):
        assembly.add(result(frame_id, status="error" if frame_id == 1 else "ok"))
    document = assembly.document()
    assert list(document) == [
        "video_id",
        "total_frames",
        "complete",
        "frames",
        "missing_frame_ids",
        "error_count",
        "duplicate_count",
    ]
    assert document["video_id"] == "vid"
    assert document["total_frames"] == 4
    assert document["complete"] is True
    assert [f["frame_id"] for f in document["frames"]] == [0, 1, 2, 3]
    assert all("video_id" not in f for f in document["frames"])
    assert document["frames"][1]["error"] == {"code": "invalid_image", "message": "broken"}
    assert "error" not in document["frames"][0]
    assert (document["missing_frame_ids"], document["error_count"], document["duplicate_count"]) == ([], 1, 1)
    # Every frame is the wire form of its result, minus the video id.
    wire = orjson.loads(result(0).to_json())
    del wire["video_id"]
    assert document["frames"][0] == wire


def test_results_of_another_video_are_refused() -> None:
    with pytest.raises(ValueError, match="other"):
        Assembly("vid").add(result(0, video_id="other"))


def test_watermark_without_buffered_videos_is_everything_consumed() -> None:
    assert commit_offsets({"p0": 10, "p1": 3}, []) == {"p0": 10, "p1": 3}


def test_watermark_stops_at_the_first_result_of_the_earliest_incomplete_video() -> None:
    consumed = {"p0": 50, "p1": 30, "p2": 7}
    buffered = [{"p0": 12}, {"p0": 4}, {"p1": 29}]
    assert commit_offsets(consumed, buffered) == {"p0": 4, "p1": 29, "p2": 7}


def test_watermark_ignores_partitions_not_consumed_here_and_leaves_its_input_alone() -> None:
    consumed = {"p0": 9}
    assert commit_offsets(consumed, [{"p0": 2, "p5": 1}]) == {"p0": 2}
    assert consumed == {"p0": 9}


def test_write_document_replaces_the_file_atomically(tmp_path: Path) -> None:
    path = tmp_path / "vid.json"
    write_document(path, {"n": 1})
    write_document(path, {"n": 2})
    assert orjson.loads(path.read_bytes()) == {"n": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["vid.json"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "vid.json"
    write_document(path, {"n": 1})

    def failing_fsync(fd: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_document(path, {"n": 2})
    assert orjson.loads(path.read_bytes()) == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["vid.json"]
