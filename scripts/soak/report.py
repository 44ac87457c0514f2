"""The soak's report: a section appended to docs/reliability.md per run, with the seed that replays it."""

from __future__ import annotations

import collections
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from scripts.devstack.state import REPO_ROOT
from scripts.soak.verify import Verdict

HEADING = "## Soak runs"


@dataclass(frozen=True)
class Fault:
    kind: str
    at_s: float
    took_s: float
    outcome: str


@dataclass(frozen=True)
class Run:
    seed: int
    # As asked (what a replay asks again), and as it took, the final catch-up included.
    minutes: float
    took_minutes: float
    rate: float
    verdict: Verdict
    longest_stall_s: float
    # Since the stream started: which fault (or quiet time) it belongs to.
    longest_stall_at_s: float
    faults: list[Fault]
    unacknowledged: int
    replica_exits: list[int]
    load: tuple[float, float, float]


def render(run: Run, begun: datetime, logs: Path) -> str:
    kinds = collections.Counter(f.kind for f in run.faults)
    v = run.verdict
    lines = [
        f"### {begun:%Y-%m-%d %H:%M} UTC, seed {run.seed}",
        "",
        f"Replay: `SOAK_SEED={run.seed} SOAK_MINUTES={run.minutes:g} make soak` (the same faults in the same "
        "order and spacing; the nodes holding each role are read from the cluster again).",
        "",
        "| minutes | tasks/s | frames | results | missing | duplicates | longest stall | unacknowledged tasks "
        "| replica exits (unasked) | load average at the end |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {run.took_minutes:.1f} | {run.rate:g} | {v.tasks} | {v.results} | {v.missing} | {v.duplicates} "
        f"| {run.longest_stall_s:.1f} s from {run.longest_stall_at_s:.0f} s | {run.unacknowledged} "
        f"| {len(run.replica_exits)} "
        f"| {' / '.join(f'{x:.1f}' for x in run.load)} |",
        "",
        "Faults by kind: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none") + ".",
        "",
        "| at | fault | took | what |",
        "| --- | --- | --- | --- |",
        *(f"| {f.at_s:.0f} s | {f.kind} | {f.took_s:.1f} s | {f.outcome} |" for f in run.faults),
        "",
        f"Worker logs: `{logs.relative_to(REPO_ROOT) if logs.is_relative_to(REPO_ROOT) else logs}`.",
        "",
    ]
    return "\n".join(lines)


def append_report(path: Path, run: Run, begun: datetime, logs: Path) -> None:
    text = path.read_text() if path.exists() else "# Reliability\n"
    if HEADING not in text:
        text = text.rstrip("\n") + f"\n\n{HEADING}\n"
    path.write_text(text.rstrip("\n") + "\n\n" + render(run, begun, logs))
