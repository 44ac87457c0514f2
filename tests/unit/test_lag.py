"""The age of a partition's oldest unanswered task, with answers arriving out of order."""

from __future__ import annotations

from inference.lag import TaskAge


def test_the_oldest_unanswered_task_sets_the_age_whatever_order_answers_come_in() -> None:
    age = TaskAge()
    for offset, stamp in enumerate((1_000.0, 2_000.0, 3_000.0)):
        age.taken(offset, stamp)
    assert age.seconds(now_ms=11_000.0, records_waiting=0) == 10.0
    age.answered(1)  # a later task finishes first: the oldest is still waiting
    assert age.seconds(now_ms=11_000.0, records_waiting=0) == 10.0
    age.answered(0)
    assert age.seconds(now_ms=11_000.0, records_waiting=0) == 8.0
    age.answered(2)
    assert age.seconds(now_ms=11_000.0, records_waiting=0) == 0.0


def test_records_waiting_with_none_in_hand_count_from_when_first_seen() -> None:
    age = TaskAge()
    assert age.seconds(now_ms=5_000.0, records_waiting=4) == 0.0
    assert age.seconds(now_ms=8_000.0, records_waiting=4) == 3.0
    assert age.seconds(now_ms=9_000.0, records_waiting=0) == 0.0, "caught up"
    assert age.seconds(now_ms=9_500.0, records_waiting=2) == 0.0, "waiting again: counted afresh"


def test_a_clock_behind_the_producers_never_gives_a_negative_age() -> None:
    age = TaskAge()
    age.taken(0, 10_000.0)
    assert age.seconds(now_ms=9_000.0, records_waiting=0) == 0.0
