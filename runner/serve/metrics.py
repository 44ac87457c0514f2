"""GET /metrics of `runner serve`: requests by route and status, their latency, videos by state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from runner.status import StatusBoard

STATES = ("queued", "running", "completed", "failed")


class ApiMetrics:
    def __init__(self) -> None:
        # A registry of its own: the process-wide default would mix in whatever else was imported.
        self.registry = CollectorRegistry()
        self.requests = Counter("runner_api_requests_total", "HTTP requests answered, by route template and status",
                                ["method", "route", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("runner_api_request_seconds", "Time to answer a request (streamed bodies: until "
                                 "the headers)", ["route"], registry=self.registry)  # fmt: skip
        self.videos = Gauge("runner_videos", "Videos on the status board by state", ["state"], registry=self.registry)

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def render(self, board: StatusBoard) -> bytes:
        counts = dict.fromkeys(STATES, 0)
        for status in board.videos():
            counts[status.state] += 1
        for state, count in counts.items():
            self.videos.labels(state).set(count)
        return generate_latest(self.registry)
