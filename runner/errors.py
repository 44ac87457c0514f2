"""Errors as types: each kind of failure the CLI reports carries its own exit code.

`__main__` turns any `RunnerError` into one line on stderr and `exit_code`; the
libraries below (botocore, aiokafka, OpenCV) are translated where they are called.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

from aiokafka.errors import KafkaConnectionError, KafkaError, UnknownTopicOrPartitionError

from inference.config import KafkaSettings
from inference.kafka_errors import denial, is_denial, unreachable


class RunnerError(Exception):
    """A failure the runner reports as one line."""

    exit_code: ClassVar[int] = 1


class InputError(RunnerError):
    """The user's input is wrong: a missing or undecodable video, an invalid video id, a bad file."""

    exit_code = 2


class InfrastructureError(RunnerError):
    """Kafka or S3 cannot be reached, refuses, or did not acknowledge."""

    exit_code = 1


class Incomplete(RunnerError):
    """A video's results did not all arrive in time; the message says which are missing."""

    exit_code = 3


@dataclass(frozen=True)
class KafkaUse:
    """What a runner command does with Kafka: a denial of it names this permission."""

    topic: str
    operation: str = "Read"
    group: str | None = None
    transactional_id: str | None = None
    doing: str = "cannot reach Kafka"


@contextmanager
def kafka_errors(kafka: KafkaSettings, use: KafkaUse) -> Iterator[None]:
    """Turn aiokafka's failures inside the block into one line that says what to fix."""
    try:
        yield
    except UnknownTopicOrPartitionError:
        raise InfrastructureError(f"Kafka topic {use.topic!r} does not exist at {kafka.bootstrap_servers}") from None
    except KafkaError as exc:
        raise kafka_failure(exc, kafka, use) from None


async def unreachable_failure(exc: KafkaConnectionError, kafka: KafkaSettings) -> InfrastructureError:
    """Why no broker answered at start: the certificate, the password or the address, in one line."""
    return InfrastructureError(str(await unreachable(kafka, exc)))


def kafka_failure(exc: KafkaError, kafka: KafkaSettings, use: KafkaUse) -> InfrastructureError:
    """The one line for a Kafka failure: the missing ACL for a denial, else what failed and where."""
    if is_denial(exc):
        where = {"topic": use.topic, "group": use.group, "transactional_id": use.transactional_id}
        return InfrastructureError(str(denial(exc, kafka.sasl_plain_username, operation=use.operation, **where)))
    return InfrastructureError(f"{use.doing} at {kafka.bootstrap_servers}: {exc!r}")
