"""The collector against a real broker: a late duplicate of a video written before a restart
does not pin its partition's commit point."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiokafka import TopicPartition

from inference.config import KafkaSettings
from runner.collector import Collector
from tests.integration.test_runner import committed_offset, frame_result, produce_results, unique_id
from tests.stack import Endpoints
from tests.support import Topics, eventually

IDLE_RELEASE_S = 1.0


async def collect_until(collector: Collector, check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Run `collector` until `check()` holds (failing after a deadline), then stop it cleanly."""
    running = asyncio.create_task(collector.run())
    try:
        await eventually(lambda: _alive_and(running, check), 30, what)
    finally:
        collector.stop()
        await running


async def _alive_and(running: asyncio.Task[None], check: Callable[[], Awaitable[bool]]) -> bool:
    if running.done():
        running.result()  # a collector that ended raises here instead of timing out
        raise AssertionError("the collector stopped by itself")
    return await check()


async def test_a_late_duplicate_of_a_video_written_before_a_restart_does_not_pin_the_commit_point(
    stack: Endpoints, topics: Topics, tmp_path: Path
) -> None:
    """Partition 0: v (complete) at 0-1, written and committed; then v's frame 0 again at 2 and w at 3."""
    bootstrap, tp = stack.bootstrap_servers, TopicPartition(topics.results, 0)
    kafka = KafkaSettings(bootstrap_servers=bootstrap, results_topic=topics.results)
    v, w, group = unique_id("v"), unique_id("w"), unique_id("collector")

    async def committed_is(offset: int) -> bool:
        return await committed_offset(bootstrap, group, tp) == offset

    await produce_results(bootstrap, topics.results, [frame_result(v, 0, 2), frame_result(v, 1, 2)], partition=0)
    first = Collector(kafka, tmp_path, group, idle_release_s=IDLE_RELEASE_S)
    await collect_until(first, lambda: committed_is(2), "v written and committed")
    written = (tmp_path / f"{v}.json").read_bytes()

    await produce_results(bootstrap, topics.results, [frame_result(v, 0, 2), frame_result(w, 0, 1)], partition=0)
    # Restarted, the collector no longer knows v was written: the duplicate opens a buffer that never completes.
    second = Collector(kafka, tmp_path, group, idle_release_s=IDLE_RELEASE_S)
    await collect_until(second, lambda: committed_is(4), "the commit point to pass the late duplicate")
    assert (tmp_path / f"{w}.json").exists()
    assert (tmp_path / f"{v}.json").read_bytes() == written
