"""The bench's reading of the worker's event-loop lag histogram, from a real exposition."""

from __future__ import annotations

from prometheus_client import generate_latest

from inference.metrics import Metrics
from scripts.bench import LoopLag


def exposition(lags_s: list[float]) -> str:
    metrics = Metrics()
    for lag in lags_s:
        metrics.loop_lag.observe(lag)
    return generate_latest(metrics.registry).decode()


def test_a_run_counts_only_the_wakeups_between_two_scrapes() -> None:
    start = LoopLag.parse(exposition([0.3, 0.0002]))
    end = LoopLag.parse(exposition([0.3, 0.0002] + [0.0004] * 98 + [0.002, 0.03]))
    summary = (end - start).summary()
    assert summary["wakeups"] == 100
    assert summary["p99_within_ms"] == 5, "99 of 100 within the 5 ms bucket"
    assert summary["stalls"] == 1, "the 300 ms wakeup came before the run"
    assert summary["latest_over_ms"] == 25


def test_no_histogram_means_no_summary() -> None:
    assert LoopLag.parse("").summary() == {}
    assert LoopLag.parse(exposition([])).summary() == {}
