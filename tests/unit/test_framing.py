"""The pool's framing, both ends over a real socket pair: frames out, replies back in order."""

from __future__ import annotations

import pickle
import socket
import threading

from inference.errors import InvalidImage
from inference.framing import HEADER, FrameReader, ReplyReader, frame_message, send_reply


def test_frames_written_by_the_replica_are_read_whole_by_the_process() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        big = bytes(range(256)) * 20_000
        messages = [(b"a", b""), (big, b"pickled-target")]
        writer = threading.Thread(target=lambda: [ours.sendall(b"".join(frame_message(*m))) for m in messages])
        writer.start()
        reader = FrameReader(theirs)
        assert reader.read_batch(1, 0.0) == [(b"", b"a")]
        assert reader.read_batch(1, 0.0) == [(b"pickled-target", big)]
        writer.join()
        ours.close()
        assert reader.read_batch(1, 0.0) == []  # the replica closed its end


def test_a_batch_takes_the_frames_already_waiting_and_no_more_than_its_size() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        for index in range(5):
            ours.sendall(b"".join(frame_message(bytes([index]))))
        reader = FrameReader(theirs)
        assert [data for _, data in reader.read_batch(3, 0.0)] == [b"\x00", b"\x01", b"\x02"]
        assert [data for _, data in reader.read_batch(3, 0.0)] == [b"\x03", b"\x04"], "two waited: no third"


def test_a_batch_waits_for_a_frame_that_arrives_within_its_wait() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.sendall(b"".join(frame_message(b"first")))
        # Half a frame now, the rest from another thread: the reader must join the halves, not drop them.
        second = b"".join(frame_message(b"second"))
        ours.sendall(second[:5])
        writer = threading.Thread(target=ours.sendall, args=(second[5:],))
        writer.start()
        batch = FrameReader(theirs).read_batch(2, 30.0)  # returns once the batch is full, long before the wait
        writer.join()
        assert [data for _, data in batch] == [b"first", b"second"]


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
