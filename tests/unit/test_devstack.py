"""The local stack's choices: where its servers keep their data (memory when it has room, the
state dir otherwise), which ports they listen on, how the secured mode guards Kafka, how a
3-node cluster is configured and recorded, and how the soak counts what it saw."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts import devstack
from scripts.devstack import acls, cluster, ports, security
from scripts.devstack.state import Node, write_state
from scripts.soak.traffic import ProgressWatch, TaskStream
from scripts.soak.verify import Verdict, judge


def test_data_goes_to_memory_when_it_has_room(tmp_path: Path) -> None:
    memory, state = tmp_path / "shm", tmp_path / "state"
    memory.mkdir()
    chosen = devstack.data_dir_for(state, memory_root=memory, min_free=0)
    assert chosen.parent == memory
    assert devstack.in_memory(chosen, memory_root=memory)
    assert chosen == devstack.data_dir_for(state, memory_root=memory, min_free=0), "stable across calls"
    assert chosen != devstack.data_dir_for(tmp_path / "other-state", memory_root=memory, min_free=0)


def test_data_stays_in_the_state_dir_without_room_or_memory(tmp_path: Path) -> None:
    memory, state = tmp_path / "shm", tmp_path / "state"
    assert devstack.data_dir_for(state, memory_root=memory, min_free=0) == state, "no memory file system"
    memory.mkdir()
    assert devstack.data_dir_for(state, memory_root=memory, min_free=2**62) == state, "not enough room"
    assert not devstack.in_memory(state, memory_root=memory)


def test_a_state_file_from_before_data_dirs_means_the_state_dir() -> None:
    info = devstack.StackInfo("/tmp/state", 9092, 8333, 1, 2)
    assert info.data == Path("/tmp/state")


def test_free_ports_lie_below_the_ephemeral_range_and_are_not_handed_out_twice() -> None:
    low = ports.ephemeral_low()
    if low - ports.LISTEN_PORTS_FROM < 1000:
        pytest.skip(f"no room below this kernel's ephemeral range (it starts at {low})")
    chosen = [devstack.free_port() for _ in range(200)]
    assert len(set(chosen)) == len(chosen)
    assert all(ports.LISTEN_PORTS_FROM <= port < low for port in chosen)


def test_a_run_of_free_ports_is_consecutive_and_not_handed_out_again() -> None:
    first = devstack.free_port_run(3)
    for port in (first, first + 1, first + 2):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
            server.bind(("127.0.0.1", port))
    assert not {first, first + 1, first + 2} & {devstack.free_port() for _ in range(200)}


def test_a_free_port_can_be_listened_on() -> None:
    port = devstack.free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        assert devstack.port_open(port)


def test_a_state_file_from_before_security_modes_means_plaintext() -> None:
    info = devstack.StackInfo("/tmp/state", 9092, 8333, 1, 2, "/tmp/state")
    assert not info.secured
    assert not any(name.startswith(("KAFKA_SECURITY", "KAFKA_SASL", "KAFKA_SSL")) for name in info.env())
    assert info.kafka_options() == {"bootstrap_servers": "127.0.0.1:9092"}


def test_a_secured_stack_makes_private_secrets_and_hands_each_user_its_own(tmp_path: Path) -> None:
    secrets = devstack.Secrets.of(tmp_path)
    passwords = secrets.make()
    assert set(passwords) == set(devstack.USERS)
    assert len(set(passwords.values())) == len(devstack.USERS)
    assert secrets.make() != passwords, "a new stack, new passwords"
    assert secrets.folder.stat().st_mode & 0o777 == 0o700
    for private in (secrets.passwords_file, secrets.keystore, secrets.admin_properties):
        assert private.stat().st_mode & 0o777 == 0o600
    info = devstack.StackInfo(str(tmp_path), 9092, 8333, 1, 2, str(tmp_path), devstack.SASL_SSL)
    env = info.env("worker")
    assert env["KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert (env["KAFKA_SASL_PLAIN_USERNAME"], env["KAFKA_SASL_PLAIN_PASSWORD"]) == (
        "worker",
        secrets.password("worker"),
    )
    assert env["KAFKA_SSL_CAFILE"] == str(secrets.ca)
    assert "BEGIN CERTIFICATE" in secrets.ca.read_text()


def test_the_secured_broker_listens_on_sasl_ssl_only_and_denies_what_no_acl_allows(tmp_path: Path) -> None:
    secrets = devstack.Secrets.of(tmp_path)
    secrets.make()
    properties = dict(
        line.split("=", 1) for line in security.listener_properties(devstack.SASL_SSL, secrets, 9092, 9093)
    )
    assert properties["listeners"] == "SASL_SSL://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert properties["advertised.listeners"] == "SASL_SSL://127.0.0.1:9092"
    assert properties["listener.name.sasl_ssl.sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert properties["super.users"] == "User:admin"
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert properties["authorizer.class.name"].endswith("StandardAuthorizer")


def test_acls_are_batched_so_that_no_aclcommand_call_grants_more_than_asked() -> None:
    wanted = devstack.default_acls() + devstack.worker_acls("t", "r", "d", "g") + devstack.runner_acls("t", "r", ["c"])
    batches = acls._batches(wanted)
    assert len(batches) == 6, "one call per user, operation and pattern type"
    for (user, operation, prefixed), batch in batches.items():
        # AclCommand grants every operation given on every resource given: one operation per call.
        assert {(a.user, a.operation, a.prefixed) for a in batch} == {(user, operation, prefixed)}
    assert sorted(a for batch in batches.values() for a in batch) == sorted(set(wanted))


def test_a_password_never_reaches_an_error_message(tmp_path: Path) -> None:
    secrets = devstack.Secrets.of(tmp_path)
    passwords = secrets.make()
    text = security.redact(f"tool failed: [name=admin,password={passwords['admin']}]", secrets)
    assert passwords["admin"] not in text
    assert text == "tool failed: [name=admin,password=***]"


def _cluster_info(tmp_path: Path) -> devstack.StackInfo:
    nodes = tuple(Node(i, 9092 + i - 1, 19092 + i, 100 + i) for i in (1, 2, 3))
    return devstack.StackInfo(str(tmp_path), 9092, 8333, 101, 2, str(tmp_path), devstack.PLAINTEXT, nodes)


def test_a_cluster_s_state_names_every_node_and_survives_a_restart_of_one(tmp_path: Path) -> None:
    info = _cluster_info(tmp_path)
    assert info.env()["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:9092,127.0.0.1:9093,127.0.0.1:9094"
    write_state(tmp_path, info)
    assert devstack.read_state(tmp_path) == info, "nodes come back from state.json as nodes"
    restarted = info.with_node(Node(1, 9092, 19093, 555))
    assert (restarted.kafka_pid, restarted.kafka_pids) == (555, [555, 102, 103]), "the first node is kafka_pid too"
    assert info.with_node(Node(3, 9094, 19095, 777)).kafka_pids == [101, 102, 777]
    assert devstack.StackInfo("/tmp/state", 9092, 8333, 1, 2).kafka_pids == [1], "one broker: no nodes"


def test_every_cluster_node_replicates_to_three_and_needs_two_in_sync(tmp_path: Path) -> None:
    node = Node(2, 9093, 19093, 0)
    text = cluster._properties(node, "1@127.0.0.1:19092,2@127.0.0.1:19093", tmp_path, cluster.FAULT_SETTINGS)
    properties = dict(line.split("=", 1) for line in text.splitlines())
    assert properties["node.id"] == "2"
    assert properties["process.roles"] == "broker,controller"
    assert properties["controller.quorum.voters"] == "1@127.0.0.1:19092,2@127.0.0.1:19093"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:9093,CONTROLLER://127.0.0.1:19093"
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor"):  # fmt: skip
        assert properties[key] == "3", key
    assert properties["min.insync.replicas"] == properties["transaction.state.log.min.isr"] == "2"
    assert properties["unclean.leader.election.enable"] == "false"
    assert properties["replica.lag.time.max.ms"] == "5000", "settings given override the defaults"


def test_only_one_or_three_brokers_and_three_in_plaintext_only(tmp_path: Path) -> None:
    with pytest.raises(devstack.StackError, match="must be 1 or 3"):
        devstack.up(tmp_path, 9092, 8333, brokers=2)
    with pytest.raises(devstack.StackError, match="plaintext mode only"):
        devstack.up(tmp_path, 9092, 8333, devstack.SASL_SSL, brokers=3)


def test_partitions_missing_a_replica_in_sync_or_a_leader_are_under_replicated() -> None:
    described = [
        {"topic": "t", "partition": 0, "leader": 1, "replicas": [1, 2, 3], "isr": [3, 2, 1]},
        {"topic": "t", "partition": 1, "leader": 2, "replicas": [1, 2, 3], "isr": [2, 3]},
        {"topic": "u", "partition": 0, "leader": -1, "replicas": [1, 2, 3], "isr": [1, 2, 3]},
    ]
    assert cluster.under_replicated(described) == ["t[1]", "u[0]"]
    assert cluster.leader_counts(described) == {1: 1, 2: 1, -1: 1}


def test_the_stall_is_the_longest_wait_between_two_new_answers() -> None:
    watch = ProgressWatch("127.0.0.1:9092", "results")
    watch.seen_at.update({("v", 0): 10.0, ("v", 1): 10.5, ("v", 2): 22.0, ("v", 3): 23.0})
    assert watch.longest_stall() == 11.5
    assert watch.longest_gap() == (11.5, 10.5), "and it began at the answer before it"
    assert watch.answered() == 4


def test_the_verdict_counts_records_by_place_so_a_record_read_twice_is_one() -> None:
    expected = {("v", 0), ("v", 1), ("v", 2)}
    read = {(0, 5): ("v", 0), (0, 6): ("v", 1), (1, 9): ("v", 1)}
    assert judge(expected, read) == Verdict(tasks=3, results=3, missing=1, duplicates=1)


def test_the_task_stream_spreads_videos_one_per_partition() -> None:
    stream = TaskStream("127.0.0.1:9092", "tasks", ["a.jpg", "b.jpg"], 10.0, "s", partitions=3)
    placed = [stream.task(i)[:3] for i in range(6)]
    assert placed == [(0, "s-p0", 0), (1, "s-p1", 0), (2, "s-p2", 0), (0, "s-p0", 1), (1, "s-p1", 1), (2, "s-p2", 1)]
