"""The running stack's record: StackInfo, kept in the state dir's state.json."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from scripts.devstack.s3 import S3_ACCESS_KEY, S3_REGION, S3_SECRET_KEY
from scripts.devstack.security import ADMIN, PLAINTEXT, SASL_SSL, Secrets, client_env, client_options

REPO_ROOT = Path(__file__).resolve().parents[2]
# `scripts/dev-stack`'s state dir; tests and the bench use temporary ones of their own.
STATE_DIR = REPO_ROOT / ".dev-stack"


@dataclass(frozen=True)
class Node:
    """One Kafka node of a multi-node stack: a combined KRaft broker and controller."""

    node_id: int
    port: int
    controller_port: int
    pid: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


@dataclass(frozen=True)
class StackInfo:
    """Where a running stack answers, and the processes behind it."""

    state_dir: str
    kafka_port: int
    s3_port: int
    kafka_pid: int
    s3_pid: int
    # Where both servers keep their data (see data_dir_for); a state file without it is on disk.
    data_dir: str = ""
    # How Kafka's client listener is secured (security.MODES); a state file without it is plaintext.
    security: str = PLAINTEXT
    # Every node of a multi-node Kafka (scripts/devstack/cluster.py), the first one also in
    # kafka_port and kafka_pid; empty for the single broker.
    nodes: tuple[Node, ...] = ()

    @property
    def kafka_pids(self) -> list[int]:
        return [n.pid for n in self.nodes] if self.nodes else [self.kafka_pid]

    @property
    def kafka_ports(self) -> list[int]:
        return [n.port for n in self.nodes] if self.nodes else [self.kafka_port]

    def node(self, node_id: int) -> Node:
        found = [n for n in self.nodes if n.node_id == node_id]
        if not found:
            raise KeyError(f"no Kafka node {node_id} in this stack (nodes: {[n.node_id for n in self.nodes]})")
        return found[0]

    def with_node(self, node: Node) -> StackInfo:
        """This stack with `node` (restarted: a new pid) in place of the node of its id."""
        nodes = tuple(node if n.node_id == node.node_id else n for n in self.nodes)
        first = nodes[0]
        return replace(self, nodes=nodes, kafka_port=first.port, kafka_pid=first.pid)

    @property
    def data(self) -> Path:
        return Path(self.data_dir or self.state_dir)

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{port}" for port in self.kafka_ports)

    @property
    def s3_endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def secured(self) -> bool:
        return self.security == SASL_SSL

    @property
    def secrets(self) -> Secrets:
        return Secrets.of(Path(self.state_dir))

    def kafka_options(self, user: str = ADMIN) -> dict[str, Any]:
        """aiokafka's connection options for this stack's Kafka (as `user` when it is secured)."""
        options: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        return {**options, **client_options(self.secrets, user)} if self.secured else options

    def env(self, user: str = ADMIN) -> dict[str, str]:
        """The settings that point the project's programs at this stack (as `user` when it is secured)."""
        kafka = client_env(self.secrets, user) if self.secured else {}
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            **kafka,
            "S3_ENDPOINT_URL": self.s3_endpoint_url,
            "S3_ACCESS_KEY_ID": S3_ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": S3_SECRET_KEY,
            "S3_REGION": S3_REGION,
        }


def _state_file(state_dir: Path) -> Path:
    return state_dir / "state.json"


def read_state(state_dir: Path) -> StackInfo | None:
    path = _state_file(state_dir)
    if not path.exists():
        return None
    fields = json.loads(path.read_text())
    nodes = tuple(Node(**node) for node in fields.pop("nodes", []))
    return StackInfo(**fields, nodes=nodes)


def write_state(state_dir: Path, info: StackInfo) -> None:
    _state_file(state_dir).write_text(json.dumps(asdict(info)))


def remove_state(state_dir: Path) -> None:
    _state_file(state_dir).unlink(missing_ok=True)
