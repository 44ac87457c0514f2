"""The fault suite's summary: one row per scenario, printed at the end of the pytest run."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    scenario: str
    frames: int
    results: int
    missing: int
    duplicates: int
    wall_s: float
    # The longest wait of a read_committed reader for a new result (scenarios that measure it).
    stall_s: float | None = None


ROWS: list[Row] = []


def record(
    scenario: str, tasks: int, answered: Iterable[tuple[str, int]], wall_s: float, stall_s: float | None = None
) -> None:
    """Count what a scenario produced: `answered` holds one (video_id, frame_id) per result."""
    counts = collections.Counter(answered)
    results = sum(counts.values())
    ROWS.append(Row(scenario, tasks, results, max(0, tasks - len(counts)), results - len(counts), wall_s, stall_s))


def table(rows: list[Row]) -> str:
    width = max([len("scenario"), *(len(r.scenario) for r in rows)])
    header = f"{'scenario':{width}} {'frames':>6} {'results':>7} {'missing':>7} {'duplicates':>10} {'wall s':>7}"
    lines = [f"{header} {'stall s':>7}"]
    lines += [
        f"{r.scenario:{width}} {r.frames:6d} {r.results:7d} {r.missing:7d} {r.duplicates:10d} {r.wall_s:7.1f} "
        f"{'-' if r.stall_s is None else f'{r.stall_s:.1f}':>7}"
        for r in rows
    ]
    return "\n".join(lines)
