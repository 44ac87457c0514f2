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
import time
from collections.abc import Iterator
from typing import Any

# Each message: its length, then the bytes. A frame's bytes start with the length of its model part.
HEADER = struct.Struct("<Q")
MODEL_HEADER = struct.Struct("<I")
RECEIVE_SIZE = 1 << 20
Reply = tuple[bool, Any]


def frame_message(data: bytes, model: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """A frame's message as its parts, for one `writelines` on the replica's side."""
    head = MODEL_HEADER.pack(len(model)) + model
    return HEADER.pack(len(head) + len(data)), head, data


def take_message(buffer: bytearray) -> bytes | None:
    """The first whole message's bytes, removed from `buffer`; None while it is still incomplete."""
    if len(buffer) < HEADER.size:
        return None
    (size,) = HEADER.unpack_from(buffer)
    end = HEADER.size + size
    if len(buffer) < end:
        return None
    with memoryview(buffer) as view:  # one copy of the message, not a slice and then its bytes
        message = bytes(view[HEADER.size : end])
    del buffer[:end]
    return message


def send_reply(sock: socket.socket, reply: Reply) -> None:
    """The pool process's side: one answer, pickled; an error that does not pickle is sent as text."""
    try:
        payload = pickle.dumps(reply)
    except Exception:  # noqa: BLE001 - an error that does not pickle still answers its frame
        text = f"{type(reply[1]).__name__} (not picklable): {reply[1]!r}"[:1000]
        payload = pickle.dumps((False, RuntimeError(text)))
    sock.sendall(HEADER.pack(len(payload)) + payload)


class FrameReader:
    """The pool process's side: frames (model part, bytes) out of the socket, those already waiting together."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._closed = False

    def read_batch(self, size: int, wait_s: float) -> list[tuple[bytes, bytes]]:
        """The next frame, waiting for it, and up to `size` in all that arrive within `wait_s` of it;
        empty once the replica closed the socket."""
        first = self._next(None)
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + wait_s
        while len(batch) < size and (message := self._next(max(0.0, deadline - time.monotonic()))) is not None:
            batch.append(message)
        return batch

    def _next(self, timeout: float | None) -> tuple[bytes, bytes] | None:
        """A whole frame, or None when the socket closed or none completed within `timeout` (None: no limit)."""
        while (message := self._parse()) is None:
            if self._closed:
                return None
            self._sock.settimeout(timeout)
            try:
                chunk = self._sock.recv(RECEIVE_SIZE)
            except (TimeoutError, BlockingIOError):
                return None
            finally:
                self._sock.settimeout(None)  # replies are sent blocking
            if not chunk:
                self._closed = True
            self._buffer += chunk
        return message

    def _parse(self) -> tuple[bytes, bytes] | None:
        message = take_message(self._buffer)
        if message is None:
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
        while (payload := take_message(self._buffer)) is not None:
            reply: Reply = pickle.loads(payload)  # noqa: S301 - our own child process
            yield reply
