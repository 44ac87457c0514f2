"""HTTP endpoints for operators on METRICS_PORT: /metrics, /healthz (alive), /readyz (serving)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from inference.metrics import Metrics


@dataclass(frozen=True)
class Probe:
    ok: bool
    reason: str


class ProbeServer:
    """Serves the probes from the worker's own event loop, so a stalled loop fails /healthz."""

    def __init__(self, metrics: Metrics, port: int, healthy: Callable[[], Probe], ready: Callable[[], Probe]) -> None:
        self._metrics = metrics
        self._port = port
        self._healthy = healthy
        self._ready = ready
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._serve_metrics)
        app.router.add_get("/healthz", self._serve_healthz)
        app.router.add_get("/readyz", self._serve_readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "0.0.0.0", self._port).start()  # noqa: S104 - probes come from outside the pod

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve_healthz(self, _: web.Request) -> web.Response:
        return _answer(self._healthy())

    async def _serve_readyz(self, _: web.Request) -> web.Response:
        return _answer(self._ready())

    async def _serve_metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _answer(probe: Probe) -> web.Response:
    return web.json_response({"ok": probe.ok, "reason": probe.reason}, status=200 if probe.ok else 503)
