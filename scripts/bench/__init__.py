"""The benchmark (`python -m scripts.bench`, `make bench`): the pipeline against its model-only bound.

load.py stages frames and offers tasks, measure.py takes one measurement, readings.py holds what a
run records, report.py prints and plots; __main__.py runs them in order.
"""

from __future__ import annotations

from scripts.bench.readings import LoopLag, Measure
from scripts.bench.report import bracketing

__all__ = ["LoopLag", "Measure", "bracketing"]
