"""Exactly-once through a 3-node Kafka cluster's failovers (RF 3, min.insync.replicas=2).

Each scenario runs 2 worker replicas in exactly_once while tasks stream steadily for its whole
length (one video per task partition, so both replicas have work all along), lands one fault of
the catalogue (scripts/soak/faults.py, shared with `make soak`) on the node that holds a role,
found from the cluster, never guessed, and then checks that:
- every task has exactly one result, counted by partition and offset with a read_committed reader;
- a read_committed reader never waited longer than STALL_BOUND_S for a new result.

Failover here is bounded by the brokers' session timeout (9 s: a killed node's leaderships move
only when the controller fences it), the worker's 5 s transaction step bound and the clients'
metadata refresh: 10-15 s measured on a loaded 2-core machine (docs/reliability.md). STALL_BOUND_S
is four times that, so a hang fails the scenario and a slow, shared machine does not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from scripts.soak import faults
from scripts.soak.faults import Target
from scripts.soak.traffic import ProgressWatch, TaskStream
from scripts.soak.verify import all_committed
from tests.faults.report import record
from tests.stack import Cluster
from tests.support import (
    MODEL_PATH,
    Topics,
    WorkerProcess,
    create_topics,
    read_to_end,
    result_values,
    synthetic_jpeg,
    upload,
    wait_for,
)

STALL_BOUND_S = 60.0
# Well below what two replicas answer on 2 shared cores, so a backlog after a stall drains fast.
TASKS_PER_SECOND = 20.0
# Answers of the scenario seen before its fault lands: the pipeline is running, not starting.
BEFORE_FAULT = 40
PARTITIONS = faults.TASK_PARTITIONS


@dataclass(frozen=True)
class Scenario:
    name: str
    started: float


@pytest.fixture
def scenario(request: pytest.FixtureRequest, cluster: Cluster) -> Scenario:
    # Each scenario starts from a healthy cluster: the one before may have just restarted a node.
    cluster.wait_in_sync()
    return Scenario(request.node.name.removeprefix("test_"), time.monotonic())


@pytest.fixture(scope="module")
def frames(cluster: Cluster) -> list[str]:
    """A few small frames in the cluster's S3, shared by every task of the module (tasks repeat them)."""
    objects = {f"cluster-faults/{i:03d}.jpg": synthetic_jpeg(i, 320, 192) for i in range(24)}
    asyncio.run(upload(cluster.endpoints(), objects))
    return list(objects)


@pytest.fixture(scope="module")
def cluster_topics(cluster: Cluster) -> Topics:
    """The module's topics and group: the scenarios share them (and their replicas), each its own videos."""
    names = Topics.unique()
    partitions = {names.tasks: PARTITIONS, names.high: PARTITIONS, names.low: PARTITIONS, names.results: PARTITIONS,
                  names.dlq: 1, names.models: 1, names.status: 3}  # fmt: skip
    asyncio.run(create_topics(cluster.bootstrap_servers, partitions, names.compacted, replication=3))
    cluster.wait_topics_known(partitions)
    return names


@pytest.fixture(scope="module")
def replicas(
    cluster: Cluster, cluster_topics: Topics, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[WorkerProcess]]:
    """Two exactly_once worker replicas on the cluster, three task partitions each, for every scenario.

    Started once: a replica's start and the rebalance that follows cost more than most faults.
    """
    env = {
        **cluster.endpoints().env(),
        **cluster_topics.env(),
        "KAFKA_DELIVERY": "exactly_once",
        "MODEL_PATH": str(MODEL_PATH),
        "WORKER_PROCESSES": "1",
        "YOLO_OFFLINE": "1",
        "LOG_FORMAT": "json",
    }
    logs = tmp_path_factory.mktemp("cluster-replicas")
    workers = [WorkerProcess(env, logs / f"worker-{i}.log") for i in range(2)]
    try:
        for worker in workers:
            worker.wait_started()
        half = PARTITIONS // 2
        wait_for(lambda: all(len(task_partitions(w, cluster_topics)) == half for w in workers), 120, "3 each")
        yield workers
    finally:
        for worker in workers:
            worker.close()


def task_partitions(worker: WorkerProcess, topics: Topics) -> set[str]:
    """The replica's partitions of the tasks topic: the stream produces there alone, not on its priority levels."""
    return {p for p in worker.assignments() if p.startswith(f"{topics.tasks}[")}


@dataclass
class Run:
    stream: TaskStream
    watch: ProgressWatch


@contextlib.contextmanager
def streaming(cluster: Cluster, topics: Topics, frames: list[str], scenario: Scenario) -> Iterator[Run]:
    """Tasks stream from before the fault (once answers flow) until the pipeline has caught up after it."""
    prefix = f"{scenario.name}-"
    watch = ProgressWatch(cluster.bootstrap_servers, topics.results, prefix)
    stream = TaskStream(cluster.bootstrap_servers, topics.tasks, frames, TASKS_PER_SECOND, prefix, PARTITIONS)
    watch.start()
    stream.start()
    try:
        wait_for(lambda: watch.answered() >= BEFORE_FAULT, 240, f"{BEFORE_FAULT} answers before the fault")
        yield Run(stream, watch)
        # Still streaming: progress resumes after the fault, for everything sent up to its end.
        produced = stream.produced
        wait_for(lambda: watch.answered() >= produced, 240, f"the {produced} tasks sent during the fault answered")
    finally:
        stream.stop()
        watch.stop()


def verify(scenario: Scenario, cluster: Cluster, topics: Topics, run: Run, workers: list[WorkerProcess]) -> None:
    """Every acknowledged task answered once (by partition and offset), and no stall past the bound."""
    assert run.stream.failures == [], "tasks the cluster did not acknowledge"
    expected = set(run.stream.acknowledged)
    committed = functools.partial(all_committed, cluster.bootstrap_servers, topics.group, topics.tasks, PARTITIONS)
    wait_for(committed, 240, "every task committed")
    records = asyncio.run(read_to_end(cluster.bootstrap_servers, topics.results))
    unique = {(r.partition, r.offset): r for r in records}
    keys = [(v["video_id"], v["frame_id"]) for v in result_values([unique[p] for p in sorted(unique)])]
    keys = [k for k in keys if k[0].startswith(run.watch.prefix)]
    stall = run.watch.longest_stall()
    record(scenario.name, len(expected), keys, time.monotonic() - scenario.started, stall)
    counts = collections.Counter(keys)
    assert {k: n for k, n in counts.items() if n > 1} == {}, "answered twice"
    assert set(counts) == expected
    assert stall <= STALL_BOUND_S, f"a reader waited {stall:.1f}s for a new result"
    assert [w.proc.poll() for w in workers] == [None, None], "a replica died"


def run_fault(
    scenario: Scenario,
    cluster: Cluster,
    topics: Topics,
    frames: list[str],
    workers: list[WorkerProcess],
    fault: Callable[[Target], str],
) -> None:
    def replicas_alive() -> None:
        assert [w.proc.poll() for w in workers] == [None, None], "a replica died during the fault"

    with streaming(cluster, topics, frames, scenario) as run:
        target = Target(cluster.state_dir, topics.tasks, topics.results, topics.group, run.watch, replicas_alive)
        print(fault(target))  # noqa: T201 - which node held the role, for the log of a failure
        cluster.wait_in_sync()
    verify(scenario, cluster, topics, run, workers)


def test_results_partition_leader_killed(
    cluster: Cluster, cluster_topics: Topics, frames: list[str], replicas: list[WorkerProcess], scenario: Scenario
) -> None:
    run_fault(scenario, cluster, cluster_topics, frames, replicas, faults.kill_results_leader)


def test_transaction_coordinator_killed(
    cluster: Cluster, cluster_topics: Topics, frames: list[str], replicas: list[WorkerProcess], scenario: Scenario
) -> None:
    run_fault(scenario, cluster, cluster_topics, frames, replicas, faults.kill_transaction_coordinator)


def test_active_controller_killed(
    cluster: Cluster, cluster_topics: Topics, frames: list[str], replicas: list[WorkerProcess], scenario: Scenario
) -> None:
    run_fault(scenario, cluster, cluster_topics, frames, replicas, faults.kill_active_controller)


def test_a_broker_frozen_out_of_the_isr_then_thawed(
    cluster: Cluster, cluster_topics: Topics, frames: list[str], replicas: list[WorkerProcess], scenario: Scenario
) -> None:
    run_fault(scenario, cluster, cluster_topics, frames, replicas, faults.freeze_out_of_isr)


def test_rolling_restart_of_every_broker(
    cluster: Cluster, cluster_topics: Topics, frames: list[str], replicas: list[WorkerProcess], scenario: Scenario
) -> None:
    run_fault(scenario, cluster, cluster_topics, frames, replicas, faults.rolling_restart)
