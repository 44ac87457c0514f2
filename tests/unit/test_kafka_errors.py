"""Kafka's refusals as one line: the principal, the operation, the resource."""

from __future__ import annotations

import pytest
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from inference.config import KafkaSettings
from inference.kafka_errors import KafkaAccessDenied, denial, is_denial, raise_if_denied, unreachable


@pytest.mark.parametrize(
    ("error", "permission"),
    [
        (TopicAuthorizationFailedError(), "Read on topic 'tasks'"),
        (GroupAuthorizationFailedError(), "Read on group 'workers'"),
        (TransactionalIdAuthorizationFailed(), "Write on transactional id 'workers-tasks-*'"),
        (ClusterAuthorizationFailedError(), "IdempotentWrite on the cluster"),
    ],
)
def test_a_denial_names_the_principal_and_the_permission(error: Exception, permission: str) -> None:
    line = str(denial(error, "worker", operation="Read", topic="tasks", group="workers",
                      transactional_id="workers-tasks-*"))  # fmt: skip
    assert line.startswith(f"Kafka denied User:worker {permission} ")
    assert type(error).__name__ in line


def test_a_denial_on_a_write_to_two_topics_names_both() -> None:
    line = str(denial(TopicAuthorizationFailedError(), None, operation="Write", topic=("results", "dlq")))
    assert line.startswith("Kafka denied this client Write on topic 'results' and 'dlq' ")


def test_only_authorization_failures_are_denials() -> None:
    assert is_denial(GroupAuthorizationFailedError())
    assert not is_denial(KafkaConnectionError())
    raise_if_denied(KafkaConnectionError(), KafkaSettings(), operation="Read", topic="t")  # returns: not a denial
    with pytest.raises(KafkaAccessDenied, match="Write on topic 'results'") as caught:
        raise_if_denied(TopicAuthorizationFailedError(), KafkaSettings(), operation="Write", topic="results")
    assert caught.value.exit_code == 3


async def test_an_unreachable_cluster_says_why() -> None:
    settings = KafkaSettings(bootstrap_servers="127.0.0.1:9")
    line = str(await unreachable(settings, KafkaConnectionError("Unable to bootstrap")))
    assert line.startswith("cannot reach Kafka at 127.0.0.1:9 as PLAINTEXT: ")
    assert "Connect call failed" in line or "refused" in line.lower()
