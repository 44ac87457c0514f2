"""What the probes answer for one replica: is it alive (/healthz), is it serving (/readyz).

Alive: the consume loop turns (or a rebalance, which blocks its poll, is within its bound), no
commit cycle hangs, the pool has a live process.
Serving: the model is loaded, the replica is a member of its group with its partitions set up,
S3 serves its fetches, it is not draining, and the DLQ guard has not stopped it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from inference.metrics import Metrics
from inference.probes import Probe

# /healthz fails when the consume loop has not turned for this long (a blocked event loop).
LOOP_STALL_S = 30.0
# ... or when one commit cycle has run this long: its Kafka steps are bounded (commit.STEP_TIMEOUT_S
# each), so a cycle past this is held by something unbounded.
COMMIT_STALL_S = 60.0
# A rebalance holds the loop's poll until the new assignment is set up: the members' revocations and
# rejoins (within the rebalance timeout), then the assignment, well within this.
ASSIGNMENT_STALL_S = 30.0
# How often the loop-lag probe wakes; its oversleep is the event loop's delay to every frame.
LOOP_PROBE_S = 0.05


class Health:
    """Marks set by the worker as it runs, read by the probes."""

    def __init__(
        self,
        pool_loaded: Callable[[], bool],
        pool_alive: Callable[[], bool],
        storage_outage: Callable[[], str | None] = lambda: None,
        publish_outage: Callable[[], str | None] = lambda: None,
        halted: Callable[[], str | None] = lambda: None,
        rebalance_timeout_s: float = 10.0,  # aiokafka's default
    ) -> None:
        self._pool_loaded = pool_loaded
        self._pool_alive = pool_alive
        self._storage_outage = storage_outage
        self._publish_outage = publish_outage
        self._halted = halted
        self._loop_tick = time.monotonic()
        self._commit_started: float | None = None
        self._rebalance_started: float | None = None
        self._rebalance_limit_s = rebalance_timeout_s + ASSIGNMENT_STALL_S
        self.joined = False
        self.draining = False
        # Why the latest assignment could not be set up (a rejoin is under way); None once one was.
        self.set_up_failed: str | None = None

    def loop_turned(self) -> None:
        self._loop_tick = time.monotonic()

    def rebalance_started(self) -> None:
        """The group began a rebalance: the consume loop's poll waits until it ends."""
        if self._rebalance_started is None:
            self._rebalance_started = time.monotonic()

    def rebalance_ended(self) -> None:
        self._rebalance_started = None
        # The poll returns now; until the loop turns, the tick from before the rebalance is not a stall.
        self._loop_tick = time.monotonic()

    def commit_started(self) -> None:
        self._commit_started = time.monotonic()

    def commit_ended(self) -> None:
        self._commit_started = None

    def healthy(self) -> Probe:
        now = time.monotonic()
        stalled = self._loop_stall(now)
        if stalled is not None:
            return Probe(False, stalled)
        if self._commit_started is not None and now - self._commit_started > COMMIT_STALL_S:
            return Probe(False, f"a commit cycle has run for over {COMMIT_STALL_S:.0f}s")
        if self._pool_loaded() and not self._pool_alive():
            return Probe(False, "detector pool is down")
        return Probe(True, "alive")

    def _loop_stall(self, now: float) -> str | None:
        """Why the consume loop counts as stuck: no turn for LOOP_STALL_S, or a rebalance past its bound."""
        if self._rebalance_started is not None:
            if now - self._rebalance_started > self._rebalance_limit_s:
                return f"a rebalance has run for over {self._rebalance_limit_s:.0f}s"
            return None
        if now - self._loop_tick > LOOP_STALL_S:
            return f"consume loop has not turned for {LOOP_STALL_S:.0f}s"
        return None

    def ready(self) -> Probe:
        if not self._pool_loaded():
            return Probe(False, "model is loading")
        if not self.joined:
            return Probe(False, "not yet a member of the consumer group")
        if self.draining:
            return Probe(False, "draining")
        if self.set_up_failed is not None:
            return Probe(False, self.set_up_failed)
        halted = self._halted()
        if halted is not None:
            return Probe(False, f"stopped taking work: {halted}")
        outage = self._storage_outage()
        if outage is not None:
            return Probe(False, f"S3 outage: {outage}")
        outage = self._publish_outage()
        if outage is not None:
            return Probe(False, f"results not published: {outage}")
        return Probe(True, "serving")


async def watch_loop_lag(metrics: Metrics) -> None:
    """Observe how late the event loop wakes a timer, until cancelled."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(LOOP_PROBE_S)
        metrics.loop_lag.observe(max(0.0, time.perf_counter() - before - LOOP_PROBE_S))
