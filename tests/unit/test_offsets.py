"""The per-partition commit point: contiguous finished prefix, whatever order frames finish in."""

from __future__ import annotations

import pytest

from inference.offsets import OffsetError, OffsetWentBackwards, PartitionOffsets, UnknownOffset


def started(*offsets: int) -> PartitionOffsets[str]:
    tracker: PartitionOffsets[str] = PartitionOffsets()
    for offset in offsets:
        tracker.start(offset)
    return tracker


def test_nothing_to_commit_before_anything_finishes() -> None:
    tracker = started(10, 11, 12)
    assert tracker.ready() is None
    assert tracker.commit_point() == 10
    assert len(tracker) == 3


def test_nothing_started_means_no_commit_point() -> None:
    assert PartitionOffsets[str]().commit_point() is None
    assert PartitionOffsets[str]().ready() is None


def test_out_of_order_completion_waits_for_the_gap() -> None:
    tracker = started(0, 1, 2, 3)
    tracker.finish(2)
    tracker.finish(3)
    assert tracker.ready() is None  # 0 and 1 are still running
    tracker.finish(0)
    assert tracker.ready() == 1
    tracker.finish(1)
    assert tracker.ready() == 4


def test_take_forgets_the_prefix_and_returns_payloads_in_order() -> None:
    tracker = started(5, 6, 7)
    tracker.finish(6, "six")
    tracker.finish(5, "five")
    assert tracker.ready() == 7
    assert tracker.take(7) == ["five", "six"]
    assert tracker.ready() is None
    assert list(tracker.unfinished()) == [7]
    tracker.finish(7, "seven")
    assert tracker.take(8) == ["seven"]


def test_skipped_offsets_are_not_waited_for() -> None:
    # Transaction markers and compaction leave holes in the offsets a consumer sees.
    tracker = started(3, 5, 9)
    for offset in (3, 5, 9):
        tracker.finish(offset)
    assert tracker.ready() == 10


def test_offsets_never_go_backwards() -> None:
    tracker = started(4, 5)
    with pytest.raises(OffsetWentBackwards):
        tracker.start(5)
    with pytest.raises(OffsetWentBackwards):
        tracker.start(1)


def test_finishing_an_unknown_or_finished_offset_is_a_bug() -> None:
    tracker = started(1)
    with pytest.raises(UnknownOffset):
        tracker.finish(2)
    tracker.finish(1)
    with pytest.raises(UnknownOffset):
        tracker.finish(1)


def test_take_refuses_to_pass_unfinished_work_or_go_back() -> None:
    tracker = started(1, 2, 3)
    tracker.finish(1)
    with pytest.raises(OffsetError):
        tracker.take(3)
    tracker.take(2)
    with pytest.raises(OffsetWentBackwards):
        tracker.take(1)


def test_revoked_partition_state_is_a_fresh_tracker() -> None:
    # After revocation and re-assignment consumption restarts from the committed offset.
    old = started(0, 1, 2)
    old.finish(0)
    assert old.take(1) == []
    fresh = started(1, 2)
    fresh.finish(1)
    fresh.finish(2)
    assert fresh.ready() == 3


def test_a_tracker_taken_over_at_a_committed_offset_refuses_older_records() -> None:
    tracker: PartitionOffsets[str] = PartitionOffsets(committed=40)
    assert tracker.position == 40
    assert tracker.ready() is None
    with pytest.raises(OffsetWentBackwards):
        tracker.start(39)
    tracker.start(42)  # 40 and 41 held transaction markers
    tracker.finish(42, "answer")
    assert tracker.ready() == 43
    assert tracker.take(43) == ["answer"]
