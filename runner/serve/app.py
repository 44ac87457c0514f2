"""The FastAPI application and the service behind it: status board, jobs, the server's collector.

`running_service` connects everything before the HTTP port opens, so a server that cannot reach
Kafka or S3 (or may not use them) stops with one line instead of answering 500s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inference.cli import installed_version
from inference.config import KafkaSettings, S3Settings
from inference.logs import log_event
from runner.collector import Collector
from runner.errors import InfrastructureError
from runner.serve.auth import Guard, RateLimit
from runner.serve.console import STATIC_DIR, console_page
from runner.serve.jobs import Jobs
from runner.serve.metrics import ApiMetrics
from runner.serve.routes import router
from runner.serve.settings import ApiSettings
from runner.status_reporter import video_reporter

logger = logging.getLogger(__name__)


@dataclass
class Service:
    api: ApiSettings
    kafka: KafkaSettings
    jobs: Jobs
    metrics: ApiMetrics
    tasks: tuple[asyncio.Task[None], ...]

    def healthy(self) -> bool:
        """The collector and the status follower are still running."""
        return not any(task.done() for task in self.tasks)


def _log_end(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log_event(logger, logging.ERROR, "background_failed", task=task.get_name(), error=str(task.exception()))


@contextlib.asynccontextmanager
async def running_service(api: ApiSettings, kafka: KafkaSettings, s3: S3Settings) -> AsyncIterator[Service]:
    async with contextlib.AsyncExitStack() as stack:
        reporter = await stack.enter_async_context(video_reporter(kafka, s3, required=True))
        if reporter.store is None:
            raise InfrastructureError(f"S3 bucket {s3.results_bucket!r} is not usable")
        work_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="runner-serve-")))
        collected = work_dir / "collected"
        collected.mkdir()
        jobs = Jobs(kafka, s3, reporter, reporter.store, work_dir, api.max_concurrent_splits)
        await jobs.resume()
        collector = Collector(kafka, collected, api.collector_group, jobs.on_written, jobs.on_progress)
        tasks = (
            asyncio.create_task(collector.run(), name="collector"),
            asyncio.create_task(reporter.board.follow(), name="status-follower"),
        )
        for task in tasks:
            task.add_done_callback(_log_end)
        try:
            yield Service(api, kafka, jobs, ApiMetrics(), tasks)
        finally:
            collector.stop()
            tasks[1].cancel()
            await jobs.close()
            await asyncio.gather(*tasks, return_exceptions=True)


class Health(BaseModel):
    status: str


class Observed:
    """ASGI middleware: one log line and the metrics per request, by route template (never the query or headers)."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        answered = 500

        async def sending(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":
                answered = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            seconds = time.perf_counter() - started
            self._metrics.observe(scope["method"], route, answered, seconds)
            # The console polls every second: successful reads are DEBUG, everything else INFO or WARNING.
            level = logging.WARNING if answered >= 500 else logging.INFO
            if scope["method"] == "GET" and answered < 400:
                level = logging.DEBUG
            log_event(logger, level, "request", method=scope["method"], route=route, status=answered,
                      ms=round(seconds * 1000, 1))  # fmt: skip


def create_app(service: Service) -> FastAPI:
    app = FastAPI(
        title="Kafka frame detection",
        version=installed_version(),
        description="Upload videos, follow their detection, fetch results. Every /v1 call needs X-API-Key "
        "when the server has API_KEYS.",
        redoc_url=None,
    )
    app.state.api = service.api
    app.state.kafka = service.kafka
    app.state.jobs = service.jobs
    app.state.guard = Guard(service.api.key_set, RateLimit(service.api.rate_limit))
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_middleware(Observed, metrics=service.metrics)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def console() -> HTMLResponse:
        return HTMLResponse(console_page(bool(service.api.key_set), service.api.max_upload_bytes))

    @app.get("/healthz", summary="Liveness: the collector and the status follower run",
             responses={200: {"model": Health}, 503: {"model": Health}})  # fmt: skip
    async def healthz() -> JSONResponse:
        healthy = service.healthy()
        return JSONResponse({"status": "ok" if healthy else "failing"}, status_code=200 if healthy else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response,
             responses={200: {"content": {"text/plain": {}}}})  # fmt: skip
    async def metrics(request: Request) -> Response:
        return Response(service.metrics.render(service.jobs.board), media_type="text/plain; version=0.0.4")

    return app
