"""Routing: the model each task runs on, ready in the pool before the first frame goes to it.

A task names `name` (the name's current version), `name@version` (pinned), or nothing (the
replica's own MODEL_PATH, version "local"). Routing a registry model makes it runnable here
once per checksum: weights downloaded and verified (weights.py), exported for the backend
(backends.py, in a short-lived spawned process, since exporting needs torch), then loaded by
each pool process on its first frame for it.

Rollout: the version frames of a name are routed to moves only after the new version is ready
and warmed in every pool process; frames routed before finish on theirs. A version that cannot
be made ready is remembered as failed for a while, so that its frames fail fast instead of
each downloading or loading it again.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from inference.backends import Backend, ModelTarget, prepare_target, prepared_target
from inference.detector import DetectOutput
from inference.errors import ModelNotFound, ModelUnavailable
from inference.logs import log_event
from inference.messages import ModelInfo, ModelRecord
from inference.metrics import Metrics
from inference.registry import ModelRegistry
from inference.weights import WeightsCache

logger = logging.getLogger(__name__)
# How long a version that failed to become ready fails its frames before it is tried again.
FAILURE_MEMORY_S = 30.0

Warm = Callable[[ModelTarget], Awaitable[list[DetectOutput]]]


@dataclass(frozen=True)
class Routed:
    """The model one frame runs on: what its result reports, and what the pool loads (None: local)."""

    info: ModelInfo
    target: ModelTarget | None

    @property
    def ref(self) -> str:
        return f"{self.info.name}@{self.info.version}"


class ModelRouter:
    """Resolves a task's model reference to a ready model; follows rollouts announced by the registry."""

    def __init__(
        self,
        registry: ModelRegistry,
        weights: WeightsCache,
        warm: Warm,
        backend: Backend,
        local: ModelInfo,
        metrics: Metrics,
    ) -> None:
        self._registry = registry
        self._weights = weights
        self._warm = warm
        self._backend = backend
        self._metrics = metrics
        self.local = Routed(local, None)
        # Per name, the version unpinned frames go to; set on first use, moved by rollouts.
        self._routed: dict[str, ModelRecord] = {}
        self._ready: dict[tuple[str, str, int | None], asyncio.Task[ModelTarget]] = {}
        self._failed: dict[str, tuple[float, str]] = {}
        self._rollouts: dict[str, asyncio.Task[None]] = {}

    async def route(self, reference: str | None) -> Routed:
        """The ready model for a task's `model` field; ModelNotFound or ModelUnavailable when there is none."""
        if reference is None:
            return self.local
        name, _, version = reference.partition("@")
        record = await (self._pinned(name, version) if version else self._current(name))
        target = await self.ready(record)
        return Routed(self.info(record), target)

    def info(self, record: ModelRecord) -> ModelInfo:
        local = self.local.info
        return ModelInfo(name=record.name, conf=local.conf, iou=local.iou, version=record.version, sha256=record.sha256)

    async def _current(self, name: str) -> ModelRecord:
        record = self._routed.get(name) or self._registry.latest(name)
        # Published just before the task, perhaps: read the registry up to now before saying no.
        if record is None and await self._registry.catch_up():
            record = self._registry.latest(name)
        if record is None:
            raise ModelNotFound(f"no model named {name!r} is registered")
        return self._routed.setdefault(name, record)

    async def _pinned(self, name: str, version: str) -> ModelRecord:
        record = self._registry.version(name, version)
        if record is None and await self._registry.catch_up():
            record = self._registry.version(name, version)
        # A version compacted out of the topic is still served while its weights are in the bucket.
        if record is None and self._registry.latest(name) is not None:
            record = await self._weights.manifest(name, version)
        if record is None:
            raise ModelNotFound(f"no version {version!r} of model {name!r} is registered")
        return record

    async def ready(self, record: ModelRecord) -> ModelTarget:
        """`record` as the pool runs it: downloaded, verified and exported once per object, checksum and imgsz.

        The object counts, not the checksum alone: a record naming an object that is gone fails on
        every replica alike, whether or not one of them holds the same bytes from another record.
        """
        failed = self._failed.get(record.ref)
        if failed is not None:
            if time.monotonic() - failed[0] < FAILURE_MEMORY_S:
                raise ModelUnavailable(failed[1])
            del self._failed[record.ref]
        key = (record.uri, record.sha256, record.imgsz)
        task = self._ready.get(key)
        if task is None or (task.done() and task.exception() is not None):
            task = self._ready[key] = asyncio.create_task(self._prepare(record))
        try:
            # Shielded: a frame that gives up must not cancel the preparation others wait on.
            return await asyncio.shield(task)
        except ModelUnavailable as exc:
            self.unavailable(record.ref, exc)
            raise

    def unavailable(self, ref: str, exc: ModelUnavailable) -> None:
        """Remember that `ref` cannot serve, so that its next frames fail without trying again."""
        if ref not in self._failed:
            log_event(logger, logging.ERROR, "model_unavailable", model=ref, error=str(exc)[:300])
        self._failed[ref] = (time.monotonic(), str(exc))

    async def _prepare(self, record: ModelRecord) -> ModelTarget:
        weights = await self._weights.local_file(record)
        label = record.ref
        target = prepared_target(weights, self._backend, record.imgsz, label)
        if target is None:
            target = await _in_helper_process(weights, self._backend, record.imgsz, label)
        return target

    def on_change(self, name: str, record: ModelRecord | None) -> None:
        """The registry's news: a name's current version changed, or the name was retired."""
        if name not in self._routed:
            return  # not used here yet: its first frame routes to whatever is current then
        if record is None:
            del self._routed[name]
            return
        previous = self._rollouts.get(name)
        if previous is not None:
            previous.cancel()  # a newer version supersedes a rollout still under way
        self._rollouts[name] = asyncio.create_task(self._roll_out(record))

    async def _roll_out(self, record: ModelRecord) -> None:
        started = time.perf_counter()
        fields: dict[str, object] = {"model": record.name, "version": record.version}
        try:
            target = await self.ready(record)
            for output in await self._warm(target):
                self.loaded(Routed(self.info(record), target), output)
        except ModelUnavailable as exc:
            # The registry says this is the current version: its frames get the defined error.
            self.unavailable(record.ref, exc)
        except Exception as exc:  # noqa: BLE001 - a rollout's failure must never end the replica
            log_event(logger, logging.ERROR, "model_rollout_failed", error=str(exc)[:300], exc_info=True, **fields)
        if record.name in self._routed:
            previous = self._routed[record.name]
            self._routed[record.name] = record
            log_event(logger, logging.INFO, "model_rolled_out", previous=previous.version,
                      seconds=round(time.perf_counter() - started, 2), **fields)  # fmt: skip

    def loaded(self, routed: Routed, output: DetectOutput) -> None:
        """Count a model load (and what it evicted) reported by a pool process."""
        if output.load_ms <= 0:
            return
        info = routed.info
        self._metrics.model_loads.labels(model=info.name, version=info.version or "").inc()
        self._metrics.model_load_duration.observe(output.load_ms / 1000)
        self._metrics.model_evictions.inc(len(output.evicted))
        log_event(logger, logging.INFO, "model_loaded_in_pool", model=info.name, version=info.version,
                  ms=round(output.load_ms, 1), evicted=list(output.evicted))  # fmt: skip

    def close(self) -> None:
        for rollout in self._rollouts.values():
            rollout.cancel()
        for task in self._ready.values():
            task.cancel()


async def _in_helper_process(weights: Path, backend: Backend, imgsz: int | None, label: str) -> ModelTarget:
    """Export (and read the checkpoint's imgsz) in a spawned process: torch never enters the replica's."""
    loop = asyncio.get_running_loop()
    helper = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    try:
        return await loop.run_in_executor(helper, prepare_target, str(weights), backend, imgsz, label)
    except Exception as exc:  # noqa: BLE001 - weights that cannot be read or exported are the model's failure
        raise ModelUnavailable(f"model {label} cannot be prepared: {type(exc).__name__}: {exc}"[:500]) from None
    finally:
        # Never waits: the event loop must not block on a helper still exporting for a cancelled caller.
        helper.shutdown(wait=False, cancel_futures=True)
