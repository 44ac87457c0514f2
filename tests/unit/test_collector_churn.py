"""The collector's buffers without Kafka: re-reads after a position reset, late duplicates, reruns,
idle buffers that stop pinning the commit point, and where a partition starts from the group."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupLoadInProgressError

from inference.messages import FrameResult
from runner import collector
from runner.assembler import Collection, ReadPositions, Released

IDLE_S = 60.0
P0, P1 = "p0", "p1"


def result(video_id: str, frame_id: int, total: int = 2) -> FrameResult:
    return FrameResult.model_validate(
        {"video_id": video_id, "frame_id": frame_id, "s3_key": f"{video_id}/{frame_id:06d}.jpg",
         "total_frames": total, "status": "ok"}
    )  # fmt: skip


def feed(
    collection: Collection[str], partition: str, records: list[tuple[int, FrameResult]], now_s: float = 0.0
) -> None:
    for offset, frame in records:
        collection.take(partition, offset, frame, now_s)


def write_complete(collection: Collection[str]) -> list[str]:
    """What the collector does after a poll: write (here: name) each complete video, then finish it."""
    written = [assembly.video_id for assembly in collection.complete()]
    for video_id in written:
        collection.finish(video_id)
    return written


def test_records_read_again_after_a_position_reset_are_neither_duplicates_nor_news() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    first = [(0, result("v", 0, 4)), (1, result("v", 1, 4)), (2, result("v", 1, 4))]  # offset 2: a real duplicate
    feed(collection, P0, first)
    feed(collection, P0, first)  # the position went back to 0
    assert collection.take(P0, 1, result("v", 1, 4), 0.0) is None
    feed(collection, P0, [(3, result("v", 2, 4)), (4, result("v", 3, 4))])
    [assembly] = collection.complete()
    assert (assembly.received, assembly.duplicate_count) == (4, 1)


def test_a_written_video_read_again_is_not_written_again() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    video = [(0, result("v", 0)), (1, result("v", 1))]
    feed(collection, P0, video)
    assert write_complete(collection) == ["v"]
    feed(collection, P0, video)
    assert write_complete(collection) == []
    assert collection.assembly("v") is None
    assert collection.commit_points() == {P0: 2}


def test_a_late_duplicate_of_a_written_video_pins_the_commit_point_only_until_idle() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    feed(collection, P0, [(0, result("v", 0)), (1, result("v", 1))])
    write_complete(collection)
    feed(collection, P0, [(2, result("v", 0))], now_s=10.0)  # the late duplicate
    feed(collection, P0, [(3, result("w", 0, 1))], now_s=20.0)
    assert write_complete(collection) == ["w"]
    assert collection.commit_points() == {P0: 2}
    assert collection.release_idle(10.0 + IDLE_S - 1) == []
    assert collection.release_idle(10.0 + IDLE_S) == [Released("v", P0, 2, received=1, total_frames=2)]
    assert collection.commit_points() == {P0: 4}
    assert collection.release_idle(10.0 + 2 * IDLE_S) == []


def test_a_rerun_under_the_same_id_is_assembled_and_written_again() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    feed(collection, P0, [(0, result("v", 1)), (1, result("v", 0))])
    assert write_complete(collection) == ["v"]
    feed(collection, P0, [(2, result("v", 0)), (3, result("v", 1))])
    [rerun] = collection.complete()
    assert (rerun.video_id, rerun.received, rerun.duplicate_count) == ("v", 2, 0)


def test_a_released_buffer_keeps_its_results_and_pins_again_from_its_next_result() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    feed(collection, P0, [(0, result("v", 0, 3)), (1, result("w", 0, 1))])
    write_complete(collection)
    assert [r.video_id for r in collection.release_idle(IDLE_S)] == ["v"]
    feed(collection, P0, [(5, result("v", 1, 3))], now_s=IDLE_S + 1)
    assert collection.commit_points() == {P0: 5}
    feed(collection, P0, [(6, result("v", 2, 3))], now_s=IDLE_S + 2)
    assert write_complete(collection) == ["v"]
    assert collection.commit_points() == {P0: 7}


def test_released_buffers_beyond_the_cap_are_dropped_oldest_first() -> None:
    collection: Collection[str] = Collection(IDLE_S, max_released=1)
    feed(collection, P0, [(0, result("a", 0))])
    feed(collection, P0, [(1, result("b", 0))], now_s=5.0)
    collection.release_idle(IDLE_S)
    assert collection.assembly("a") is not None
    collection.release_idle(IDLE_S + 5.0)
    assert collection.assembly("a") is None
    assert collection.assembly("b") is not None


def test_revoked_partitions_forget_their_buffers_and_are_read_again_from_the_commit_point() -> None:
    collection: Collection[str] = Collection(IDLE_S)
    feed(collection, P0, [(0, result("v", 0))])
    feed(collection, P1, [(0, result("w", 0))])
    collection.forget({P0})
    assert collection.assembly("v") is None
    assert collection.commit_points() == {P1: 0}
    feed(collection, P0, [(0, result("v", 0)), (1, result("v", 1))])
    [assembly] = collection.complete()
    assert (assembly.video_id, assembly.duplicate_count) == ("v", 0)


def test_records_before_where_reading_started_are_never_read() -> None:
    positions: ReadPositions[str] = ReadPositions()
    positions.start_at(P0, 10)
    assert not positions.first_read(P0, 3)  # an out-of-range reset to the log start: an earlier run's result
    assert positions.first_read(P0, 10)
    assert not positions.first_read(P0, 10)
    assert positions.first_read(P1, 0)


class Consumer:
    """The two calls `position_from_group` makes of an AIOKafkaConsumer, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.calls.append(("seek", (tp, offset)))

    async def seek_to_beginning(self, tp: TopicPartition) -> bool:
        self.calls.append(("seek_to_beginning", tp))
        return True


def answering(answer: int | Exception | None) -> Any:
    async def committed_offsets(consumer: Any, partitions: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        if isinstance(answer, Exception):
            raise answer
        return dict.fromkeys(partitions, answer)

    return committed_offsets


TP = TopicPartition("results", 3)


@pytest.mark.parametrize(
    ("answer", "calls"),
    [(7, [("seek", (TP, 7))]), (None, [("seek_to_beginning", TP)])],
    ids=["committed", "none-committed"],
)
async def test_a_partition_starts_at_its_commit_point_or_the_log_start_only_when_none_is_committed(
    monkeypatch: pytest.MonkeyPatch, answer: int | None, calls: list[tuple[str, Any]]
) -> None:
    monkeypatch.setattr(collector, "committed_offsets", answering(answer))
    consumer = Consumer()
    await collector.position_from_group(consumer, TP)  # type: ignore[arg-type]
    assert consumer.calls == calls


async def test_a_coordinator_that_cannot_tell_moves_no_position(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(collector, "committed_offsets", answering(GroupLoadInProgressError()))
    consumer = Consumer()
    with pytest.raises(GroupLoadInProgressError):
        await collector.position_from_group(consumer, TP)  # type: ignore[arg-type]
    assert consumer.calls == []
