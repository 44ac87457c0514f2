"""What a bench run records: samples, percentiles, event-loop lag, memory, CPU time, as one Measure."""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from prometheus_client.parser import text_string_to_metric_families

LOOP_LAG = "inference_event_loop_lag_seconds"
# A wakeup this late is a stall worth counting: longer than one detection takes on a CPU core.
LOOP_STALL_S = 0.025


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the first task
    latency_ms: float  # end to end: broker append time of the result minus that of its task
    stages_ms: dict[str, float]  # the worker's own timing_ms of the result


def percentiles(values: list[float]) -> dict[str, float]:
    if len(values) < 2:
        return {}
    q = statistics.quantiles(values, n=100)
    return {"p50": round(q[49], 1), "p95": round(q[94], 1), "p99": round(q[98], 1)}


def tail(samples: list[Sample]) -> dict[str, float]:
    """Median per stage over the frames at or above the 95th latency percentile."""
    if len(samples) < 20:
        return {}
    cut = statistics.quantiles([s.latency_ms for s in samples], n=100)[94]
    slow = [s for s in samples if s.latency_ms >= cut]
    out = {"end_to_end": statistics.median(s.latency_ms for s in slow)}
    for stage in ("fetch", "queue", "detect"):
        out[stage] = statistics.median(s.stages_ms.get(stage, 0.0) for s in slow)
    out["outside_worker"] = statistics.median(s.latency_ms - s.stages_ms.get("total", 0.0) for s in slow)
    return {k: round(v, 1) for k, v in out.items()}


@dataclass(frozen=True)
class LoopLag:
    """The replicas' event-loop lag histogram: wakeups at or under each bucket bound (s), summed over replicas."""

    buckets: dict[float, float]

    @classmethod
    def parse(cls, text: str) -> LoopLag:
        """The histogram's cumulative buckets from a Prometheus text exposition."""
        buckets: dict[float, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{LOOP_LAG}_bucket":
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
        return cls(buckets)

    @classmethod
    def scrape(cls, ports: list[int]) -> LoopLag:
        total = cls({})
        for port in ports:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
                    total += cls.parse(response.read().decode())
            except OSError:
                continue  # a replica without metrics (the naive worker)
        return total

    def __add__(self, other: LoopLag) -> LoopLag:
        bounds = self.buckets.keys() | other.buckets.keys()
        return LoopLag({b: self.buckets.get(b, 0.0) + other.buckets.get(b, 0.0) for b in bounds})

    def __sub__(self, earlier: LoopLag) -> LoopLag:
        return LoopLag({bound: n - earlier.buckets.get(bound, 0.0) for bound, n in self.buckets.items()})

    def summary(self) -> dict[str, float]:
        """Wakeups; the bucket bound (ms) that 99% of them came within; how many came over LOOP_STALL_S
        late; and the bound (ms) that the latest wakeup exceeded (0: all within the first bucket)."""
        wakeups = self.buckets.get(math.inf, 0.0)
        if not wakeups:
            return {}
        p99 = min(bound for bound, n in self.buckets.items() if n >= 0.99 * wakeups)
        exceeded = [bound for bound, n in self.buckets.items() if n < wakeups]
        return {
            "wakeups": wakeups,
            "p99_within_ms": p99 * 1000,
            "stalls": wakeups - self.buckets.get(LOOP_STALL_S, wakeups),
            "latest_over_ms": max(exceeded, default=0.0) * 1000,
        }


@dataclass
class Measure:
    name: str
    frames: int
    seconds: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_percent: float = 0.0
    rss_mb: dict[str, float] = field(default_factory=dict)
    rss_drift_pct: float | None = None
    # CPU milliseconds per frame: worker main processes, pool processes, Kafka broker, S3 server,
    # and this script (its task producer and result reader share the cores too).
    cpu_ms_per_frame: dict[str, float] = field(default_factory=dict)
    # Where the slowest 5% of frames spent their time: median ms per worker stage, and outside the
    # worker (Kafka delivery of the task until the worker took it, plus the result's send).
    tail_ms: dict[str, float] = field(default_factory=dict)
    # The replicas' event loop during the run (inference_event_loop_lag_seconds): see LoopLag.
    loop_lag: dict[str, float] = field(default_factory=dict)
    # One per result in arrival order, for the plot.
    timeline: list[Sample] = field(default_factory=list, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


class RssSampler:
    """Total resident memory of the replicas and their pools, sampled every second in a thread."""

    def __init__(self, procs: list[psutil.Process]) -> None:
        self._procs = procs
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(sum(rss_of(self._procs).values()))

    def drift_pct(self) -> float | None:
        """Growth from the end of warm-up (the first quarter of the run) to the end, in percent."""
        if len(self.samples) < 8:
            return None
        warm = self.samples[len(self.samples) // 4]
        return round(100 * (max(self.samples[len(self.samples) // 4 :]) - warm) / warm, 2)


def rss_of(procs: list[psutil.Process]) -> dict[str, float]:
    out = {}
    for i, proc in enumerate(procs):
        with contextlib.suppress(psutil.Error):
            out[f"replica{i}"] = round(proc.memory_info().rss / 2**20, 1)
            for j, child in enumerate(proc.children(recursive=True)):
                out[f"replica{i}.pool{j}"] = round(child.memory_info().rss / 2**20, 1)
    return out


def stack_server(cmdline: list[str]) -> str | None:
    """Name ("kafka" or "s3") of the local stack's broker and SeaweedFS server (scripts/devstack)."""
    if "kafka.Kafka" in cmdline:
        return "kafka"
    return "s3" if cmdline and Path(cmdline[0]).name == "weed" else None


def cpu_seconds(replicas: list[psutil.Process]) -> dict[str, float]:
    """CPU time so far of the replicas' main processes, their pools, each stack server and this script."""

    def used(procs: list[psutil.Process]) -> float:
        total = 0.0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    pools = [child for r in replicas for child in psutil.Process(r.pid).children(recursive=True)]
    servers = [(stack_server(p.info["cmdline"] or []), p) for p in psutil.process_iter(["cmdline"])]
    return {
        "main": used(replicas),
        "pool": used(pools),
        "kafka": used([p for name, p in servers if name == "kafka"]),
        "s3": used([p for name, p in servers if name == "s3"]),
        "bench": used([psutil.Process()]),
    }
