"""The servers' processes: starting one in its own session, asking if it lives, stopping it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from scripts.devstack.ports import wait_until

# Servers started by this process, so they are reaped (not left as zombies) when stopped.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a server in a session of its own (so a stop reaches its whole group), output to `log`."""
    # The child keeps its own copy of the descriptor; ours is closed at once.
    with log.open("ab") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    _CHILDREN[proc.pid] = proc
    return proc.pid


def pid_alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop(pid: int, grace_s: float) -> None:
    """SIGTERM to the process group, SIGKILL after `grace_s`, then wait until it has exited."""
    if not pid_alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0, f"process {pid} to exit")
    _CHILDREN.pop(pid, None)
