"""What /healthz and /readyz answer, from the marks a worker sets as it runs; and a Worker built with no server."""

from __future__ import annotations

import pytest

from inference import health
from inference.backends import DetectorConfig
from inference.config import load_settings
from inference.health import Health
from inference.service import Worker


class Pool:
    def __init__(self, loaded: bool = True, alive: bool = True) -> None:
        self.loaded = loaded
        self.alive = alive


def health_of(pool: Pool) -> Health:
    return Health(pool_loaded=lambda: pool.loaded, pool_alive=lambda: pool.alive)


def test_a_replica_is_ready_only_once_loaded_and_joined_and_until_it_drains() -> None:
    pool = Pool(loaded=False)
    probes = health_of(pool)
    assert probes.ready().reason == "model is loading"
    pool.loaded = True
    assert probes.ready().reason == "not yet a member of the consumer group"
    probes.joined = True
    assert probes.ready().ok
    probes.draining = True
    assert probes.ready().reason == "draining"


def test_a_publisher_that_gets_no_ack_makes_the_replica_not_ready_while_it_lasts() -> None:
    outage: list[str | None] = [None]
    probes = Health(pool_loaded=lambda: True, pool_alive=lambda: True, publish_outage=lambda: outage[0])
    probes.joined = True
    assert probes.ready().ok
    outage[0] = "no result acknowledged by Kafka for 61s"
    assert probes.ready().reason == "results not published: no result acknowledged by Kafka for 61s"
    assert probes.healthy().ok, "a broker outage is not cured by restarting the replica"
    outage[0] = None
    assert probes.ready().ok


def test_a_dead_pool_fails_liveness_once_it_had_loaded() -> None:
    pool = Pool(loaded=False, alive=False)
    probes = health_of(pool)
    assert probes.healthy().ok  # still loading: not a death
    pool.loaded = True
    assert probes.healthy().reason == "detector pool is down"


def test_a_stalled_loop_or_commit_fails_liveness(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(health.time, "monotonic", lambda: now[0])
    probes = health_of(Pool())
    probes.loop_turned()
    probes.commit_started()
    now[0] += health.COMMIT_STALL_S - 1
    probes.loop_turned()
    assert probes.healthy().ok
    now[0] += 2
    assert "commit cycle" in probes.healthy().reason
    probes.commit_ended()
    assert probes.healthy().ok
    now[0] += health.LOOP_STALL_S + 1
    assert "consume loop" in probes.healthy().reason


def test_a_worker_is_built_without_starting_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9")
    config = DetectorConfig("model.onnx", "onnx", "cpu", 320, 0.25, 0.45, 1, 10**6)
    worker = Worker(load_settings(), config)
    assert worker.in_flight == 0
    assert worker.health.ready().reason == "model is loading"
    worker.stop()
    assert worker.health.draining
