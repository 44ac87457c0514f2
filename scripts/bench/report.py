"""The bench's report: a table, a plot, the ratios' baselines, a JSON file, printed summaries."""

from __future__ import annotations

import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psutil

from inference.config import available_cores
from scripts.bench.readings import LOOP_STALL_S, Measure


def bracketing(before: Measure, after: Measure) -> Measure:
    """The mean rate of one measurement taken before and after the run it is a baseline for.

    The machine's speed drifts within minutes (a shared host whose guest shows no steal time), so a
    baseline taken once, before, biases the ratio by that drift. Both readings are in the report.
    """
    mean_fps = (before.fps + after.fps) / 2
    return Measure(before.name, before.frames, before.frames / mean_fps,
                   cpu_percent=(before.cpu_percent + after.cpu_percent) / 2)  # fmt: skip


def worker_efficiency(pipeline: Measure, bound: Measure) -> float:
    """pipeline/bound as if Kafka, S3 and this script ran elsewhere: the bound's CPU per frame over the
    worker's own (main + pool processes). On one small machine the local servers take cores the
    bound never shares; this ratio keeps the worker's own overhead apart from theirs.
    """
    cores = available_cores()
    worker_ms = pipeline.cpu_ms_per_frame.get("main", 0.0) + pipeline.cpu_ms_per_frame.get("pool", 0.0)
    bound_ms = 1000 * cores * bound.cpu_percent / 100 / bound.fps if bound.fps else 0.0
    return round(bound_ms / worker_ms, 3) if worker_ms else 0.0


def table(measures: list[Measure]) -> str:
    lines = [f"{'run':40} {'frames/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'cpu %':>6} "
             f"{'cpu ms/frame main/pool/kafka/s3/bench':>37}  rss MB"]  # fmt: skip
    for m in measures:
        lat = m.latency_ms
        rss = " ".join(f"{k}={v:.0f}" for k, v in m.rss_mb.items())
        cpu = "/".join(f"{v:.1f}" for v in m.cpu_ms_per_frame.values())
        lines.append(f"{m.name:40} {m.fps:9.2f} {lat.get('p50', 0):8.0f} {lat.get('p95', 0):8.0f} "
                     f"{lat.get('p99', 0):8.0f} {m.cpu_percent:6.0f} {cpu:>37}  {rss}")  # fmt: skip
    return "\n".join(lines)


def describe_lag(lag: dict[str, float]) -> str:
    return (
        f"99% of {lag['wakeups']:.0f} wakeups within {lag['p99_within_ms']:.0f} ms, {lag['stalls']:.0f} over "
        f"{LOOP_STALL_S * 1000:.0f} ms, the latest over {lag['latest_over_ms']:.0f} ms"
    )


def print_summary(measures: list[Measure], ratios: dict[str, float]) -> None:
    """The final table, the ratios, then each run's slowest frames, event loop and memory drift."""
    print("\n" + table(measures))  # noqa: T201
    print("\n".join(f"{k:36} {v:.3f}" for k, v in ratios.items()))  # noqa: T201
    for m in measures:
        if m.tail_ms and "50%" in m.name:
            print(f"slowest 5% at 50% load, median ms, {m.name}: {m.tail_ms}")  # noqa: T201
    for m in measures:
        if m.loop_lag:
            print(f"event loop, {m.name}: {describe_lag(m.loop_lag)}")  # noqa: T201
    for m in measures:
        if m.rss_drift_pct is not None:
            print(f"rss drift after warm-up, {m.name}: {m.rss_drift_pct:+.2f}%")  # noqa: T201


def write_json(path: Path, measures: list[Measure], ratios: dict[str, float], frames: int, imgsz: int) -> None:
    """Every run without its timeline, the ratios, the machine."""
    path.parent.mkdir(exist_ok=True)
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} cores, {round(psutil.virtual_memory().total / 2**30)} GiB",
        "frames": frames,
        "imgsz": imgsz,
        "runs": [{**asdict(m), "fps": round(m.fps, 3), "timeline": None} for m in measures],
        "ratios": ratios,
    }
    path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def plot(measures: list[Measure], path: Path) -> None:
    """Throughput (results per second) and latency over time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for m in measures:
        if not m.timeline:
            continue
        seconds = [s.seconds for s in m.timeline]
        per_second = np.bincount(np.array(seconds, dtype=int))
        top.plot(np.arange(len(per_second)), per_second, label=m.name)
        bottom.plot(seconds, [s.latency_ms for s in m.timeline], ".", markersize=2, label=m.name)
    top.set_ylabel("results per second")
    bottom.set_ylabel("end-to-end latency (ms)")
    bottom.set_xlabel("seconds since the first task")
    top.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
