"""The DLQ guard: a full window of mostly dead-lettered tasks stops the replica, once."""

from __future__ import annotations

from inference.guard import DlqGuard


def test_it_trips_when_more_than_the_ratio_of_a_full_window_went_to_the_dlq() -> None:
    guard = DlqGuard(max_ratio=0.5, window=10)
    outcomes = [guard.answered(True) for _ in range(9)]
    assert outcomes == [False] * 9 and guard.tripped is None, "a window not yet full never trips"
    assert guard.answered(True) is True
    assert guard.tripped is not None and "10 of the last 10 tasks" in guard.tripped
    assert guard.answered(True) is False, "it trips once"


def test_exactly_the_ratio_does_not_trip_and_old_outcomes_leave_the_window() -> None:
    guard = DlqGuard(max_ratio=0.5, window=10)
    for i in range(10):
        guard.answered(i % 2 == 0)
    assert guard.tripped is None
    for _ in range(100):
        guard.answered(False)
    for _ in range(5):
        guard.answered(True)
    assert guard.tripped is None, "5 of the last 10"
    guard.answered(True)
    assert guard.tripped is not None


def test_a_ratio_of_one_never_trips() -> None:
    guard = DlqGuard(max_ratio=1.0, window=3)
    assert not any(guard.answered(True) for _ in range(50))
