"""A Kafka cluster of three combined broker+controller KRaft nodes on the loopback, and its roles.

Every topic, the group offsets and the transaction state are replicated to all three nodes with
min.insync.replicas=2: one node may be down (killed, frozen, restarting) and every write still
succeeds, as in a production cluster. Fault tests and the soak find the node that holds a role
(a partition's leader, a transactional id's coordinator, the active controller) and stop,
freeze or restart that one node.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from scripts.devstack.errors import StackError
from scripts.devstack.kafka import KAFKA_STOP_S, ensure_kafka_jars, java
from scripts.devstack.ports import READY_TIMEOUT_S, free_port, port_open, wait_closed, wait_until
from scripts.devstack.processes import pid_alive, spawn, stop
from scripts.devstack.state import Node, StackInfo, read_state, write_state

BROKERS = 3
# Three nodes, workers and a model beside them on 2 cores and 24 GiB: a small heap each, and the
# serial collector, whose pauses at this size are short and which runs no threads between them.
NODE_HEAP = ("-Xms128m", "-Xmx512m", "-XX:+UseSerialGC")
# Production's durability: a write is acknowledged by two of the three replicas, so losing any
# one node loses nothing that was acknowledged, and no out-of-sync replica is ever elected.
REPLICATION = {
    "default.replication.factor": "3",
    "min.insync.replicas": "2",
    "offsets.topic.replication.factor": "3",
    "transaction.state.log.replication.factor": "3",
    "transaction.state.log.min.isr": "2",
    "unclean.leader.election.enable": "false",
}
# Fault tests and the soak: a replica 5 s behind its leader leaves the ISR (30 s by default), so a
# frozen node drops out within a scenario's seconds of freeze.
FAULT_SETTINGS = {"replica.lag.time.max.ms": "5000"}
# A client's requests to a frozen node are answered by no one: bounded, so a probe moves on.
PROBE_TIMEOUT_MS = 5000
QUORUM_TOOL = "org.apache.kafka.tools.MetadataQuorumCommand"


def node_dir(state_dir: Path, node_id: int) -> Path:
    return state_dir / "kafka" / f"node-{node_id}"


def _data_dir(data: Path, node_id: int) -> Path:
    return data / "kafka" / f"node-{node_id}" / "data"


def _properties(node: Node, voters: str, data_dir: Path, settings: dict[str, str]) -> str:
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        "controller.quorum.voters": voters,
        "controller.listener.names": "CONTROLLER",
        "listeners": f"PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{node.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.num.partitions": "10",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "false",
        **REPLICATION,
        **settings,
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


def _controller_ports(state_dir: Path, ports: list[int]) -> list[int]:
    """The controller ports of an earlier start on the same client ports, else free ones (remembered).

    The quorum's voters are named by these ports in every node's configuration.
    """
    remembered = state_dir / "kafka" / "cluster-ports.json"
    if remembered.exists():
        known = json.loads(remembered.read_text())
        if known["ports"] == ports:
            return [int(p) for p in known["controller_ports"]]
    controller_ports = [free_port() for _ in ports]
    remembered.write_text(json.dumps({"ports": ports, "controller_ports": controller_ports}))
    return controller_ports


def _voters(nodes: list[Node]) -> str:
    return ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in nodes)


def _formatted(data: Path, node_ids: list[int]) -> bool:
    return all((_data_dir(data, i) / "meta.properties").exists() for i in node_ids)


def _format(jars: Path, configs: list[Path]) -> None:
    """Format every node's storage with one cluster id: together they are one cluster."""
    cluster_id = uuid.uuid4().hex[:22]

    def format_one(config: Path) -> subprocess.CompletedProcess[str]:
        fmt = java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config))
        return subprocess.run(fmt, capture_output=True, text=True, check=False)

    with ThreadPoolExecutor(len(configs)) as pool:
        for config, done in zip(configs, pool.map(format_one, configs), strict=True):
            if done.returncode != 0:
                raise StackError(f"formatting Kafka storage for {config} failed: {done.stderr.strip()[-500:]}")


def start_cluster(state_dir: Path, data: Path, ports: list[int], settings: dict[str, str]) -> tuple[Node, ...]:
    """Write each node's configuration, format the storage once, and start the nodes.

    `settings`: broker properties over the defaults (the fault tests' shorter lag bound).
    """
    jars = ensure_kafka_jars()
    (state_dir / "kafka").mkdir(parents=True, exist_ok=True)
    controller_ports = _controller_ports(state_dir, ports)
    nodes = [Node(i + 1, port, cport, 0) for i, (port, cport) in enumerate(zip(ports, controller_ports, strict=True))]
    voters = _voters(nodes)
    configs = []
    for node in nodes:
        folder = node_dir(state_dir, node.node_id)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "server.properties"
        config.write_text(_properties(node, voters, _data_dir(data, node.node_id), settings))
        configs.append(config)
    ids = [n.node_id for n in nodes]
    if not _formatted(data, ids):
        # Storage of a cluster some of whose nodes are missing cannot be completed: start afresh.
        for i in ids:
            shutil.rmtree(_data_dir(data, i), ignore_errors=True)
        _format(jars, configs)
    return tuple(Node(n.node_id, n.port, n.controller_port, _spawn_node(state_dir, n.node_id)) for n in nodes)


def _spawn_node(state_dir: Path, node_id: int) -> int:
    folder = node_dir(state_dir, node_id)
    env = {**os.environ, "LOG_DIR": str(folder / "logs")}
    command = java(ensure_kafka_jars(), "kafka.Kafka", str(folder / "server.properties"), heap=NODE_HEAP)
    return spawn(command, folder / "kafka.log", env)


def stop_nodes(nodes: tuple[Node, ...]) -> None:
    """Stop every node at once: one by one, the last ones would wait for a quorum that is leaving."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(lambda n: stop(n.pid, KAFKA_STOP_S), nodes))


def _running(state_dir: Path) -> StackInfo:
    info = read_state(state_dir)
    if info is None or not info.nodes:
        raise StackError(f"no multi-node stack runs in {state_dir}")
    return info


def kill_node(state_dir: Path, node_id: int) -> None:
    """kill -9 one node and wait until its port closes.

    A crash: no controlled shutdown, so its leaderships move only once the controller fences it.
    """
    node = _running(state_dir).node(node_id)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(node.pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(node.pid), 30.0, f"Kafka node {node_id} to exit")
    wait_closed(node.port, f"Kafka node {node_id}'s port to close")


def stop_node(state_dir: Path, node_id: int) -> None:
    """Stop one node cleanly (SIGTERM: a controlled shutdown hands its leaderships over first)."""
    node = _running(state_dir).node(node_id)
    stop(node.pid, KAFKA_STOP_S)
    wait_closed(node.port, f"Kafka node {node_id}'s port to close")


def freeze_node(state_dir: Path, node_id: int, frozen: bool) -> None:
    """SIGSTOP (frozen) or SIGCONT one node: a long GC pause or a stalled VM, its sockets left open."""
    node = _running(state_dir).node(node_id)
    os.killpg(node.pid, signal.SIGSTOP if frozen else signal.SIGCONT)


def start_node(state_dir: Path, node_id: int) -> Node:
    """Start a stopped node again on its ports and storage, and wait until it listens."""
    info = _running(state_dir)
    node = info.node(node_id)
    if pid_alive(node.pid):
        raise StackError(f"Kafka node {node_id} is still running (pid {node.pid})")
    started = Node(node.node_id, node.port, node.controller_port, _spawn_node(state_dir, node_id))
    write_state(state_dir, info.with_node(started))
    wait_listening(state_dir, started)
    return started


def wait_listening(state_dir: Path, node: Node) -> None:
    def listening() -> bool:
        if not pid_alive(node.pid):
            raise StackError(f"Kafka node {node.node_id} exited; see {node_dir(state_dir, node.node_id)}/kafka.log")
        return port_open(node.port)

    wait_until(listening, READY_TIMEOUT_S, f"Kafka node {node.node_id} on port {node.port}")


def _admin(bootstrap: str) -> Any:
    from aiokafka.admin import AIOKafkaAdminClient

    return AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=PROBE_TIMEOUT_MS)


async def partitions(bootstrap: str) -> list[dict[str, Any]]:
    """Every partition of every topic (internal ones too): topic, partition, leader, replicas, isr."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        topics = await admin.describe_topics()
    finally:
        await admin.close()
    return [
        {"topic": t["topic"], "partition": p["partition"], "leader": p["leader"], "replicas": p["replicas"],
         "isr": p["isr"]}
        for t in topics
        for p in t["partitions"]
    ]  # fmt: skip


async def partition_leader(bootstrap: str, topic: str, partition: int) -> int:
    """The node that leads one partition now, as the cluster's metadata says (-1 while none does)."""
    for p in await partitions(bootstrap):
        if (p["topic"], p["partition"]) == (topic, partition):
            return int(p["leader"])
    raise StackError(f"no partition {topic}[{partition}] in the cluster")


async def transaction_coordinators(bootstrap: str, transactional_ids: list[str]) -> dict[str, int]:
    """The node coordinating each transactional id: FindCoordinator with key type 1 (transaction)."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        return {tid: await admin.find_coordinator(tid, coordinator_type=1) for tid in transactional_ids}
    finally:
        await admin.close()


async def group_coordinator(bootstrap: str, group: str) -> int:
    """The node coordinating a consumer group (FindCoordinator, key type 0); creates the offsets topic."""
    admin = _admin(bootstrap)
    await admin.start()
    try:
        return int(await admin.find_coordinator(group, coordinator_type=0))
    finally:
        await admin.close()


def make_offsets_topic(bootstrap: str) -> None:
    """Have the group offsets topic made and led (it is made on the first group's lookup).

    Made at start-up, every internal topic is fully replicated before anything is asked of the
    cluster, and a fault test's first kill does not land on a topic still being made.
    """
    from aiokafka.errors import KafkaError

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            asyncio.run(group_coordinator(bootstrap, "dev-stack-probe"))
            return
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def active_controller(nodes: tuple[Node, ...]) -> int:
    """The quorum's leader, as Kafka's metadata-quorum tool reads it from the controllers themselves.

    A broker's metadata names a random live broker as "controller" in KRaft, never the active
    one; only DescribeQuorum, which the tool sends to the controllers, knows. `nodes`: the ones
    to ask (leave out a frozen one, which would hold the tool until its timeout).
    """
    controllers = ",".join(f"127.0.0.1:{n.controller_port}" for n in nodes)
    with tempfile.NamedTemporaryFile("w", suffix=".properties") as config:
        # Bounded: right after a failover the tool can be sent to the controller that just died,
        # and by default it waits 60 s for it; a caller polling for the new leader asks again.
        config.write(f"request.timeout.ms={PROBE_TIMEOUT_MS}\ndefault.api.timeout.ms={2 * PROBE_TIMEOUT_MS}\n")
        config.flush()
        command = java(ensure_kafka_jars(), QUORUM_TOOL, "--bootstrap-controller", controllers,
                       "--command-config", config.name, "describe", "--status", heap=("-Xmx128m",))  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    found = re.search(r"^LeaderId:\s+(-?\d+)", done.stdout, re.MULTILINE)
    if done.returncode != 0 or found is None:
        raise StackError(f"the metadata quorum tool failed: {(done.stdout + done.stderr).strip()[-500:]}")
    return int(found.group(1))


def leader_counts(described: list[dict[str, Any]]) -> Counter[int]:
    """Partitions each node leads."""
    return Counter(int(p["leader"]) for p in described)


def under_replicated(described: list[dict[str, Any]]) -> list[str]:
    """Partitions whose in-sync replicas are fewer than their replicas, or without a leader."""
    return [
        f"{p['topic']}[{p['partition']}]" for p in described if p["leader"] < 0 or set(p["isr"]) != set(p["replicas"])
    ]


def wait_in_sync(bootstrap: str, timeout_s: float = READY_TIMEOUT_S, topics: set[str] | None = None) -> None:
    """Wait until every partition (of `topics`, else all) has a leader and all its replicas in sync."""
    lagging: list[str] = ["(not asked yet)"]

    def in_sync() -> bool:
        nonlocal lagging
        try:
            described = asyncio.run(partitions(bootstrap))
        except Exception:  # noqa: BLE001 - any failure of a probe during a failover means "not yet"
            return False
        lagging = under_replicated([p for p in described if topics is None or p["topic"] in topics])
        return not lagging

    deadline = time.monotonic() + timeout_s
    while not in_sync():
        if time.monotonic() > deadline:
            raise StackError(f"partitions still out of sync after {timeout_s:.0f}s: {lagging[:10]}")
        time.sleep(0.5)


def wait_topics_known(nodes: tuple[Node, ...], topics: dict[str, int], timeout_s: float = 60.0) -> None:
    """Wait until every node's metadata has each new topic with all its partitions led.

    A topic is created on the controller and reaches each broker through the metadata log: a
    client that asks another broker meanwhile sees the topic without partitions, or not at all.
    """

    def known_to(node: Node) -> bool:
        try:
            described = asyncio.run(partitions(node.address))
        except Exception:  # noqa: BLE001 - a node not answering yet means "not yet"
            return False
        led = Counter(p["topic"] for p in described if p["leader"] >= 0)
        return all(led[topic] == count for topic, count in topics.items())

    for node in nodes:
        wait_until(functools.partial(known_to, node), timeout_s, f"node {node.node_id} to know {sorted(topics)}")


def describe_nodes(info: StackInfo) -> list[str]:
    """One line per node: whether it runs, its ports, its role and the partitions it leads."""
    alive = tuple(n for n in info.nodes if pid_alive(n.pid) and port_open(n.port))
    try:
        controller = active_controller(alive) if alive else -1
        leads = leader_counts(asyncio.run(partitions(",".join(n.address for n in alive)))) if alive else Counter()
    except Exception as exc:  # noqa: BLE001 - status shows what it can of a cluster in trouble
        controller, leads = -1, Counter()
        problem = f" (roles unknown: {type(exc).__name__})"
    else:
        problem = ""
    lines = []
    for node in info.nodes:
        running = node in alive
        role = "active controller" if node.node_id == controller else "controller (voter)"
        lines.append(
            f"kafka-{node.node_id} {'running' if running else 'NOT RUNNING':12} pid={node.pid} port={node.port} "
            f"controller_port={node.controller_port} broker+{role}, leads {leads.get(node.node_id, 0)} "
            f"partitions{problem}"
        )
    return lines
