"""The Java example consumer (examples/ResultsConsumer.java) against a real worker's results."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from scripts.devstack.kafka import ensure_kafka_jars
from tests.stack import Endpoints
from tests.support import REPO_ROOT, Topics, WorkerProcess, produce, read_to_end, result_values, stage_video, task

EXAMPLE = REPO_ROOT / "examples" / "ResultsConsumer.java"
VIDEO = "cam-java"
FRAMES = 8

pytestmark = pytest.mark.skipif(shutil.which("javac") is None, reason="javac is not installed (JDK 17 needed)")


def compile_example(out: Path) -> str:
    """Compile the example against the dev stack's kafka-clients; returns the classpath to run it with."""
    jars = ensure_kafka_jars()
    subprocess.run(["javac", "-cp", f"{jars}/*", "-d", str(out), str(EXAMPLE)],
                   check=True, capture_output=True, text=True, timeout=180)  # fmt: skip
    return f"{out}{os.pathsep}{jars}/*"


def test_the_java_example_prints_every_frame(
    stack: Endpoints, topics: Topics, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    classpath = compile_example(tmp_path / "classes")
    asyncio.run(stage_video(stack, topics, VIDEO, FRAMES))
    # One frame that is not in S3, so that an error result is printed too.
    missing = [(VIDEO.encode(), task(VIDEO, FRAMES, f"{VIDEO}/missing.jpg"))]
    asyncio.run(produce(stack.bootstrap_servers, topics.tasks, missing))
    start_worker().wait_started()
    args = [stack.bootstrap_servers, topics.results, f"{topics.group}-java", str(FRAMES + 1)]
    done = subprocess.run(["java", "-cp", classpath, "ResultsConsumer", *args],
                          capture_output=True, text=True, timeout=240, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split() for line in done.stdout.splitlines() if line.startswith(f"{VIDEO} ")]
    printed = {int(frame_id): (status, int(count)) for _, frame_id, status, count in lines}
    assert len(lines) == FRAMES + 1
    assert set(printed) == set(range(FRAMES + 1))
    values = result_values(asyncio.run(read_to_end(stack.bootstrap_servers, topics.results)))
    assert printed == {v["frame_id"]: (v["status"], len(v["detections"])) for v in values}
    assert printed[FRAMES] == ("error", 0)
    assert sum(count for status, count in printed.values() if status == "ok") > 0
