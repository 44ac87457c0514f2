"""`scripts/dev-stack`'s command line: up | down | status | env on the checkout's stack.

Its state (pids, logs, the servers' data unless that is in memory) lives under .dev-stack/
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from scripts.devstack.errors import StackError
from scripts.devstack.lifecycle import down, status, up
from scripts.devstack.state import STATE_DIR, read_state


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/dev-stack", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="up|down|status|env")
    commands.add_parser(
        "up", help="start Kafka (KAFKA_PORT, default 9092) and S3 (S3_PORT, default 8333), or reuse the running ones"
    )
    commands.add_parser("down", help="stop both servers and wait until their ports are closed")
    commands.add_parser("status", help="each server's state and the settings that reach it")
    commands.add_parser("env", help='the settings as `export` lines, for eval "$(scripts/dev-stack env)"')
    return parser.parse_args(argv)


def _up() -> int:
    started = time.monotonic()
    up(STATE_DIR, int(os.environ.get("KAFKA_PORT", "9092")), int(os.environ.get("S3_PORT", "8333")))
    print(f"dev stack ready in {time.monotonic() - started:.1f}s")  # noqa: T201
    print(status(STATE_DIR))  # noqa: T201
    return 0


def _down() -> int:
    down(STATE_DIR)
    print("dev stack: stopped")  # noqa: T201
    return 0


def _env() -> int:
    info = read_state(STATE_DIR)
    if info is None:
        print("dev stack is not running: scripts/dev-stack up", file=sys.stderr)  # noqa: T201
        return 1
    print("\n".join(f"export {k}={v}" for k, v in info.env().items()))  # noqa: T201
    return 0


def _status() -> int:
    print(status(STATE_DIR))  # noqa: T201
    return 0


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success, 1 when the stack cannot do what was asked, 2 on a usage error."""
    command = _parse(sys.argv[1:] if argv is None else argv).command
    run = {"up": _up, "down": _down, "env": _env, "status": _status}[command]
    try:
        return run()
    except StackError as exc:
        print(f"dev-stack: {exc}", file=sys.stderr)  # noqa: T201
        return 1


if __name__ == "__main__":
    sys.exit(main())
