"""`scripts/dev-stack`'s command line: up | down | status | env on the checkout's stack.

Its state (pids, logs, the servers' data unless that is in memory) lives under .dev-stack/
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time

from scripts.devstack.errors import StackError
from scripts.devstack.lifecycle import down, status, up
from scripts.devstack.security import ADMIN, PLAINTEXT, USERS
from scripts.devstack.state import STATE_DIR, read_state


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/dev-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="up|down|status|env")
    commands.add_parser(
        "up",
        help="start Kafka (KAFKA_PORT, default 9092) and S3 (S3_PORT, default 8333), or reuse the running ones; "
        "DEV_STACK_SECURITY=sasl_ssl secures Kafka (SASL_SSL, SCRAM users admin, worker, runner, ACLs); "
        "DEV_STACK_BROKERS=3 starts a cluster of three KRaft nodes on KAFKA_PORT and the next two ports "
        "(replication factor 3, min.insync.replicas=2)",
    )
    commands.add_parser("down", help="stop both servers and wait until their ports are closed")
    commands.add_parser(
        "status", help="each server's state (each Kafka node's role, in a cluster) and the settings that reach it"
    )
    env = commands.add_parser(
        "env", help='the settings as `export` lines, for eval "$(scripts/dev-stack env)"; passwords included'
    )
    env.add_argument("user", nargs="?", choices=USERS, help="on a secured stack: whom to connect as (default admin)")
    return parser.parse_args(argv)


def _up(_: argparse.Namespace) -> int:
    started = time.monotonic()
    mode = os.environ.get("DEV_STACK_SECURITY") or PLAINTEXT
    brokers = os.environ.get("DEV_STACK_BROKERS") or "1"
    if not brokers.isdigit():
        raise StackError(f"DEV_STACK_BROKERS must be 1 or 3, not {brokers!r}")
    kafka_port, s3_port = int(os.environ.get("KAFKA_PORT", "9092")), int(os.environ.get("S3_PORT", "8333"))
    up(STATE_DIR, kafka_port, s3_port, mode, int(brokers))
    print(f"dev stack ready in {time.monotonic() - started:.1f}s")  # noqa: T201
    print(status(STATE_DIR))  # noqa: T201
    return 0


def _down(_: argparse.Namespace) -> int:
    down(STATE_DIR)
    print("dev stack: stopped")  # noqa: T201
    return 0


def _env(args: argparse.Namespace) -> int:
    info = read_state(STATE_DIR)
    if info is None:
        print("dev stack is not running: scripts/dev-stack up", file=sys.stderr)  # noqa: T201
        return 1
    if args.user is not None and not info.secured:
        print(  # noqa: T201
            f"dev-stack: Kafka runs in plaintext mode, without users; to connect as {args.user!r}, "
            "`scripts/dev-stack down`, then `DEV_STACK_SECURITY=sasl_ssl scripts/dev-stack up`",
            file=sys.stderr,
        )
        return 2
    env = info.env(args.user or ADMIN)
    print("\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items()))  # noqa: T201
    return 0


def _status(_: argparse.Namespace) -> int:
    print(status(STATE_DIR))  # noqa: T201
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 1 when the stack cannot do what was asked, 2 on a usage error."""
    args = _parse(sys.argv[1:] if argv is None else argv)
    run = {"up": _up, "down": _down, "env": _env, "status": _status}[args.command]
    try:
        return run(args)
    except StackError as exc:
        print(f"dev-stack: {exc}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
