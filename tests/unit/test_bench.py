"""The bench's reading of the worker's event-loop lag histogram (from a real exposition), and its
baseline bracketing."""

from __future__ import annotations

from prometheus_client import generate_latest

from inference.metrics import Metrics
from scripts.bench import LoopLag, Measure, bracketing


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


def test_a_bracketed_baseline_is_the_mean_rate_of_its_two_readings() -> None:
    before = Measure("model-only onnx P=2", 400, 2.0, cpu_percent=100.0)  # 200 frames/s
    after = Measure("model-only onnx P=2, again", 400, 4.0, cpu_percent=90.0)  # 100 frames/s: the machine slowed
    bound = bracketing(before, after)
    assert bound.fps == 150.0
    assert bound.cpu_percent == 95.0
    assert bound.name == before.name
