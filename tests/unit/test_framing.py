"""The pool's framing, both ends over a real socket pair: frames out, replies back in order."""

from __future__ import annotations

import pickle
import socket
import threading

from inference.errors import InvalidImage
from inference.framing import HEADER, ReplyReader, frame_message, read_frame, send_reply


def test_frames_written_by_the_replica_are_read_whole_by_the_process() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        big = bytes(range(256)) * 20_000
        messages = [(b"a", b""), (big, b"pickled-target")]
        writer = threading.Thread(target=lambda: [ours.sendall(b"".join(frame_message(*m))) for m in messages])
        writer.start()
        stream = theirs.makefile("rb")
        assert read_frame(stream) == (b"", b"a")
        assert read_frame(stream) == (b"pickled-target", big)
        writer.join()
        ours.close()
        assert read_frame(stream) is None  # the replica closed its end


def test_replies_arrive_in_order_however_the_bytes_are_split() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        send_reply(theirs, (True, None))
        send_reply(theirs, (True, {"frame": 1}))
        send_reply(theirs, (False, InvalidImage("not a JPEG or PNG image")))
        theirs.close()
        data = b""
        while chunk := ours.recv(65536):
            data += chunk
    reader = ReplyReader()
    replies = []
    for i in range(0, len(data), 7):  # a few bytes at a time, as a busy socket may deliver them
        replies.extend(reader.feed(data[i : i + 7]))
    assert [ok for ok, _ in replies] == [True, True, False]
    assert replies[1][1] == {"frame": 1}
    assert isinstance(replies[2][1], InvalidImage) and str(replies[2][1]) == "not a JPEG or PNG image"


def test_an_error_that_does_not_pickle_still_answers_its_frame() -> None:
    class Local(Exception):  # a class defined in a function cannot be pickled
        pass

    ours, theirs = socket.socketpair()
    with ours, theirs:
        send_reply(theirs, (False, Local("boom")))
        header = ours.recv(HEADER.size)
        (size,) = HEADER.unpack(header)
        body = b""
        while len(body) < size:
            body += ours.recv(size - len(body))
    ok, error = pickle.loads(body)
    assert ok is False
    assert isinstance(error, RuntimeError) and "Local (not picklable)" in str(error) and "boom" in str(error)
