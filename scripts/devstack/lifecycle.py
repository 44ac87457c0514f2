"""The stack's lifecycle: up, down, one server stopped or started again, its status."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts.devstack import security
from scripts.devstack.acls import default_acls, grant, granted_marker
from scripts.devstack.cluster import (
    BROKERS,
    describe_nodes,
    make_offsets_topic,
    start_cluster,
    stop_nodes,
    wait_in_sync,
    wait_listening,
)
from scripts.devstack.datadir import data_dir_for, in_memory
from scripts.devstack.errors import StackError
from scripts.devstack.kafka import AUTHORIZER_LOG, KAFKA_STOP_S, prepare_kafka, start_kafka
from scripts.devstack.ports import READY_TIMEOUT_S, port_open, wait_closed, wait_until
from scripts.devstack.processes import pid_alive, stop
from scripts.devstack.s3 import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY, prepare_s3, start_s3, stop_s3
from scripts.devstack.state import Node, StackInfo, read_state, remove_state, write_state


def up(
    state_dir: Path,
    kafka_port: int,
    s3_port: int,
    mode: str = security.PLAINTEXT,
    brokers: int = 1,
    broker_settings: dict[str, str] | None = None,
) -> StackInfo:
    """Start both servers (or reuse the ones already running) and wait until they serve.

    `mode`: how Kafka's client listener is secured (security.MODES).
    `brokers`: 1, or 3 for a cluster (cluster.py) on ports kafka_port, kafka_port + 1, kafka_port + 2.
    `broker_settings`: broker properties over the cluster's defaults (3 brokers only).
    """
    security.check_mode(mode)
    _check_brokers(brokers, mode)
    state_dir.mkdir(parents=True, exist_ok=True)
    current = read_state(state_dir)
    if current and all(map(pid_alive, [*current.kafka_pids, current.s3_pid])):
        if current.security != mode:
            raise StackError(f"the stack in {state_dir} runs in {current.security} mode, not {mode}: `down` it first")
        if len(current.kafka_pids) != brokers:
            raise StackError(f"the stack in {state_dir} runs {len(current.kafka_pids)} Kafka node(s), not {brokers}: "
                             "`down` it first")  # fmt: skip
        info = current
    else:
        if current:
            down(state_dir)
        kafka_ports = [kafka_port + i for i in range(brokers)]
        for port, name in [*((p, "KAFKA_PORT") for p in kafka_ports), (s3_port, "S3_PORT")]:
            if port_open(port):
                raise StackError(f"port {port} ({name}) is already in use by another program")
        data = data_dir_for(state_dir)
        nodes: tuple[Node, ...] = ()
        if brokers == 1:
            kafka_pid = start_kafka(state_dir, data, kafka_port, mode)
        else:
            nodes = start_cluster(state_dir, data, kafka_ports, broker_settings or {})
            kafka_pid = nodes[0].pid
        s3_pid = start_s3(state_dir, data, s3_port)
        info = StackInfo(str(state_dir), kafka_port, s3_port, kafka_pid, s3_pid, str(data), mode, nodes)
    write_state(state_dir, info)
    try:
        wait_ready(info)
    except BaseException:
        down(state_dir)
        raise
    return info


def _check_brokers(brokers: int, mode: str) -> None:
    if brokers not in (1, BROKERS):
        raise StackError(f"DEV_STACK_BROKERS must be 1 or {BROKERS}, not {brokers}")
    if brokers > 1 and mode != security.PLAINTEXT:
        raise StackError(f"a {brokers}-broker stack runs in plaintext mode only, not {mode}")


def wait_ready(info: StackInfo) -> None:
    def kafka_listening() -> bool:
        if not pid_alive(info.kafka_pid):
            log = Path(info.state_dir) / "kafka" / "kafka.log"
            raise StackError(f"Kafka exited during start-up; see {log}")
        return port_open(info.kafka_port)

    def s3_listening() -> bool:
        if not pid_alive(info.s3_pid):
            raise StackError(f"SeaweedFS exited during start-up; see {info.state_dir}/s3/weed.log")
        return port_open(info.s3_port)

    if info.nodes:
        for node in info.nodes:
            wait_listening(Path(info.state_dir), node)
    else:
        wait_until(kafka_listening, READY_TIMEOUT_S, f"Kafka on port {info.kafka_port}")
    wait_until(s3_listening, READY_TIMEOUT_S, f"S3 on port {info.s3_port}")
    options = info.kafka_options()
    bootstrap = options.pop("bootstrap_servers")
    prepare(bootstrap, info.s3_endpoint_url, kafka_options=options, replication=len(info.kafka_pids))
    if info.nodes:
        make_offsets_topic(bootstrap)
        wait_in_sync(bootstrap)
    granted = granted_marker(info.data)
    if info.secured and not granted.exists():
        grant(info.bootstrap_servers, info.secrets, default_acls())
        granted.touch()


def prepare(
    bootstrap: str,
    endpoint: str,
    access_key: str = S3_ACCESS_KEY,
    secret_key: str = S3_SECRET_KEY,
    region: str = S3_REGION,
    kafka_options: dict[str, Any] | None = None,
    replication: int = 1,
) -> None:
    """Topics and bucket exist, and a transactional producer can commit: the stack serves.

    `kafka_options`: aiokafka's connection options beyond the bootstrap servers, for a secured Kafka.
    `replication`: the topics' replication factor.
    """
    asyncio.run(prepare_kafka(bootstrap, kafka_options, replication))
    asyncio.run(prepare_s3(endpoint, access_key, secret_key, region))


def down(state_dir: Path) -> None:
    """Stop both servers, then wait until their ports are closed.

    Data on disk stays for the next `up`; data in memory is removed, since it holds memory.
    """
    info = read_state(state_dir)
    if info is None:
        return
    stop_s3(state_dir, info.s3_pid)
    if info.nodes:
        stop_nodes(info.nodes)
    else:
        stop(info.kafka_pid, KAFKA_STOP_S)
    for port in (*info.kafka_ports, info.s3_port):
        wait_closed(port, f"port {port} to close")
    # Only a data folder of its own (data_dir_for), never the state dir, wherever that lies.
    if info.data != Path(info.state_dir):
        shutil.rmtree(info.data, ignore_errors=True)
    remove_state(state_dir)


def stop_server(state_dir: Path, server: str) -> None:
    """Stop one server of a running stack (for fault-injection tests); its data stays."""
    info = read_state(state_dir)
    assert info is not None, "the stack is not running"
    if server == "kafka":
        assert not info.nodes, "a cluster's nodes are stopped one by one (cluster.stop_node)"
        stop(info.kafka_pid, KAFKA_STOP_S)
        wait_closed(info.kafka_port, "Kafka's port to close")
    else:
        stop_s3(state_dir, info.s3_pid)
        wait_closed(info.s3_port, "S3's port to close")


def start_server(state_dir: Path, server: str) -> StackInfo:
    """Start a stopped server again on the same port and data directory, and wait until it serves."""
    info = read_state(state_dir)
    assert info is not None, "the stack is not running"
    if server == "kafka":
        assert not info.nodes, "a cluster's nodes are started one by one (cluster.start_node)"
        info = replace(info, kafka_pid=start_kafka(state_dir, info.data, info.kafka_port, info.security))
    else:
        info = replace(info, s3_pid=start_s3(state_dir, info.data, info.s3_port))
    write_state(state_dir, info)
    wait_ready(info)
    return info


def status(state_dir: Path) -> str:
    """Each server's liveness, where the data lies, and the settings that point programs at the stack."""
    info = read_state(state_dir)
    if info is None:
        return "dev stack: stopped"
    lines = describe_nodes(info) if info.nodes else []
    servers = [("s3", info.s3_pid, info.s3_port)]
    if not info.nodes:
        servers.insert(0, ("kafka", info.kafka_pid, info.kafka_port))
    for name, pid, port in servers:
        state = "running" if pid_alive(pid) and port_open(port) else "NOT RUNNING"
        lines.append(f"{name:6} {state:12} pid={pid} port={port}")
    lines.append(f"data   {info.data}{' (in memory)' if in_memory(info.data) else ''}")
    if info.secured:
        users = ", ".join(security.USERS)
        lines.append(f"kafka  {security.SASL_SSL}, users {users}; denied requests in {authorizer_log(info)}")
    for name, value in info.env().items():
        # A status is shown and logged; `env` prints the password on purpose.
        shown = "<hidden: `scripts/dev-stack env USER` prints it>" if name == "KAFKA_SASL_PLAIN_PASSWORD" else value
        lines.append(f"{name}={shown}")
    return "\n".join(lines)


def authorizer_log(info: StackInfo) -> Path:
    """Where a secured broker logs each request its authorizer denied."""
    return Path(info.state_dir) / "kafka" / AUTHORIZER_LOG
