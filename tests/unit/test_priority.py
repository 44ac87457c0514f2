"""Which partitions a replica holds back so that lower priorities stay within their share."""

from __future__ import annotations

from aiokafka import TopicPartition

from inference.priority import Priority, low_share_slots, partitions_to_hold, priority_topics

LEVELS = priority_topics("tasks")
HIGH, NORMAL, LOW = (TopicPartition(topic, 0) for topic in ("tasks.high", "tasks", "tasks.low"))
ASSIGNED = {HIGH, NORMAL, LOW}


def test_the_three_topics_and_their_levels() -> None:
    assert LEVELS == {"tasks.high": Priority.HIGH, "tasks": Priority.NORMAL, "tasks.low": Priority.LOW}


def test_the_share_is_at_least_one_slot_so_no_level_starves() -> None:
    assert low_share_slots(32, 0.1) == 3
    assert low_share_slots(4, 0.1) == 1


def test_nothing_waiting_higher_holds_nothing() -> None:
    waiting = {Priority.HIGH: False, Priority.NORMAL: False, Priority.LOW: True}
    assert partitions_to_hold(ASSIGNED, LEVELS, waiting, {Priority.LOW: 30}, 2, 3) == set()


def test_a_waiting_high_level_holds_the_lower_ones_past_their_share() -> None:
    waiting = {Priority.HIGH: True, Priority.LOW: True}
    assert partitions_to_hold(ASSIGNED, LEVELS, waiting, {Priority.LOW: 3}, 1, 3) == {NORMAL, LOW}


def test_within_their_share_lower_levels_go_on_at_saturation() -> None:
    waiting = {Priority.HIGH: True, Priority.LOW: True}
    in_flight = {Priority.HIGH: 29, Priority.LOW: 1}
    assert partitions_to_hold(ASSIGNED, LEVELS, waiting, in_flight, 2, 3) == set()


def test_free_slots_count_against_the_share_since_one_poll_may_fill_them() -> None:
    waiting = {Priority.HIGH: True}
    assert partitions_to_hold(ASSIGNED, LEVELS, waiting, {}, 20, 3) == {NORMAL, LOW}


def test_normal_waiting_holds_only_low() -> None:
    waiting = {Priority.NORMAL: True, Priority.LOW: True}
    assert partitions_to_hold(ASSIGNED, LEVELS, waiting, {Priority.LOW: 5}, 0, 3) == {LOW}
