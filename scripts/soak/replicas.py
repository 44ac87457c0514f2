"""The soak's worker replicas: `python -m inference` processes, killed and replaced on the schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from scripts.devstack.state import REPO_ROOT


@dataclass
class Replicas:
    """`count` replicas with `env` over this process's environment, each one's log in `logs`."""

    env: dict[str, str]
    logs: Path
    count: int = 2
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Replicas that exited without being told to, by their exit status.
    unexpected_exits: list[int] = field(default_factory=list)
    _started: int = 0

    def start(self) -> None:
        self.procs = [self._spawn() for _ in range(self.count)]

    def _spawn(self) -> subprocess.Popen[bytes]:
        self._started += 1
        with (self.logs / f"worker-{self._started}.log").open("ab") as log:
            return subprocess.Popen(
                [sys.executable, "-m", "inference"], cwd=REPO_ROOT, env={**os.environ, **self.env},
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self, index: int) -> str:
        """kill -9 one replica (a crash: nothing drained, nothing committed) and start a new one at once."""
        proc = self.procs[index]
        proc.kill()
        proc.wait(timeout=30)
        self.procs[index] = self._spawn()
        return f"replica {index} (pid {proc.pid}) killed, replaced by pid {self.procs[index].pid}"

    def replace_dead(self) -> None:
        """Note and replace replicas that exited by themselves: the soak goes on, the report tells."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.unexpected_exits.append(proc.returncode)
                self.procs[i] = self._spawn()

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
