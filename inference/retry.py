"""The retry policy: which failures are tried again, how long to pause, how often to say so.

Every retry loop of the project goes through here: a step retried until it passes
(`retry`), or a poll loop that backs off after consecutive failures (`FailureStreak`).
An error is retried when its `retriable` flag says so (our `PipelineError`s and
aiokafka's `KafkaError`s both carry one) or when the caller names its type.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from inference.logs import Throttle, log_event

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff: a pause drawn from [0, min(cap, base * 2^(attempt-1))]."""

    base_s: float
    cap_s: float

    def pause_s(self, attempt: int) -> float:
        """The pause before attempt + 1 (attempt counts from 1)."""
        # The exponent is capped: past about 1000 attempts (an outage of hours) 2.0**n overflows.
        growth = 2.0 ** min(attempt - 1, 64)
        return random.uniform(0, min(self.cap_s, self.base_s * growth))  # noqa: S311 - jitter, not crypto


# S3 answers within milliseconds when healthy: start retrying quickly.
S3_BACKOFF = Backoff(base_s=0.2, cap_s=10.0)
KAFKA_BACKOFF = Backoff(base_s=0.5, cap_s=5.0)
# A pool process that cannot load its model will not load it a second later either.
POOL_START_BACKOFF = Backoff(base_s=1.0, cap_s=30.0)


def flagged_retriable(exc: BaseException) -> bool:
    """The error's own `retriable` flag (PipelineError, aiokafka's KafkaError); False when it has none."""
    return bool(getattr(exc, "retriable", False))


@dataclass
class RetryLog:
    """The warning a retry loop logs: one event name, throttled, with the failure and the attempt."""

    logger: logging.Logger
    event: str
    level: int = logging.WARNING
    throttle: Throttle = field(default_factory=Throttle)

    def failed(self, exc: BaseException, attempt: int, fields: dict[str, object]) -> None:
        if self.throttle.allow():
            log_event(self.logger, self.level, self.event, error=_describe(exc), attempt=attempt, **fields)


async def retry(
    step: Callable[[], Awaitable[T]],
    *,
    backoff: Backoff,
    log: RetryLog,
    retriable: Callable[[BaseException], bool] = flagged_retriable,
    attempts: int | None = None,
    fields: dict[str, object] | None = None,
) -> T:
    """Await `step()` until it returns; a retriable failure is logged and paused on.

    attempts=None retries for as long as the caller waits (it may cancel); otherwise the last
    failure is raised after that many attempts. A failure that is not retriable is raised at once.
    """
    attempt = 0
    while True:
        attempt += 1
        try:
            return await step()
        except Exception as exc:
            if not retriable(exc) or (attempts is not None and attempt >= attempts):
                raise
            log.failed(exc, attempt, fields or {})
        await asyncio.sleep(backoff.pause_s(attempt))


@dataclass
class FailureStreak:
    """Consecutive failures of a loop that goes on by itself (a poll loop): log, then back off."""

    log: RetryLog
    backoff: Backoff = KAFKA_BACKOFF
    failures: int = 0

    async def failed(self, exc: BaseException, **fields: object) -> None:
        self.failures += 1
        self.log.failed(exc, self.failures, fields)
        await asyncio.sleep(self.backoff.pause_s(self.failures))

    def passed(self) -> None:
        self.failures = 0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return repr(exc) if not text or text == type(exc).__name__ else f"{type(exc).__name__}: {text}"
