"""The detector pool with real spawned processes: routing, crashes, hangs, errors, cancellation."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import AsyncIterator

import pytest

from inference.backends import DetectorConfig, ModelTarget
from inference.detector import DetectOutput
from inference.errors import InferenceFailed, InvalidImage
from inference.pool import DetectorPool, LaneFailed
from tests import fake_detector
from tests.support import eventually


def config(model_path: str = "unused", batch_size: int = 1) -> DetectorConfig:
    return DetectorConfig(model_path, "onnx", "cpu", 32, 0.25, 0.45, 1, 10**6, batch_size=batch_size, batch_wait_s=30.0)


def pool_of(processes: int, frame_timeout_s: float = 30.0, attempts: int = 2) -> DetectorPool:
    return DetectorPool(config(), processes, frame_timeout_s, attempts, on_restart=None,
                        init=fake_detector.init, entry=fake_detector.detect_batch)  # fmt: skip


@pytest.fixture
async def two() -> AsyncIterator[DetectorPool]:
    pool = pool_of(2, frame_timeout_s=2.0)
    await pool.start()
    yield pool
    await pool.close()


async def test_every_answer_reaches_its_own_frame_across_both_processes(two: DetectorPool) -> None:
    frames = [b"x" * (i + 1) for i in range(60)] + [b"y" * 5_000_000]
    outputs = await asyncio.gather(*(two.detect(frame, None, {}) for frame in frames))
    assert [o.width for o in outputs] == [len(frame) for frame in frames]
    assert len({o.height for o in outputs}) == 2, "both processes answered"
    assert two.alive_count() == 2


async def test_a_frame_that_kills_its_process_fails_alone_and_the_process_comes_back(two: DetectorPool) -> None:
    others = (two.detect(b"ok%d" % i, None, {}) for i in range(20))
    results = await asyncio.gather(two.detect(b"crash", None, {}), *others, return_exceptions=True)
    assert isinstance(results[0], InferenceFailed)
    assert all(isinstance(r, DetectOutput) and r.width == len(b"ok%d" % i) for i, r in enumerate(results[1:]))
    assert two.restarts == 2, "one death per attempt"

    async def both_alive() -> bool:
        return two.alive_count() == 2

    await eventually(both_alive, 60, "the replaced process")
    assert (await two.detect(b"after", None, {})).width == 5


async def test_a_hung_frame_is_killed_at_its_timeout_and_the_others_pass(two: DetectorPool) -> None:
    results = await asyncio.gather(two.detect(b"hang", None, {}), *(two.detect(b"ok", None, {}) for _ in range(6)),
                                   return_exceptions=True)  # fmt: skip
    assert isinstance(results[0], InferenceFailed)
    assert "exceeded" in str(results[0])
    assert all(isinstance(r, DetectOutput) for r in results[1:])


async def test_errors_raised_in_the_process_come_back_as_they_were(two: DetectorPool) -> None:
    with pytest.raises(InvalidImage, match="not an image"):
        await two.detect(b"invalid", None, {})
    with pytest.raises(ValueError, match="a bug"):
        await two.detect(b"bug", None, {})
    assert two.restarts == 0


async def test_a_cancelled_frame_leaves_its_lane_in_step(two: DetectorPool) -> None:
    slow = [asyncio.create_task(two.detect(b"slow", None, {})) for _ in range(4)]
    await asyncio.sleep(0)  # one turn of the loop: each task places its frame in a lane (two each)
    for task in slow:
        task.cancel()
    outputs = await asyncio.gather(*(two.detect(b"z" * n, None, {}) for n in range(1, 9)))
    assert [o.width for o in outputs] == list(range(1, 9))


async def test_a_model_that_does_not_load_fails_the_start_and_leaves_no_process() -> None:
    pool = DetectorPool(config(fake_detector.BROKEN_MODEL), 2, 30.0, 2, init=fake_detector.init,
                        entry=fake_detector.detect_batch)  # fmt: skip
    with pytest.raises(LaneFailed, match="no model at 'broken'"):
        await pool.start()
    assert multiprocessing.active_children() == []


async def test_a_warmed_model_is_loaded_in_every_process_and_again_in_a_replacement(two: DetectorPool) -> None:
    target = ModelTarget("/cache/shapes-2.onnx", 320, "shapes@2")
    warmed = await two.warm(target)
    assert len({o.height for o in warmed}) == 2 and all(o.load_ms > 0 for o in warmed)
    assert all(o.load_ms == 0 for o in await asyncio.gather(*(two.detect(b"f", target, {}) for _ in range(8))))
    with pytest.raises(InferenceFailed):
        await two.detect(b"crash", target, {})
    await eventually(lambda: _true(two.alive_count() == 2), 60, "the crashed process replaced")
    outputs = await asyncio.gather(*(two.detect(b"f", target, {}) for _ in range(8)))
    replaced = two.restarts  # the crashing frame's exclusive retry takes the other process down too
    assert replaced >= 1
    assert sum(1 for o in outputs if o.load_ms > 0) == replaced, "each replacement loads the model on its first frame"


async def test_frames_waiting_for_a_process_run_as_one_batch_and_a_bad_one_fails_alone() -> None:
    pool = DetectorPool(config(batch_size=4), 1, 60.0, 2, init=fake_detector.init, entry=fake_detector.detect_batch)
    await pool.start()
    try:
        # Eight frames at once: the lane holds two batches, and a batch is taken as soon as it is full.
        frames = [b"f" * (i + 1) for i in range(7)] + [b"invalid"]
        results = await asyncio.gather(*(pool.detect(frame, None, {}) for frame in frames), return_exceptions=True)
    finally:
        await pool.close()
    assert [r.width for r in results[:7] if isinstance(r, DetectOutput)] == list(range(1, 8))
    assert [r.detect_ms for r in results[:7] if isinstance(r, DetectOutput)] == [4.0] * 7, "two full batches of 4"
    assert isinstance(results[7], InvalidImage)


async def _true(value: bool) -> bool:
    return value


async def test_close_ends_every_process(two: DetectorPool) -> None:
    await two.detect(b"ok", None, {})
    await two.close()
    assert two.alive_count() == 0
    assert multiprocessing.active_children() == []
