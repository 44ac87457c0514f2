"""Marks every test here `faults` (`make test-faults` runs just them) and prints the scenarios' table.

The table: scenario, frames, results, missing, duplicates, wall time, and the longest stall where
measured.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.report import ROWS, table

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # A conftest's collection hook sees every item of the session, not only those below it.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(table(ROWS))
