"""Image checks that run before the model: declared size, truncation, formats."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from inference.errors import InvalidImage
from inference.image import decode, image_size


def encoded(ext: str, width: int = 64, height: int = 48) -> bytes:
    ok, data = cv2.imencode(ext, np.full((height, width, 3), 120, dtype=np.uint8))
    assert ok
    return bytes(data)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_size_is_read_from_the_header(ext: str) -> None:
    assert image_size(encoded(ext, 320, 200)) == (320, 200)


@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_decode_returns_bgr_pixels(ext: str) -> None:
    image = decode(encoded(ext), max_pixels=10_000)
    assert image.shape == (48, 64, 3)


def jpeg_bomb(width: int, height: int) -> bytes:
    """A tiny JPEG whose frame header claims a huge image."""
    data = bytearray(encoded(".jpg", 16, 16))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def test_a_decompression_bomb_is_rejected_before_decoding() -> None:
    bomb = jpeg_bomb(60_000, 60_000)
    assert len(bomb) < 2_000
    with pytest.raises(InvalidImage, match="over the limit"):
        decode(bomb, max_pixels=40_000_000)


def test_png_bomb_is_rejected() -> None:
    data = bytearray(encoded(".png", 8, 8))
    data[16:24] = struct.pack(">II", 100_000, 100_000)
    with pytest.raises(InvalidImage, match="over the limit"):
        decode(bytes(data), max_pixels=40_000_000)


@pytest.mark.parametrize(
    "data",
    [b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a" + b"\x00" * 20],
)
def test_non_images_are_invalid(data: bytes) -> None:
    with pytest.raises(InvalidImage):
        decode(data, max_pixels=10_000)


def test_truncated_jpeg_is_invalid() -> None:
    data = encoded(".jpg", 256, 256)
    with pytest.raises(InvalidImage):
        decode(data[: len(data) // 2], max_pixels=1_000_000)
