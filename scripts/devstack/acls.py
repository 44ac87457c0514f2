"""The ACLs each program's principal needs on a secured stack, granted with Kafka's AclCommand.

Read and Write imply Describe in Kafka's authorizer, so no Describe is granted on its own. The
sets below are the least that `python -m inference` (both delivery modes) and every
`python -m runner` command need: with them the broker denies the programs nothing (its denials
go to `kafka/authorizer.log` in the state dir), and without any one of them a program stops,
naming it (tests/integration/test_security.py takes each away in turn).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from scripts.devstack.errors import StackError
from scripts.devstack.kafka import DEFAULT_ACLS_MARKER, ensure_kafka_jars, java
from scripts.devstack.security import Secrets, redact

WORKER = "worker"
RUNNER = "runner"
# The programs' defaults (inference/config.py, runner/__main__.py).
TASKS, RESULTS, DLQ = "inference_tasks", "inference_results", "inference_tasks.dlq"
MODELS = "inference_models"
STATUS = "video_status"
WORKER_GROUP = "inference-group"
COLLECTOR_GROUP = "inference-collector"
# `runner serve` assembles the videos it accepted in a group of its own.
SERVE_GROUP = "runner-serve"
# `runner split` commits each video's tasks in one transaction, id `runner-split-<video_id>`.
SPLIT_TRANSACTIONS = "runner-split-"
# Enough for AclCommand's one admin request; the broker takes the large default heap.
_TOOL_HEAP = ("-Xmx128m",)
# Past the admin client's own request timeouts: the broker is not answering.
_TOOL_TIMEOUT_S = 120.0


@dataclass(frozen=True, order=True)
class Acl:
    """One permission: `user` may do `operation` on a resource (its name, or every name with that prefix)."""

    user: str
    operation: str  # Read | Write
    resource: str  # topic | group | transactional-id (AclCommand's option names)
    name: str
    prefixed: bool = False


def worker_acls(
    tasks: str = TASKS,
    results: str = RESULTS,
    dlq: str = DLQ,
    group: str = WORKER_GROUP,
    user: str = WORKER,
    models: str = MODELS,
) -> list[Acl]:
    """What a worker replica needs, in both delivery modes."""
    return [
        Acl(user, "Read", "topic", tasks),
        # The priority levels of the tasks topic (inference/priority.py), in the same group.
        Acl(user, "Read", "topic", f"{tasks}.high"),
        Acl(user, "Read", "topic", f"{tasks}.low"),
        # The model registry, read without a group (every replica reads all of it).
        Acl(user, "Read", "topic", models),
        Acl(user, "Read", "group", group),
        Acl(user, "Write", "topic", results),
        Acl(user, "Write", "topic", dlq),
        # exactly_once: one producer per input partition, transactional id `<group>-<topic>-<partition>`.
        Acl(user, "Write", "transactional-id", f"{group}-", prefixed=True),
    ]


def runner_acls(
    tasks: str = TASKS,
    results: str = RESULTS,
    groups: Iterable[str] = (COLLECTOR_GROUP, SERVE_GROUP),
    user: str = RUNNER,
    models: str = MODELS,
    status: str = STATUS,
) -> list[Acl]:
    """What `runner split`, `collect` (as a member of `groups`), `run`, `models` and `serve` need."""
    return [
        # Videos' status: published by whatever assembles a video, read back after a restart.
        Acl(user, "Read", "topic", status),
        Acl(user, "Write", "topic", status),
        Acl(user, "Write", "topic", tasks),
        Acl(user, "Write", "topic", f"{tasks}.high"),
        Acl(user, "Write", "topic", f"{tasks}.low"),
        Acl(user, "Read", "topic", models),
        Acl(user, "Write", "topic", models),
        Acl(user, "Write", "transactional-id", SPLIT_TRANSACTIONS, prefixed=True),
        Acl(user, "Read", "topic", results),
        *(Acl(user, "Read", "group", group) for group in groups),
    ]


def default_acls() -> list[Acl]:
    return worker_acls() + runner_acls()


def _batches(acls: Iterable[Acl]) -> dict[tuple[str, str, bool], list[Acl]]:
    """ACLs that one AclCommand call can add: it grants every operation on every resource it is given."""
    batches: dict[tuple[str, str, bool], list[Acl]] = {}
    for acl in sorted(set(acls)):
        batches.setdefault((acl.user, acl.operation, acl.prefixed), []).append(acl)
    return batches


def grant(bootstrap: str, secrets: Secrets, acls: Iterable[Acl]) -> None:
    """Add `acls` as admin, one AclCommand call per user, operation and pattern type (a JVM start each)."""
    jars = ensure_kafka_jars()
    calls = []
    for (user, operation, prefixed), batch in _batches(acls).items():
        args = [
            "org.apache.kafka.tools.AclCommand", "--bootstrap-server", bootstrap,
            "--command-config", str(secrets.admin_properties), "--add",
            f"--allow-principal=User:{user}", f"--operation={operation}",
            f"--resource-pattern-type={'prefixed' if prefixed else 'literal'}",
        ]  # fmt: skip
        args += [f"--{acl.resource}={acl.name}" for acl in batch]
        calls.append(java(jars, *args, heap=_TOOL_HEAP))
    # Side by side: a JVM's start is mostly one thread's work, so a few of them share the cores well.
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for c in calls]
    failures = []
    for proc in running:
        try:
            output, _ = proc.communicate(timeout=_TOOL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        if proc.returncode != 0:
            failures.append(redact(output.strip()[-400:], secrets))
    if failures:
        raise StackError("granting ACLs failed: " + "\n".join(failures))


def granted_marker(data: Path) -> Path:
    """Beside the storage: present once the default ACLs are in it."""
    return data / "kafka" / DEFAULT_ACLS_MARKER
