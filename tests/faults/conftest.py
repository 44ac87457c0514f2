"""Prints the fault scenarios' table (scenario, frames, results, missing, duplicates, wall time)."""

from __future__ import annotations

import pytest

from tests.faults.report import ROWS, table


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.write_sep("=", "fault injection")
        terminalreporter.write_line(table(ROWS))
