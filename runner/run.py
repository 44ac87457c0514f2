"""`runner run`: split one video, wait for all its results, write the assembled document.

Results are read without a consumer group (`VideoResults`), from the end of the results
topic as it was before the tasks were produced: a run never waits on a group join, leaves
no group behind, never reads the topic's history, and never mixes in the results of an
earlier run of the same video id. The timeout bounds the wait for results, not the upload;
without one, `default_timeout_s` of the sampled frames. With a reporter, the video's status is
published as it goes (queued, running, then completed or failed) and a complete document is
uploaded to the results bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from inference.config import KafkaSettings, S3Settings
from runner.assembler import Assembly, write_document
from runner.collector import VideoResults
from runner.errors import RunnerError
from runner.progress import ProgressFactory, silent
from runner.splitter import SplitRequest, check_request, execute_split
from runner.status import NAMES
from runner.status_reporter import VideoReporter

# The default wait: time for workers to start (model load, group join), then one second a frame,
# slower than a single CPU replica serving a large model, so only a stalled pipeline reaches it.
TIMEOUT_BASE_S = 120.0
TIMEOUT_PER_FRAME_S = 1.0


def default_timeout_s(frames: int) -> float:
    """How long `run` waits for the results of `frames` sampled frames when no timeout is given."""
    return TIMEOUT_BASE_S + TIMEOUT_PER_FRAME_S * frames


@dataclass(frozen=True)
class RunOutcome:
    assembly: Assembly
    seconds: float
    timeout_s: float

    @property
    def complete(self) -> bool:
        return self.assembly.complete

    def summary(self) -> str:
        """Frames, detections per class, errors, wall time and throughput, for people."""
        assembly = self.assembly
        per_class = Counter(d.class_name for r in assembly.results() for d in r.detections)
        detections = ", ".join(f"{name} {count}" for name, count in sorted(per_class.items())) or "none"
        rate = assembly.received / self.seconds if self.seconds > 0 else 0.0
        return "\n".join(
            [
                f"video      {assembly.video_id}",
                f"frames     {assembly.received}/{assembly.total_frames}",
                f"detections {sum(per_class.values())} ({detections})",
                f"errors     {assembly.error_count}",
                f"duplicates {assembly.duplicate_count}",
                f"wall time  {self.seconds:.1f} s ({rate:.2f} frames/s)",
            ]
        )


async def run_video(
    request: SplitRequest,
    out: Path,
    kafka: KafkaSettings,
    s3: S3Settings,
    timeout_s: float | None = None,
    progress: ProgressFactory = silent,
    reporter: VideoReporter | None = None,
) -> RunOutcome:
    """Split, wait up to `timeout_s` (None: `default_timeout_s`) for every result, write the document
    (complete or not) to `out`; `reporter` publishes the video's status and uploads a complete document."""
    started = time.perf_counter()
    check_request(request)
    async with VideoResults(kafka, request.video_id, from_end=True) as results:
        if reporter is not None:
            reporter.accepted(request.video_id, NAMES[request.priority], request.model)
        try:
            split = await execute_split(request, kafka, s3, progress)
        except RunnerError:
            if reporter is not None:
                await reporter.failed(results.assembly)
            raise
        results.assembly.expect_total(split.total_frames)
        if timeout_s is None:
            timeout_s = default_timeout_s(split.total_frames)
        bar = progress("detecting", split.total_frames)

        def on_progress(assembly: Assembly) -> None:
            bar.update(assembly.received)
            if reporter is not None:
                reporter.progressed(assembly)

        on_progress(results.assembly)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await results.wait_complete(on_progress)
        finally:
            bar.close()
    write_document(out, results.assembly.document())
    if reporter is not None:
        await (reporter.completed if results.assembly.complete else reporter.failed)(results.assembly)
    return RunOutcome(results.assembly, time.perf_counter() - started, timeout_s)
