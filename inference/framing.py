"""The pool's inter-process protocol: length-prefixed messages over a socket pair, both ends.

The replica writes a frame's encoded bytes after the model to run them on (a pickled
ModelTarget, empty for the replica's own model); the pool process answers each frame, in order,
with one pickled `(ok, value)` pair: `(True, DetectOutput)`, or `(False, exception)`. The first
answer of a process says whether its model loaded: `(True, None)` or `(False, reason)`.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

# Each message: its length, then the bytes. A frame's bytes start with the length of its model part.
HEADER = struct.Struct("<Q")
MODEL_HEADER = struct.Struct("<I")
Reply = tuple[bool, Any]


def frame_message(data: bytes, model: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """A frame's message as its parts, for one `writelines` on the replica's side."""
    head = MODEL_HEADER.pack(len(model)) + model
    return HEADER.pack(len(head) + len(data)), head, data


def send_reply(sock: socket.socket, reply: Reply) -> None:
    """The pool process's side: one answer, pickled; an error that does not pickle is sent as text."""
    try:
        payload = pickle.dumps(reply)
    except Exception:  # noqa: BLE001 - an error that does not pickle still answers its frame
        text = f"{type(reply[1]).__name__} (not picklable): {reply[1]!r}"[:1000]
        payload = pickle.dumps((False, RuntimeError(text)))
    sock.sendall(HEADER.pack(len(payload)) + payload)


def read_frame(stream: BinaryIO) -> tuple[bytes, bytes] | None:
    """The pool process's side: one frame's model part and bytes; None when the replica closed the socket."""
    header = stream.read(HEADER.size)
    if len(header) < HEADER.size:
        return None
    (size,) = HEADER.unpack(header)
    message = stream.read(size)
    if len(message) != size:
        return None
    (model_size,) = MODEL_HEADER.unpack_from(message)
    split = MODEL_HEADER.size + model_size
    return message[MODEL_HEADER.size : split], message[split:]


class ReplyReader:
    """The replica's side: whole replies out of the bytes the event loop receives, as they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Reply]:
        self._buffer += data
        while len(self._buffer) >= HEADER.size:
            (size,) = HEADER.unpack_from(self._buffer)
            end = HEADER.size + size
            if len(self._buffer) < end:
                return
            reply: Reply = pickle.loads(self._buffer[HEADER.size : end])  # noqa: S301 - our own child process
            del self._buffer[:end]
            yield reply
