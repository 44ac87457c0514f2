"""The one retry policy: what is retried, for how long, how it pauses, how often it logs."""

from __future__ import annotations

import logging

import pytest

from inference.errors import FrameNotFound, StorageUnavailable
from inference.logs import Throttle
from inference.retry import Backoff, FailureStreak, RetryLog, retry

NO_PAUSE = Backoff(base_s=0.0, cap_s=0.0)
logger = logging.getLogger("tests.retry")


class Flaky:
    """Fails with each of `failures` in turn, then returns "done"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def test_backoff_is_capped_and_jittered() -> None:
    backoff = Backoff(base_s=0.2, cap_s=10.0)
    pauses = [backoff.pause_s(attempt) for attempt in (1, 5, 30) for _ in range(50)]
    assert all(0 <= pause <= 10.0 for pause in pauses)
    assert all(0 <= backoff.pause_s(1) <= 0.2 for _ in range(50))
    assert len(set(pauses)) > 1


async def test_a_flagged_retriable_error_is_retried_until_the_step_passes() -> None:
    step = Flaky(StorageUnavailable("503"), StorageUnavailable("timeout"))
    assert await retry(step, backoff=NO_PAUSE, log=RetryLog(logger, "s3_unavailable")) == "done"
    assert step.calls == 3


async def test_an_error_not_flagged_retriable_is_raised_at_once() -> None:
    step = Flaky(FrameNotFound("NoSuchKey"))
    with pytest.raises(FrameNotFound):
        await retry(step, backoff=NO_PAUSE, log=RetryLog(logger, "s3_unavailable"))
    assert step.calls == 1


async def test_the_caller_may_name_what_is_retriable() -> None:
    step = Flaky(OSError("refused"), ValueError("not this"))
    with pytest.raises(ValueError, match="not this"):
        await retry(step, backoff=NO_PAUSE, log=RetryLog(logger, "x"), retriable=lambda e: isinstance(e, OSError))
    assert step.calls == 2


async def test_bounded_attempts_raise_the_last_failure() -> None:
    step = Flaky(StorageUnavailable("one"), StorageUnavailable("two"), StorageUnavailable("three"))
    with pytest.raises(StorageUnavailable, match="two"):
        await retry(step, backoff=NO_PAUSE, log=RetryLog(logger, "x"), attempts=2)
    assert step.calls == 2


async def test_an_outage_logs_once_per_interval_with_the_callers_fields(caplog: pytest.LogCaptureFixture) -> None:
    step = Flaky(*(StorageUnavailable("503") for _ in range(5)))
    log = RetryLog(logger, "s3_unavailable", throttle=Throttle(interval_s=3600))
    with caplog.at_level(logging.WARNING, logger="tests.retry"):
        await retry(step, backoff=NO_PAUSE, log=log, fields={"video_id": "v", "frame_id": 3, "offset": 9})
    lines = [r for r in caplog.records if r.getMessage() == "s3_unavailable"]
    assert len(lines) == 1
    assert (lines[0].video_id, lines[0].frame_id, lines[0].offset, lines[0].attempt) == ("v", 3, 9, 1)  # type: ignore[attr-defined]
    assert lines[0].error == "StorageUnavailable: 503"  # type: ignore[attr-defined]


async def test_a_failure_streak_counts_until_a_pass() -> None:
    streak = FailureStreak(RetryLog(logger, "poll_failed"), backoff=NO_PAUSE)
    await streak.failed(OSError("down"))
    await streak.failed(OSError("down"))
    assert streak.failures == 2
    streak.passed()
    assert streak.failures == 0


def test_a_throttle_lets_one_event_per_key_through_per_interval() -> None:
    throttle = Throttle(interval_s=3600)
    assert [throttle.allow("a"), throttle.allow("a"), throttle.allow("b")] == [True, False, True]
