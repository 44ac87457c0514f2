"""The local stack's choices: where its servers keep their data (memory when it has room, the
state dir otherwise), which ports they listen on, how the secured mode guards Kafka."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from scripts import devstack
from scripts.devstack import acls, ports, security


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
