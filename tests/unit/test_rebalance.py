"""Rebalances: a timeout that covers a revocation, a liveness probe that knows one is under way,
and an assignment whose set-up fails."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiokafka import TopicPartition

from inference import commit, config, health
from inference.backends import DetectorConfig
from inference.commit import AssignmentIncomplete
from inference.config import ConfigError, load_settings
from inference.health import Health
from inference.service import Worker, new_consumer

PARTITIONS = {TopicPartition("tasks", p) for p in range(3)}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("KAFKA_REBALANCE_TIMEOUT_MS", "WORKER_DRAIN_TIMEOUT_S", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env file
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")


async def test_the_consumer_waits_out_a_revocation_s_drain_and_last_commit() -> None:
    settings = load_settings()
    consumer = new_consumer(settings.kafka, "worker", settings.rebalance_timeout_ms)
    try:
        revocation_ms = (settings.worker.drain_timeout_s + config.REVOCATION_COMMIT_S) * 1000
        assert consumer._rebalance_timeout_ms > revocation_ms
        # The broker holds a JoinGroup until the slowest member rejoins: the request must outlast that.
        assert consumer._client._request_timeout_ms > consumer._rebalance_timeout_ms
    finally:
        await consumer.stop()


def test_the_derived_timeout_follows_the_drain_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORKER_DRAIN_TIMEOUT_S", "120")
    assert load_settings().rebalance_timeout_ms > (120 + config.REVOCATION_COMMIT_S) * 1000


def test_the_revocation_s_commit_bound_covers_its_kafka_steps() -> None:
    # A recovery (producer start, committed read), one transaction, the producer's stop.
    assert config.REVOCATION_COMMIT_S >= 4 * commit.STEP_TIMEOUT_S


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_REBALANCE_TIMEOUT_MS": "20000"}, "KAFKA_REBALANCE_TIMEOUT_MS"),
        ({"KAFKA_REBALANCE_TIMEOUT_MS": "60000", "WORKER_DRAIN_TIMEOUT_S": "50"}, "WORKER_DRAIN_TIMEOUT_S"),
    ],
    ids=["timeout-too-short", "drain-too-long"],
)
def test_a_rebalance_timeout_below_the_revocation_fails_start_up_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], env: dict[str, str], named: str
) -> None:
    from inference.__main__ import main

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=r"^invalid setting KAFKA_REBALANCE_TIMEOUT_MS: "):
        load_settings()
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert named in err[0]


def test_an_explicit_timeout_above_the_revocation_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_REBALANCE_TIMEOUT_MS", "90000")
    assert load_settings().rebalance_timeout_ms == 90_000


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    return now


def probes(rebalance_timeout_s: float = 60.0) -> Health:
    return Health(pool_loaded=lambda: True, pool_alive=lambda: True, rebalance_timeout_s=rebalance_timeout_s)


def test_a_long_rebalance_with_a_stale_tick_is_alive(clock: list[float]) -> None:
    marks = probes()
    marks.loop_turned()
    marks.rebalance_started()
    clock[0] += health.LOOP_STALL_S + 20  # the poll has waited through a long drain
    assert marks.healthy().ok
    marks.rebalance_ended()
    assert marks.healthy().ok  # the poll returns now: the tick from before is no stall
    clock[0] += health.LOOP_STALL_S + 1
    assert "consume loop has not turned" in marks.healthy().reason


def test_a_stale_tick_without_a_rebalance_is_not_alive(clock: list[float]) -> None:
    marks = probes()
    marks.loop_turned()
    clock[0] += health.LOOP_STALL_S + 1
    assert "consume loop has not turned" in marks.healthy().reason


def test_a_rebalance_past_its_bound_is_not_alive(clock: list[float]) -> None:
    marks = probes(rebalance_timeout_s=60.0)
    marks.loop_turned()
    marks.rebalance_started()
    clock[0] += 60.0 + health.ASSIGNMENT_STALL_S - 1
    assert marks.healthy().ok
    marks.rebalance_started()  # a join retried within the same rebalance keeps its start
    clock[0] += 2
    assert marks.healthy().reason == f"a rebalance has run for over {60.0 + health.ASSIGNMENT_STALL_S:.0f}s"


class Consumer:
    """What on_assigned reads of aiokafka's consumer."""

    def assignment(self) -> set[TopicPartition]:
        return set(PARTITIONS)


class Pool:
    loaded = True

    def alive(self) -> bool:
        return True


class FailingCheckpoint:
    """A set-up that fails the way `raised` says."""

    def __init__(self, raised: Exception) -> None:
        self.raised = raised
        self.partitions: dict[TopicPartition, object] = {}

    async def assign(self, partitions: set[TopicPartition]) -> dict[TopicPartition, int]:
        raise self.raised


def worker_with(checkpoint: FailingCheckpoint, consumer: Consumer) -> Worker:
    worker = Worker(load_settings(), DetectorConfig("model.onnx", "onnx", "cpu", 320, 0.25, 0.45, 1, 10**6))
    worker._consumer = consumer  # type: ignore[assignment]
    worker._checkpoint = checkpoint  # type: ignore[assignment]
    worker._pool = Pool()  # type: ignore[assignment]
    worker.health.joined = True  # a member already; this is a later rebalance
    return worker


async def test_an_assignment_past_its_bound_leaves_the_replica_alive_and_not_ready(clock: list[float]) -> None:
    # Checkpoint.assign has undone its set-up and asked for the rejoin itself.
    checkpoint = FailingCheckpoint(AssignmentIncomplete("['tasks[0]'] not set up within 7.0s: rejoining"))
    worker = worker_with(checkpoint, Consumer())
    worker.health.loop_turned()
    worker.health.rebalance_started()
    clock[0] += health.LOOP_STALL_S + 10
    await worker.on_assigned(set(PARTITIONS))
    assert worker.health.healthy().ok
    assert worker.health.ready().reason == "['tasks[0]'] not set up within 7.0s: rejoining"
    assert worker._fatal is None
