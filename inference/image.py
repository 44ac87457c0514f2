"""Image input of a pool process: the declared size from the header, then the decode, bounded by a pixel limit.

The size is read from the JPEG or PNG header before any pixel is decoded, because a small
file can declare a huge image and the decoder would allocate all of it.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt

from inference.errors import InvalidImage

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers that carry the image size (all SOFn but DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from a JPEG or PNG header, without decoding the pixels."""
    if data.startswith(_PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InvalidImage("truncated PNG header")
        width, height = struct.unpack(">II", data[16:24])
        return int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data)
    raise InvalidImage("not a JPEG or PNG image")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InvalidImage("corrupt JPEG marker stream")
        marker = data[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return int(width), int(height)
        if length < 2:
            raise InvalidImage("corrupt JPEG segment length")
        pos += 2 + length
    raise InvalidImage("truncated JPEG: no frame header")


def decode(data: bytes, max_pixels: int) -> npt.NDArray[np.uint8]:
    """Check the declared size first, then decode to BGR pixels."""
    import cv2

    if not data:
        raise InvalidImage("empty object")
    width, height = image_size(data)
    if width <= 0 or height <= 0:
        raise InvalidImage(f"image declares size {width}x{height}")
    if width * height > max_pixels:
        raise InvalidImage(f"image is {width}x{height}, over the limit of {max_pixels} pixels")
    if _looks_truncated(data):
        raise InvalidImage("truncated JPEG: no end-of-image marker")
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InvalidImage("image could not be decoded")
    return np.asarray(decoded, dtype=np.uint8)


def _looks_truncated(data: bytes) -> bool:
    # libjpeg pads a cut-off stream with grey and succeeds; the missing EOI marker gives it away.
    return data.startswith(b"\xff\xd8") and b"\xff\xd9" not in data[-64:]
