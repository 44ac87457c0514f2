"""The e2e tests of `runner serve` share one pipeline: topics of their own and two real workers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.stack import Endpoints
from tests.support import MODEL_PATH, ServeProcess, Topics, WorkerProcess, create_topics


@dataclass
class Pipeline:
    env: dict[str, str]
    topics: Topics
    workers: list[WorkerProcess]

    @contextlib.contextmanager
    def workers_paused(self) -> Iterator[None]:
        """SIGSTOP every worker, SIGCONT them when the block ends (however it ends)."""
        for worker in self.workers:
            worker.proc.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            for worker in self.workers:
                worker.proc.send_signal(signal.SIGCONT)


# Package scope: the workers stop once the e2e tests are done, not idle through the rest of the suite.
@pytest.fixture(scope="package")
def pipeline(stack: Endpoints, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    topics = Topics.unique()
    partitions = {topics.tasks: 6, topics.high: 6, topics.low: 6, topics.results: 6, topics.dlq: 1, topics.models: 1,
                  topics.status: 3}  # fmt: skip
    asyncio.run(create_topics(stack.bootstrap_servers, partitions, topics.compacted))
    logs = tmp_path_factory.mktemp("pipeline")
    env = {
        **stack.env(),
        **topics.env(),
        "MODEL_PATH": str(MODEL_PATH),
        "MODEL_CACHE_DIR": str(logs / "models"),
        "WORKER_PROCESSES": "1",
        "WORKER_DRAIN_TIMEOUT_S": "30",
        "YOLO_OFFLINE": "1",
        "LOG_FORMAT": "json",
    }
    workers = [WorkerProcess(env, logs / f"worker-{i}.log") for i in range(2)]
    try:
        for worker in workers:
            worker.wait_started()
        yield Pipeline(env, topics, workers)
    finally:
        for worker in workers:
            worker.close()


@pytest.fixture
def start_server(pipeline: Pipeline, tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Start `runner serve` on the pipeline; `group` is its collector group (keep it across restarts)."""
    started: list[ServeProcess] = []

    def start(group: str, **overrides: str) -> ServeProcess:
        env = {**pipeline.env, "API_COLLECTOR_GROUP": group, **overrides}
        server = ServeProcess(env, tmp_path / f"serve-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
