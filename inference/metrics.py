"""Prometheus metrics of one worker replica (names follow Prometheus conventions: base units, _total)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

METRIC_NAMES = (
    "inference_frames_total",
    "inference_stage_seconds",
    "inference_frames_in_flight",
    "inference_pool_processes_alive",
    "inference_pool_restarts_total",
    "inference_model_load_seconds",
    "inference_consumer_lag",
    "inference_consumer_lag_seconds",
    "inference_transactions_total",
    "inference_dlq_messages_total",
    "inference_event_loop_lag_seconds",
    "inference_model_frames_total",
    "inference_model_loads_total",
    "inference_model_load_duration_seconds",
    "inference_model_evictions_total",
)
STAGES = ("fetch", "queue", "detect", "publish", "end_to_end")
# From a few ms (a cached fetch) to a minute (a frame stuck behind a pool restart).
_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0, 60.0)
# A healthy loop is late by well under a millisecond; a full garbage collection, ~100 ms.
_LAG_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics:
    """One registry per worker, so several workers in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.frames = Counter(
            "inference_frames", "Frames answered, by status and error code.", ["status", "code"], registry=r
        )
        self.stage_seconds = Histogram(
            "inference_stage_seconds", "Time a frame spends in each stage.", ["stage"], buckets=_BUCKETS_S, registry=r
        )
        self.in_flight = Gauge("inference_frames_in_flight", "Frames consumed and not yet answered.", registry=r)
        self.pool_alive = Gauge("inference_pool_processes_alive", "Live detector pool processes.", registry=r)
        self.pool_restarts = Counter(
            "inference_pool_restarts", "Pool processes started again after one died.", registry=r
        )
        self.model_load_seconds = Gauge(
            "inference_model_load_seconds", "Time to start the pool and load the model in it.", registry=r
        )
        self.consumer_lag = Gauge(
            "inference_consumer_lag", "Records behind the end of each assigned partition.", ["topic", "partition"],
            registry=r,
        )  # fmt: skip
        self.consumer_lag_seconds = Gauge(
            "inference_consumer_lag_seconds", "Age of the oldest task not yet answered, by its record's timestamp.",
            ["topic", "partition"], registry=r,
        )  # fmt: skip
        self.transactions = Counter("inference_transactions", "Kafka transactions by outcome.", ["outcome"], registry=r)
        self.dlq_messages = Counter("inference_dlq_messages", "Unreadable tasks sent to the DLQ.", registry=r)
        self.model_frames = Counter(
            "inference_model_frames", "Frames answered, by model and version.", ["model", "version"], registry=r
        )
        self.model_loads = Counter(
            "inference_model_loads", "Models loaded in a pool process after its start.", ["model", "version"],
            registry=r,
        )  # fmt: skip
        self.model_load_duration = Histogram(
            "inference_model_load_duration_seconds", "Time a pool process takes to load and warm a model.",
            buckets=_BUCKETS_S, registry=r,
        )  # fmt: skip
        self.model_evictions = Counter(
            "inference_model_evictions", "Models unloaded to make room for another (WORKER_MAX_MODELS).", registry=r
        )
        self.loop_lag = Histogram(
            "inference_event_loop_lag_seconds", "How late the event loop wakes a timer: a stall delays every frame.",
            buckets=_LAG_BUCKETS_S, registry=r,
        )  # fmt: skip

    def frame_done(self, status: str, code: str = "") -> None:
        self.frames.labels(status=status, code=code).inc()

    def observe(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)
