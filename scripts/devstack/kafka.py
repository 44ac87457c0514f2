"""The local Kafka broker: a combined KRaft broker+controller from Maven's jars, with our topics."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from scripts.devstack import security
from scripts.devstack.errors import StackError
from scripts.devstack.ports import READY_TIMEOUT_S, free_port
from scripts.devstack.processes import spawn
from scripts.devstack.state import REPO_ROOT, STATE_DIR

# Resolved once per checkout, whichever state dir a stack runs in.
JARS_DIR = STATE_DIR / "kafka-jars"
POM = REPO_ROOT / "scripts" / "kafka" / "pom.xml"
TOPIC_PARTITIONS = {
    "inference_tasks": 6,
    # The priority levels of the tasks topic, consumed by the same group (inference/priority.py).
    "inference_tasks.high": 6,
    "inference_tasks.low": 6,
    "inference_results": 6,
    "inference_tasks.dlq": 3,
    "inference_models": 1,
    "video_status": 3,
}
# Keyed state (a model name's current version, a video's status): the latest record per key is what counts.
COMPACTED_TOPICS = frozenset({"inference_models", "video_status"})
PROBE_TOPIC = "_dev_stack_probe"
KAFKA_STOP_S = 30.0
# Beside the storage: the security mode it was formatted for.
SECURITY_MARKER = "security"
# Beside the storage: present once the secured stack's default ACLs are in it.
DEFAULT_ACLS_MARKER = "default-acls"
AUTHORIZER_LOG = "authorizer.log"


def ensure_kafka_jars() -> Path:
    """Resolve the broker's jars with Maven once per version of the pom; later calls reuse the copy.

    Each version of the pom gets a folder of its own, filled aside and renamed into place, so that
    a broker started from an earlier one keeps its jars and two resolutions never mix.
    """
    jars = JARS_DIR / hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    if jars.is_dir():
        return jars
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise StackError(f"'{tool}' is not on PATH: the local Kafka broker needs Java 17+ and Maven")
    JARS_DIR.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".resolving-", dir=JARS_DIR) as tmp:
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
            raise StackError(f"Maven could not resolve Kafka's jars (network to Maven Central?):\n{tail}")
        # Another process may have resolved the same pom meanwhile: its copy is as good.
        with contextlib.suppress(OSError):
            Path(tmp).rename(jars)
    return jars


def _kafka_properties(data_dir: Path, controller_port: int, listeners: list[str]) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            "controller.listener.names=CONTROLLER",
            *listeners,
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


def _authorizer_logging(kafka_dir: Path) -> Path:
    """A log4j2 configuration as quiet as the default, plus the authorizer's denials in authorizer.log."""
    config = kafka_dir / "log4j2.properties"
    lines = [
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d] %p %m (%c)%n",
        "appender.denials.type = File",
        "appender.denials.name = denials",
        f"appender.denials.fileName = {kafka_dir / AUTHORIZER_LOG}",
        "appender.denials.layout.type = PatternLayout",
        "appender.denials.layout.pattern = [%d] %m%n",
        "rootLogger.level = error",
        "rootLogger.appenderRef.console.ref = console",
        # Denials are logged at INFO, what was allowed at DEBUG.
        "logger.authorizer.name = kafka.authorizer.logger",
        "logger.authorizer.level = info",
        "logger.authorizer.additivity = false",
        "logger.authorizer.appenderRef.denials.ref = denials",
    ]
    config.write_text("\n".join(lines) + "\n")
    return config


def java(jars: Path, *args: str, heap: tuple[str, ...] = ("-Xms256m", "-Xmx768m")) -> list[str]:
    """A JVM on the broker's jars; `args` start with JVM options (if any), then the main class."""
    # C1 only: a local broker lives minutes, and C2 spends them compiling on the cores the worker needs.
    return ["java", *heap, "-XX:TieredStopAtLevel=1", "-cp", f"{jars}/*", *args]


def _controller_port(kafka_dir: Path, port: int) -> int:
    """The controller's port of an earlier start on the same broker port, else a free one (remembered)."""
    ports_file = kafka_dir / "ports.json"
    if ports_file.exists() and json.loads(ports_file.read_text())["port"] == port:
        return int(json.loads(ports_file.read_text())["controller_port"])
    controller_port = free_port()
    ports_file.write_text(json.dumps({"port": port, "controller_port": controller_port}))
    return controller_port


def _formatted_as(data: Path) -> str | None:
    """The security mode the storage was formatted for; None when it is not formatted."""
    if not (data / "kafka" / "data" / "meta.properties").exists():
        return None
    marker = data / "kafka" / SECURITY_MARKER
    # Storage from before the marker existed is plaintext: nothing else was made then.
    return marker.read_text().strip() if marker.exists() else security.PLAINTEXT


def _format(jars: Path, config: Path, data: Path, mode: str, secrets: security.Secrets) -> None:
    """Format the storage for `mode`, with every user's SCRAM credential when it is secured."""
    scram = security.scram_arguments(secrets.passwords()) if mode == security.SASL_SSL else []
    cluster_id = uuid.uuid4().hex[:22]
    fmt = java(jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config), *scram)
    done = subprocess.run(fmt, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        reason = security.redact(done.stderr.strip()[-500:], secrets)
        raise StackError(f"formatting Kafka storage failed: {reason}")
    (data / "kafka" / SECURITY_MARKER).write_text(mode)
    (data / "kafka" / DEFAULT_ACLS_MARKER).unlink(missing_ok=True)


def start_kafka(state_dir: Path, data: Path, port: int, mode: str = security.PLAINTEXT) -> int:
    """Format the KRaft storage once per security mode, then start a combined broker+controller."""
    jars = ensure_kafka_jars()
    kafka_dir = state_dir / "kafka"
    data_dir = data / "kafka" / "data"
    config = kafka_dir / "server.properties"
    kafka_dir.mkdir(parents=True, exist_ok=True)
    controller_port = _controller_port(kafka_dir, port)
    secrets = security.Secrets.of(state_dir)
    formatted = _formatted_as(data)
    fresh = formatted != mode or (mode == security.SASL_SSL and not secrets.exists())
    if fresh:
        # Another mode's storage (or one whose secrets are gone) cannot serve this one; the
        # secrets of the storage it replaces go with it.
        shutil.rmtree(data_dir, ignore_errors=True)
        shutil.rmtree(secrets.folder, ignore_errors=True)
        if mode == security.SASL_SSL:
            secrets.make()
    listeners = security.listener_properties(mode, secrets, port, controller_port)
    # It holds the admin password in the secured mode.
    config.touch(mode=0o600)
    config.chmod(0o600)
    config.write_text(_kafka_properties(data_dir, controller_port, listeners))
    if fresh:
        _format(jars, config, data, mode, secrets)
    options = []
    if mode == security.SASL_SSL:
        options.append(f"-Dlog4j2.configurationFile={_authorizer_logging(kafka_dir)}")
    env = {**os.environ, "LOG_DIR": str(kafka_dir / "logs")}
    return spawn(java(jars, *options, "kafka.Kafka", str(config)), kafka_dir / "kafka.log", env)


def new_topic(new: Any, name: str, partitions: int, replication: int = 1) -> Any:
    """aiokafka's NewTopic for one of our topics, compacted where it holds keyed state."""
    configs = {"cleanup.policy": "compact"} if name in COMPACTED_TOPICS else {}
    return new(name, partitions, replication, topic_configs=configs)


def raise_topic_errors(response: Any) -> None:
    """Raise the first per-topic error of a CreateTopics answer but "it exists already".

    aiokafka returns them without raising; a cluster whose nodes have not all registered yet
    answers InvalidReplicationFactor, and that must mean "not yet", not "done".
    """
    from aiokafka.errors import TopicAlreadyExistsError, for_code

    for topic, code, *_ in response.topic_errors:
        if code and code != TopicAlreadyExistsError.errno:
            raise for_code(code)(f"creating topic {topic}")


async def prepare_kafka(bootstrap: str, options: dict[str, Any] | None = None, replication: int = 1) -> None:
    """Create the topics, then prove a transactional producer can initialise and commit.

    `options`: aiokafka's connection options beyond the bootstrap servers (a secured broker's).
    `replication`: the topics' replication factor (the number of brokers of a cluster).
    """
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    options = options or {}

    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000, **options)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            topics = {**TOPIC_PARTITIONS, PROBE_TOPIC: 1}
            wanted = [new_topic(NewTopic, t, n, replication) for t, n in topics.items() if t not in existing]
            if wanted:
                raise_topic_errors(await admin.create_topics(wanted))
            break
        except KafkaError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, transactional_id=f"dev-stack-probe-{uuid.uuid4().hex}", **options
    )
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(PROBE_TOPIC, b"ready")
    finally:
        await producer.stop()
