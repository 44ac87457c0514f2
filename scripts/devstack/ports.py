"""Loopback ports: choosing free ones, probing them, waiting on a condition with a deadline."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path

from scripts.devstack.errors import StackError

# free_port() picks listening ports from here up to the kernel's ephemeral range.
LISTEN_PORTS_FROM = 20000
_HANDED_OUT: set[int] = set()
READY_TIMEOUT_S = 120.0


def free_port() -> int:
    """A port that binds now, below the kernel's ephemeral range where the range leaves room.

    A port from bind(0) lies in the range that outgoing connections take their source ports
    from, and it is closed again before the server binds it: a client connecting in that gap
    can take it, and the server exits (SeaweedFS: "bind: address already in use").
    """
    low = ephemeral_low()
    if low - LISTEN_PORTS_FROM >= 1000:
        for port in random.sample(range(LISTEN_PORTS_FROM, low), 50):
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)  # a stack asks for several before it binds any
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        found: int = sock.getsockname()[1]
        return found


def free_port_run(count: int) -> int:
    """The first of `count` consecutive ports that all bind now (a cluster's nodes listen on a run)."""
    for _ in range(100):
        first = free_port()
        rest = range(first + 1, first + count)
        if all(port not in _HANDED_OUT and _bindable(port) for port in rest):
            _HANDED_OUT.update(rest)
            return first
    raise StackError(f"no {count} consecutive free ports found")


def ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range; 0 where the kernel does not say."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0  # not Linux: bind(0) it is


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def wait_closed(port: int, what: str, timeout_s: float = 15.0) -> None:
    """Wait until nothing listens on `port` any more (a stopped server's socket can linger)."""
    wait_until(lambda: not port_open(port), timeout_s, what)
