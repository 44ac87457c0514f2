"""Errors as types: each kind of failure the CLI reports carries its own exit code.

`__main__` turns any `RunnerError` into one line on stderr and `exit_code`; the
libraries below (botocore, aiokafka, OpenCV) are translated where they are called.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import ClassVar

from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError


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


@contextmanager
def kafka_errors(bootstrap_servers: str, topic: str) -> Iterator[None]:
    """Turn aiokafka's failures inside the block into one line that says what to fix."""
    try:
        yield
    except UnknownTopicOrPartitionError:
        raise InfrastructureError(f"Kafka topic {topic!r} does not exist at {bootstrap_servers}") from None
    except KafkaError as exc:
        raise InfrastructureError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from None
