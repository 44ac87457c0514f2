"""Marks every test here `faults` (`make test-faults` runs just them) and prints the scenarios' table.

The table: scenario, frames, results, missing, duplicates, wall time, and the longest stall where
measured. A failed scenario's report also shows each replica's commit events: CI keeps no worker
logs, and a rare duplicate is explained only by what the checkpoint saw.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from pathlib import Path

import orjson
import pytest

from tests.faults.report import ROWS, table

HERE = Path(__file__).resolve().parent
# What a replica logs about its partitions and transactions, everything else left out.
COMMIT_EVENTS = {
    "partitions_assigned", "partitions_revoked", "assignment_incomplete", "committed_offset_regressed",
    "transaction_failed", "transaction_outcome_committed", "transaction_outcome_aborted",
    "producer_fenced", "partition_taken_over", "rejoin_requested", "frames_abandoned", "worker_stopped",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees every item of the session, not only those below it.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(table(ROWS))


Report = pytest.TestReport


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Report, Report]:
    report = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if report.when == "call" and report.failed and item.path.is_relative_to(HERE) and tmp_path is not None:
        for log in sorted(Path(tmp_path).glob("worker-*.log")):
            report.sections.append((f"commit events of {log.name}", commit_events(log)))
    return report


def commit_events(log: Path) -> str:
    """The log's lines about partitions and transactions, one JSON object each."""
    kept = []
    for raw in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            if orjson.loads(raw).get("event") in COMMIT_EVENTS:
                kept.append(raw.decode())
    return "\n".join(kept)
