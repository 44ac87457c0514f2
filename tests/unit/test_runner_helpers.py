"""Runner helpers without I/O: ids from file names, the render's timestamp mapping, plain progress, run's timeout."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from inference.messages import FrameResult
from runner.ids import is_video_id, video_id_for
from runner.progress import Progress
from runner.render import ResultTrack
from runner.run import TIMEOUT_BASE_S, TIMEOUT_PER_FRAME_S, default_timeout_s


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cam1-2026-11-22.mp4", "cam1-2026-11-22"),
        ("cam 1 (day).mp4", "cam-1-day"),
        ("clip.v2.final.mkv", "clip.v2.final"),
        ("(((.mp4", "video"),
        ("x" * 300 + ".mp4", "x" * 200),
    ],
)
def test_video_id_from_a_file_name_is_valid(name: str, expected: str) -> None:
    derived = video_id_for(Path("/videos") / name)
    assert derived == expected
    assert is_video_id(derived)


def timed(frame_id: int, timestamp_ms: float | None) -> FrameResult:
    return FrameResult(video_id="v", frame_id=frame_id, timestamp_ms=timestamp_ms, status="ok")


def test_a_video_frame_shows_the_latest_result_at_or_before_it() -> None:
    track = ResultTrack([timed(1, 300.0), timed(0, 100.0), timed(2, None)])
    found = {t: track.at(t) for t in (0.0, 99.9999, 100.0, 200.0, 300.0, 5000.0)}
    assert {t: r.frame_id if r else None for t, r in found.items()} == {
        0.0: None,
        99.9999: 0,  # float noise within the tolerance is the same frame
        100.0: 0,
        200.0: 0,
        300.0: 1,
        5000.0: 1,
    }


def test_plain_progress_writes_a_line_per_tenth_and_one_at_the_end() -> None:
    stream = io.StringIO()
    progress = Progress("uploading", 100, stream)
    for done in range(1, 101):
        progress.update(done)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[-1] == "uploading [" + "#" * 30 + "] 100/100 100%"


def test_runs_default_timeout_is_a_base_plus_an_allowance_per_sampled_frame() -> None:
    assert (TIMEOUT_BASE_S, TIMEOUT_PER_FRAME_S) == (120.0, 1.0)
    assert default_timeout_s(0) == 120.0
    assert default_timeout_s(1) == 121.0
    assert default_timeout_s(3600) == 3720.0
