"""What the probes answer for one replica: is it alive (/healthz), is it serving (/readyz).

Alive: the consume loop turns, no commit cycle hangs, the pool has a live process.
Serving: the model is loaded, the replica is a member of its group, S3 serves its fetches,
it is not draining, and the DLQ guard has not stopped it.
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
# How often the loop-lag probe wakes; its oversleep is the event loop's delay to every frame.
LOOP_PROBE_S = 0.05


class Health:
    """Marks set by the worker as it runs, read by the probes."""

    def __init__(
        self,
        pool_loaded: Callable[[], bool],
        pool_alive: Callable[[], bool],
        storage_outage: Callable[[], str | None] = lambda: None,
        halted: Callable[[], str | None] = lambda: None,
    ) -> None:
        self._pool_loaded = pool_loaded
        self._pool_alive = pool_alive
        self._storage_outage = storage_outage
        self._halted = halted
        self._loop_tick = time.monotonic()
        self._commit_started: float | None = None
        self.joined = False
        self.draining = False

    def loop_turned(self) -> None:
        self._loop_tick = time.monotonic()

    def commit_started(self) -> None:
        self._commit_started = time.monotonic()

    def commit_ended(self) -> None:
        self._commit_started = None

    def healthy(self) -> Probe:
        now = time.monotonic()
        if now - self._loop_tick > LOOP_STALL_S:
            return Probe(False, f"consume loop has not turned for {LOOP_STALL_S:.0f}s")
        if self._commit_started is not None and now - self._commit_started > COMMIT_STALL_S:
            return Probe(False, f"a commit cycle has run for over {COMMIT_STALL_S:.0f}s")
        if self._pool_loaded() and not self._pool_alive():
            return Probe(False, "detector pool is down")
        return Probe(True, "alive")

    def ready(self) -> Probe:
        if not self._pool_loaded():
            return Probe(False, "model is loading")
        if not self.joined:
            return Probe(False, "not yet a member of the consumer group")
        if self.draining:
            return Probe(False, "draining")
        halted = self._halted()
        if halted is not None:
            return Probe(False, f"stopped taking work: {halted}")
        outage = self._storage_outage()
        if outage is not None:
            return Probe(False, f"S3 outage: {outage}")
        return Probe(True, "serving")


async def watch_loop_lag(metrics: Metrics) -> None:
    """Observe how late the event loop wakes a timer, until cancelled."""
    while True:
        before = time.perf_counter()
        await asyncio.sleep(LOOP_PROBE_S)
        metrics.loop_lag.observe(max(0.0, time.perf_counter() - before - LOOP_PROBE_S))
