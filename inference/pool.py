"""The detector pool: spawned processes that each load the model once, fed one lane per process.

Each pool process is a lane: a spawned process at the other end of a socket pair that the
event loop reads and writes itself (framing.py). A frame's bytes go into the socket from the
loop, and its answer wakes the loop directly; ProcessPoolExecutor would pass every frame through
a feeder and a manager thread, and each thread wake-up costs CPU the replica's loop needs. A lane
holds at most LANE_DEPTH frames, the one it detects and the next one already in its socket, so a
process never waits for the loop between two frames; with WORKER_BATCH_SIZE over 1, twice the
batch size, a batch running and the next one filling. Every frame has a hard timeout.

A lane whose process dies (segfault, OOM kill, a hung frame we kill) fails the frames it held
and is started again on its own; the other lanes go on. Its frames are retried *exclusively*
(alone in the pool): a frame that kills its process while alone is the culprit and, after its
attempts, gets `inference_failed`; frames that were only collateral damage succeed on their retry.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
import pickle
import socket
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

from inference import detector
from inference.backends import DetectorConfig, ModelTarget
from inference.detector import WARM_MARK, DetectOutput, Entry, Init
from inference.errors import InferenceFailed, ModelUnavailable
from inference.framing import ReplyReader, frame_message
from inference.logs import log_event
from inference.retry import POOL_START_BACKOFF, RetryLog, retry

logger = logging.getLogger(__name__)
LANE_DEPTH = 2
# A lane that has not loaded its model by then is killed and started again.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 10.0
# Queues of waiting frames, one per priority level (priority.py).
PRIORITIES = 3


class PoolCrashed(Exception):
    """The process died (or was killed for a timeout) while this frame was in its lane."""


class LaneFailed(RuntimeError):
    """A pool process could not load the model."""


def _retrieve(future: asyncio.Future[Any]) -> None:
    # A frame whose caller gave up (a timeout, a drain) may still fail with its lane: no warning then.
    if not future.cancelled():
        future.exception()


class _Lane(asyncio.Protocol):
    """One pool process seen from the event loop: its socket and the frames it holds, in order."""

    def __init__(self, process: BaseProcess, on_room: Callable[[], None]) -> None:
        loop = asyncio.get_running_loop()
        self.process = process
        self.pending: deque[asyncio.Future[DetectOutput]] = deque()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.ready.add_done_callback(_retrieve)  # a start that timed out no longer awaits it
        self.closed: asyncio.Future[None] = loop.create_future()
        self._on_room = on_room
        self._transport: asyncio.Transport | None = None
        self._replies = ReplyReader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for ok, value in self._replies.feed(data):
            self._answer(ok, value)

    def _answer(self, ok: bool, value: Any) -> None:
        if not self.ready.done():
            if ok:
                self.ready.set_result(None)
            else:
                self.ready.set_exception(LaneFailed(f"a pool process could not load the model: {value}"))
            return
        future = self.pending.popleft()
        if not future.done():  # else its caller gave up on it (a timeout, a drain)
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._on_room()

    def connection_lost(self, exc: Exception | None) -> None:
        crash = PoolCrashed(f"pool process {self.process.pid} terminated abruptly")
        if not self.ready.done():
            self.ready.set_exception(LaneFailed(f"pool process {self.process.pid} exited while loading the model"))
        while self.pending:
            future = self.pending.popleft()
            if not future.done():
                future.set_exception(crash)
        if not self.closed.done():
            self.closed.set_result(None)

    @property
    def serving(self) -> bool:
        return self.ready.done() and not self.ready.exception() and not self.closed.done()

    def send(self, data: bytes, model: bytes) -> asyncio.Future[DetectOutput]:
        assert self._transport is not None
        future: asyncio.Future[DetectOutput] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_retrieve)
        self.pending.append(future)
        # One write, not several: a header alone would wake an idle process just to wait for the rest.
        self._transport.writelines(frame_message(data, model))
        return future

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def kill(self) -> None:
        self.process.kill()  # a no-op on a process that has already exited


_Placed = asyncio.Future[tuple["_Lane", asyncio.Future[DetectOutput]]]
_Queue = deque[tuple[bytes, bytes, _Placed]]


@functools.lru_cache(maxsize=256)
def _model_part(target: ModelTarget | None) -> bytes:
    """A frame's model as it crosses to the pool process, pickled once per model; nothing for the local one."""
    return b"" if target is None else pickle.dumps(target)


async def _reap(process: BaseProcess, timeout_s: float) -> None:
    """Wait for a process to exit, killing it past the timeout, so that none is left a zombie."""
    await asyncio.to_thread(process.join, timeout_s)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join)


class DetectorPool:
    """Runs `entry` (detector.detect_batch) in `processes` spawned processes that each load the model once."""

    def __init__(
        self,
        config: DetectorConfig,
        processes: int,
        frame_timeout_s: float,
        attempts: int,
        on_restart: Callable[[], None] | None = None,
        init: Init = detector.init_process,
        entry: Entry = detector.detect_batch,
    ) -> None:
        self._config = config
        self._processes = processes
        self._frame_timeout_s = frame_timeout_s
        self._attempts = attempts
        self._init = init
        self._entry = entry
        self._depth = LANE_DEPTH * config.batch_size
        self._lanes: list[_Lane] = []
        self._keepers: list[asyncio.Task[None]] = []
        # One queue per priority (0 first): a high-priority frame overtakes the queued lower ones.
        self._waiting: tuple[_Queue, ...] = tuple(deque() for _ in range(PRIORITIES))
        self._closing = False
        self._shared = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._gate = asyncio.Event()
        self._gate.set()
        self._exclusive = asyncio.Lock()
        self._on_restart = on_restart
        self.restarts = 0
        self.model_load_s = 0.0
        self.loaded = False

    @property
    def processes(self) -> int:
        return self._processes

    def alive_count(self) -> int:
        return sum(1 for lane in self._lanes if lane.serving and lane.process.is_alive())

    def alive(self) -> bool:
        return self.alive_count() > 0

    async def start(self) -> None:
        """Start every lane and wait until each has loaded and warmed up the model."""
        started = time.perf_counter()
        lanes = await asyncio.gather(*(self._start_lane() for _ in range(self._processes)), return_exceptions=True)
        failed = [lane for lane in lanes if isinstance(lane, BaseException)]
        self._lanes = [lane for lane in lanes if isinstance(lane, _Lane)]
        if failed:
            await self.close()
            raise failed[0]
        self._keepers = [asyncio.create_task(self._keep(index)) for index in range(len(self._lanes))]
        self.model_load_s = time.perf_counter() - started
        self.loaded = True

    async def _start_lane(self) -> _Lane:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        # spawn: CUDA cannot be re-initialised in a forked child, and fork copies held locks.
        process = multiprocessing.get_context("spawn").Process(
            target=detector.serve, args=(theirs, self._config, self._init, self._entry)
        )
        try:
            process.start()
        finally:
            theirs.close()  # the child's copy alone keeps its end open: its death reads as EOF here
        _, lane = await loop.connect_accepted_socket(lambda: _Lane(process, self._dispatch), ours)
        try:
            await asyncio.wait_for(asyncio.shield(lane.ready), START_TIMEOUT_S)
        except BaseException as exc:
            lane.kill()
            lane.close()
            await _reap(process, STOP_TIMEOUT_S)
            if isinstance(exc, TimeoutError):
                raise LaneFailed(f"a pool process did not load the model within {START_TIMEOUT_S:.0f}s") from None
            raise
        return lane

    async def _keep(self, index: int) -> None:
        """Start the lane at `index` again whenever its process dies, until the pool closes."""
        while True:
            lane = self._lanes[index]
            await asyncio.shield(lane.closed)  # cancelling the keeper must not cancel the lane's own future
            await _reap(lane.process, STOP_TIMEOUT_S)
            if self._closing:
                return
            self.restarts += 1
            if self._on_restart is not None:
                self._on_restart()
            log_event(logger, logging.WARNING, "pool_replaced", restarts=self.restarts, pid=lane.process.pid,
                      exitcode=lane.process.exitcode)  # fmt: skip
            self._lanes[index] = await self._restarted_lane()
            self._dispatch()

    async def _restarted_lane(self) -> _Lane:
        """A new lane, tried again with backoff for as long as the model does not load."""
        return await retry(
            self._start_lane,
            backoff=POOL_START_BACKOFF,
            log=RetryLog(logger, "pool_process_start_failed", level=logging.ERROR),
            retriable=lambda exc: isinstance(exc, LaneFailed | OSError),
        )

    def _dispatch(self) -> None:
        """Hand waiting frames to the lanes with room, the least loaded first, the highest priority first."""
        while queue := next((queue for queue in self._waiting if queue), None):
            room = [lane for lane in self._lanes if lane.serving and len(lane.pending) < self._depth]
            if not room:
                return
            data, model, placed = queue.popleft()
            if placed.done():  # its caller was cancelled while it waited
                continue
            lane = min(room, key=lambda candidate: len(candidate.pending))
            placed.set_result((lane, lane.send(data, model)))

    async def detect(
        self, data: bytes, target: ModelTarget | None, describe: dict[str, object], priority: int = 1
    ) -> DetectOutput:
        """Detect on one frame with `target` (None: the replica's own model), queued by `priority`
        (0 first); FrameError for bad input, InferenceFailed after the attempts."""
        model = _model_part(target)
        try:
            return await self._run_shared(data, model, priority)
        except PoolCrashed as crash:
            last: Exception = crash
        for attempt in range(2, self._attempts + 1):
            log_event(logger, logging.WARNING, "frame_retry_exclusive", attempt=attempt, **describe)
            try:
                return await self._run_exclusive(data, model)
            except PoolCrashed as crash:
                last = crash
        raise InferenceFailed(f"pool process died on this frame {self._attempts} times: {last}")

    async def warm(self, target: ModelTarget) -> list[DetectOutput]:
        """Load and warm `target` in every serving process, so that no frame waits for its load.

        A process started later loads it on its first frame for it.
        """
        model = _model_part(target)
        answers = [lane.send(b"", WARM_MARK + model) for lane in self._lanes if lane.serving]
        outcomes = await asyncio.wait_for(asyncio.gather(*answers, return_exceptions=True), self._frame_timeout_s)
        # A process that died meanwhile is started again and loads the model on its first frame for it.
        for outcome in outcomes:
            if isinstance(outcome, ModelUnavailable):
                raise outcome
        return [outcome for outcome in outcomes if isinstance(outcome, DetectOutput)]

    async def _run_shared(self, data: bytes, model: bytes, priority: int) -> DetectOutput:
        while not self._gate.is_set():
            await self._gate.wait()
        self._shared += 1
        self._idle.clear()
        try:
            return await self._submit(data, model, priority)
        finally:
            self._shared -= 1
            if self._shared == 0:
                self._idle.set()

    async def _run_exclusive(self, data: bytes, model: bytes) -> DetectOutput:
        async with self._exclusive:
            self._gate.clear()
            try:
                await self._idle.wait()
                return await self._submit(data, model)
            finally:
                self._gate.set()

    async def _submit(self, data: bytes, model: bytes, priority: int = 0) -> DetectOutput:
        if not self.loaded:
            raise RuntimeError("DetectorPool.start() was not awaited")
        placed: _Placed = asyncio.get_running_loop().create_future()
        self._waiting[min(max(priority, 0), PRIORITIES - 1)].append((data, model, placed))
        self._dispatch()
        lane, answer = await placed
        try:
            # The clock starts once the frame is in a lane, so it counts at most one frame before it.
            return await asyncio.wait_for(answer, self._frame_timeout_s)
        except TimeoutError:
            # A hard timeout: the process is still busy on the frame, so only killing it frees the lane.
            lane.kill()
            raise PoolCrashed(f"frame exceeded {self._frame_timeout_s:.0f}s") from None

    async def close(self) -> None:
        """Close every lane (its process exits at the end of its socket) and wait for the processes."""
        self._closing = True
        for keeper in self._keepers:
            keeper.cancel()
        await asyncio.gather(*self._keepers, return_exceptions=True)
        for lane in self._lanes:
            lane.close()
        await asyncio.gather(*(_reap(lane.process, STOP_TIMEOUT_S) for lane in self._lanes))
        for queue in self._waiting:
            for _, _, placed in queue:
                placed.cancel()
            queue.clear()
