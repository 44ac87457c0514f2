"""The local Kafka broker: a combined KRaft broker+controller from Maven's jars, with our topics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from scripts.devstack.errors import StackError
from scripts.devstack.ports import READY_TIMEOUT_S, free_port
from scripts.devstack.processes import spawn
from scripts.devstack.state import REPO_ROOT, STATE_DIR

# Resolved once per checkout, whichever state dir a stack runs in.
JARS_DIR = STATE_DIR / "kafka-jars"
POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
TOPIC_PARTITIONS = {
    "inference_tasks": 6,
    "inference_results": 6,
    "inference_tasks.dlq": 3,
}
PROBE_TOPIC = "_dev_stack_probe"
KAFKA_STOP_S = 30.0


def ensure_kafka_jars() -> Path:
    """Resolve the broker's jars with Maven once; later calls reuse the copy."""
    marker = JARS_DIR / ".complete"
    if marker.exists():
        return JARS_DIR
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise StackError(f"'{tool}' is not on PATH: the local Kafka broker needs Java 17+ and Maven")
    JARS_DIR.mkdir(parents=True, exist_ok=True)
    cmd = [
        "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
        f"-DoutputDirectory={JARS_DIR}", "-DincludeScope=runtime",
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
        raise StackError(f"Maven could not resolve Kafka's jars (network to Maven Central?):\n{tail}")
    marker.touch()
    return JARS_DIR


def _kafka_properties(data_dir: Path, port: int, controller_port: int) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=10",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "",
        ]
    )


def _java(jars: Path, *args: str) -> list[str]:
    # C1 only: a local broker lives minutes, and C2 spends them compiling on the cores the worker needs.
    return ["java", "-Xms256m", "-Xmx768m", "-XX:TieredStopAtLevel=1", "-cp", f"{jars}/*", *args]


def _controller_port(kafka_dir: Path, port: int) -> int:
    """The controller's port of an earlier start on the same broker port, else a free one (remembered)."""
    ports_file = kafka_dir / "ports.json"
    if ports_file.exists() and json.loads(ports_file.read_text())["port"] == port:
        return int(json.loads(ports_file.read_text())["controller_port"])
    controller_port = free_port()
    ports_file.write_text(json.dumps({"port": port, "controller_port": controller_port}))
    return controller_port


def start_kafka(state_dir: Path, data: Path, port: int) -> int:
    """Format the KRaft storage once, then start a combined broker+controller."""
    jars = ensure_kafka_jars()
    kafka_dir = state_dir / "kafka"
    data_dir = data / "kafka" / "data"
    config = kafka_dir / "server.properties"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    controller_port = _controller_port(kafka_dir, port)
    config.write_text(_kafka_properties(data_dir, port, controller_port))
    if not (data_dir / "meta.properties").exists():
        cluster_id = uuid.uuid4().hex[:22]
        fmt = _java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config))
        done = subprocess.run(fmt, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise StackError(f"formatting Kafka storage failed: {done.stderr.strip()[-500:]}")
    env = {**os.environ, "LOG_DIR": str(kafka_dir / "logs")}
    return spawn(_java(jars, "kafka.Kafka", str(config)), kafka_dir / "kafka.log", env)


async def prepare_kafka(bootstrap: str) -> None:
    """Create the topics, then prove a transactional producer can initialise and commit."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError, TopicAlreadyExistsError

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            topics = {**TOPIC_PARTITIONS, PROBE_TOPIC: 1}
            wanted = [NewTopic(t, n, 1) for t, n in topics.items() if t not in existing]
            if wanted:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(wanted)
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"dev-stack-probe-{uuid.uuid4().hex}",
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(PROBE_TOPIC, b"ready")
    finally:
        await producer.stop()
