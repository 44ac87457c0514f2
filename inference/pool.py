"""The process pool around detector.py: spawn, per-frame hard timeout, crash recovery.

A pool process that dies (segfault, OOM kill, a hung frame we kill) breaks the whole
ProcessPoolExecutor; every frame in it then fails with BrokenProcessPool. We replace
the pool and retry those frames *exclusively* (alone in the pool): a frame that
crashes the pool while alone is the culprit and, after its attempts, gets
`inference_failed`; frames that were only collateral damage succeed on their retry.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from inference import detector
from inference.detector import DetectorConfig, DetectOutput
from inference.errors import FrameError, InferenceFailed
from inference.logs import log_event

logger = logging.getLogger(__name__)


class PoolCrashed(Exception):
    """The pool died (or was killed for a timeout) while this frame was in it."""


class DetectorPool:
    """Runs `detector.detect` in `processes` spawned processes that each load the model once."""

    def __init__(
        self,
        config: DetectorConfig,
        processes: int,
        frame_timeout_s: float,
        attempts: int,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        self._config = config
        self._processes = processes
        self._frame_timeout_s = frame_timeout_s
        self._attempts = attempts
        self._executor: ProcessPoolExecutor | None = None
        self._generation = 0
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
        executor = self._executor
        # ProcessPoolExecutor keeps no public list of its processes; this private map is stable since 3.8.
        procs = (getattr(executor, "_processes", None) or {}) if executor is not None else {}
        return sum(1 for p in procs.values() if p.is_alive())

    def alive(self) -> bool:
        return self.alive_count() > 0

    async def start(self) -> None:
        """Create the pool and wait until every process has loaded and warmed up the model."""
        started = time.perf_counter()
        self._executor = self._new_executor()
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._executor, os.getpid) for _ in range(self._processes)))
        self.model_load_s = time.perf_counter() - started
        self.loaded = True

    def _new_executor(self) -> ProcessPoolExecutor:
        # spawn: CUDA cannot be re-initialised in a forked child, and fork copies held locks.
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=detector.init_process,
            initargs=(self._config,),
        )

    async def detect(self, data: bytes, describe: dict[str, object]) -> DetectOutput:
        """Detect on one frame; FrameError for bad input, InferenceFailed after the attempts."""
        try:
            return await self._run_shared(data)
        except PoolCrashed as crash:
            last: Exception = crash
        for attempt in range(2, self._attempts + 1):
            log_event(logger, logging.WARNING, "frame_retry_exclusive", attempt=attempt, **describe)
            try:
                return await self._run_exclusive(data)
            except PoolCrashed as crash:
                last = crash
        raise InferenceFailed(f"pool process died on this frame {self._attempts} times: {last}")

    async def _run_shared(self, data: bytes) -> DetectOutput:
        while not self._gate.is_set():
            await self._gate.wait()
        self._shared += 1
        self._idle.clear()
        try:
            return await self._submit(data)
        finally:
            self._shared -= 1
            if self._shared == 0:
                self._idle.set()

    async def _run_exclusive(self, data: bytes) -> DetectOutput:
        async with self._exclusive:
            self._gate.clear()
            try:
                await self._idle.wait()
                return await self._submit(data)
            finally:
                self._gate.set()

    async def _submit(self, data: bytes) -> DetectOutput:
        executor = self._executor
        if executor is None:
            raise RuntimeError("DetectorPool.start() was not awaited")
        generation = self._generation
        try:
            future = asyncio.wrap_future(executor.submit(detector.detect, data))
            return await asyncio.wait_for(future, self._frame_timeout_s)
        except FrameError:
            raise
        except TimeoutError:
            # A hard timeout: the process is still busy on the frame, so only killing it frees the slot.
            self._replace(generation, kill=True)
            raise PoolCrashed(f"frame exceeded {self._frame_timeout_s:.0f}s") from None
        except BrokenProcessPool as exc:
            self._replace(generation, kill=False)
            raise PoolCrashed(str(exc) or "a pool process terminated abruptly") from None

    def _replace(self, generation: int, kill: bool) -> None:
        """Swap in a fresh pool once per failure, however many frames noticed it."""
        if generation != self._generation or self._executor is None:
            return
        old = self._executor
        self._generation += 1
        self.restarts += 1
        if self._on_restart is not None:
            self._on_restart()
        if kill:
            for proc in list((getattr(old, "_processes", None) or {}).values()):
                proc.kill()
        old.shutdown(wait=False, cancel_futures=True)
        self._executor = self._new_executor()
        log_event(logger, logging.WARNING, "pool_replaced", restarts=self.restarts, killed=kill)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
