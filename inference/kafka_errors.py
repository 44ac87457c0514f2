"""Kafka's refusals as the project's own errors: a missing ACL, or a cluster that cannot be reached.

A missing ACL is no outage: no retry can grant it, so it ends the program with one line that
names the permission (exit 3 for the worker). A cluster that cannot be reached at start says why
(the certificate, the password, the address) instead of aiokafka's "Unable to bootstrap".
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)

from inference.config import KafkaSettings

AUTHORIZATION_ERRORS: tuple[type[KafkaError], ...] = (
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
    ClusterAuthorizationFailedError,
)
_CONNECT_TIMEOUT_S = 10.0


class KafkaAccessDenied(Exception):
    """The broker refused this principal an operation; only an ACL can change that."""

    exit_code = 3


class KafkaUnreachable(Exception):
    """No broker could be reached, or one refused the connection's TLS or credentials."""

    exit_code = 1


def is_denial(exc: BaseException) -> bool:
    return isinstance(exc, AUTHORIZATION_ERRORS)


def denial(
    exc: BaseException,
    principal: str | None,
    *,
    operation: str,
    topic: str | tuple[str, ...] | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
) -> KafkaAccessDenied:
    """The line an operator needs: who was refused which operation on which resource.

    `topic` may name several topics where the request wrote to more than one (results and DLQ).
    """
    who = f"User:{principal}" if principal else "this client"
    if isinstance(exc, GroupAuthorizationFailedError):
        permission = f"Read on group {group!r}"
    elif isinstance(exc, TransactionalIdAuthorizationFailed):
        permission = f"Write on transactional id {transactional_id!r}"
    elif isinstance(exc, ClusterAuthorizationFailedError):
        permission = "IdempotentWrite on the cluster"
    else:
        topics = topic if isinstance(topic, tuple) else (topic,)
        permission = f"{operation} on topic " + " and ".join(repr(name) for name in topics)
    return KafkaAccessDenied(f"Kafka denied {who} {permission} ({type(exc).__name__}): grant that ACL")


def raise_if_denied(
    exc: BaseException,
    settings: KafkaSettings,
    *,
    operation: str,
    topic: str | tuple[str, ...] | None = None,
    group: str | None = None,
    transactional_id: str | None = None,
) -> None:
    """Raise KafkaAccessDenied for an authorization failure; return for anything else."""
    if is_denial(exc):
        principal = settings.sasl_plain_username
        where = {"group": group, "transactional_id": transactional_id}
        raise denial(exc, principal, operation=operation, topic=topic, **where) from None


async def unreachable(settings: KafkaSettings, failure: BaseException) -> KafkaUnreachable:
    """Why the first bootstrap server refuses or cannot be reached, found by connecting to it alone.

    aiokafka logs each server's error and raises only "Unable to bootstrap"; one direct
    connection gives back the cause (certificate verification, SASL authentication, refused).
    """
    host, _, port = settings.bootstrap_servers.split(",")[0].strip().rpartition(":")
    options: dict[str, Any] = {
        k: v for k, v in settings.client_options().items() if k not in ("bootstrap_servers", "client_id")
    }
    reason = f"{type(failure).__name__}: {failure}"
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT_S):
            conn = await create_conn(host, int(port), **options)
        conn.close()
    except (OSError, KafkaError, TimeoutError, ValueError) as exc:
        reason = _reason(exc)
    return KafkaUnreachable(f"cannot reach Kafka at {settings.bootstrap_servers} as {_who(settings)}: {reason}")


def _who(settings: KafkaSettings) -> str:
    user = f" user {settings.sasl_plain_username!r}" if settings.sasl_plain_username else ""
    return f"{settings.security_protocol}{user}"


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} ({cause})"
    return f"{type(exc).__name__}: {text}"
