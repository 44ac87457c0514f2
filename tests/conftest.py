"""Shared fixtures: one real Kafka + S3 stack per session, fresh topics and group per test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Cluster, Endpoints, SecuredStack, cluster_stack, secured_stack, test_stack
from tests.support import MODEL_PATH, Topics, WorkerProcess, create_topics

os.environ.setdefault("YOLO_OFFLINE", "1")


@pytest.fixture(scope="session")
def stack() -> Iterator[Endpoints]:
    with test_stack() as endpoints:
        yield endpoints


@pytest.fixture(scope="session")
def secure_stack() -> Iterator[SecuredStack]:
    """A second stack, Kafka on SASL_SSL with ACLs; started only by the tests that ask for it."""
    with secured_stack() as secured:
        yield secured


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """A third stack, Kafka on three nodes; started only by the tests that ask for it."""
    with cluster_stack() as nodes:
        yield nodes


@pytest.fixture
def topics(stack: Endpoints) -> Topics:
    names = Topics.unique()
    partitions = {names.tasks: 6, names.results: 6, names.dlq: 1, names.models: 1, names.status: 3}
    asyncio.run(create_topics(stack.bootstrap_servers, partitions, names.compacted))
    return names


@pytest.fixture
def priority_topics(stack: Endpoints, topics: Topics) -> Topics:
    """The tasks topic's .high and .low levels too; a deployment without them serves the tasks topic alone."""
    asyncio.run(create_topics(stack.bootstrap_servers, {topics.high: 6, topics.low: 6}))
    return topics


@pytest.fixture
def worker_env(stack: Endpoints, topics: Topics, tmp_path: Path) -> dict[str, str]:
    return {
        **stack.env(),
        **topics.env(),
        "MODEL_PATH": str(MODEL_PATH),
        "MODEL_CACHE_DIR": str(tmp_path / "model-cache"),
        "WORKER_PROCESSES": "1",
        "WORKER_DRAIN_TIMEOUT_S": "30",
        "YOLO_OFFLINE": "1",
        "LOG_FORMAT": "json",
    }


@pytest.fixture
def start_worker(worker_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    """Start real worker replicas; each is stopped (or killed) at the end of the test."""
    started: list[WorkerProcess] = []

    def start(**overrides: str) -> WorkerProcess:
        worker = WorkerProcess({**worker_env, **overrides}, tmp_path / f"worker-{len(started)}.log")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
