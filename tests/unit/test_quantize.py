"""Calibration frames are read as the worker reads frames: what it would refuse, quantize refuses by name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.quantize import Frame, QuantizeError, load_frames


def _jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((48, 64, 3), 127, np.uint8))
    assert ok
    return bytes(data)


def test_a_frame_decodes_to_its_pixels() -> None:
    assert Frame("a.jpg", _jpeg()).image().shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("data", "reason"),
    [(b"this is not an image", "not a JPEG or PNG"), (_jpeg()[:-40], "truncated JPEG")],
)
def test_a_frame_the_worker_would_refuse_names_the_file(data: bytes, reason: str) -> None:
    with pytest.raises(QuantizeError, match=f"--frames: cam/0007.jpg: {reason}"):
        Frame("cam/0007.jpg", data).image()


def test_only_the_formats_the_worker_decodes_are_read(tmp_path: Path) -> None:
    for name in ("a.jpg", "b.JPEG", "c.png", "d.bmp", "e.webp", "notes.txt"):
        (tmp_path / name).write_bytes(_jpeg())

    calibration, held_out = load_frames(str(tmp_path))

    assert sorted(Path(f.name).name for f in [*calibration, *held_out]) == ["a.jpg", "b.JPEG", "c.png"]
