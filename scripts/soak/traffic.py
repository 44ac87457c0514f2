"""Frames streaming through the pipeline while faults land: a steady task stream, a progress watch.

`TaskStream` produces tasks at a steady pace from a thread of its own until stopped, one video per
task partition so that every partition (and so every worker replica) has work all along.
`ProgressWatch` reads the results as a `read_committed` reader does, from a thread of its own, and
notes when each new one became visible: its longest gap is the longest stall a reader saw.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

# A frozen node answers nothing: a request to it fails after this, and the client moves on.
REQUEST_TIMEOUT_MS = 10000
# After a failover, a client learns the new leaders at the latest this long after its last look.
METADATA_MAX_AGE_MS = 5000


@dataclass
class TaskStream:
    """Tasks for the objects `keys`, one video per partition, `per_second` in all, until stop()."""

    bootstrap: str
    topic: str
    keys: list[str]
    per_second: float
    prefix: str
    partitions: int = 6
    acknowledged: list[tuple[str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name=f"stream-{self.prefix}")
        self._thread.start()

    def stop(self) -> set[tuple[str, int]]:
        """Stop producing; return (video_id, frame_id) of every task the brokers acknowledged."""
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        return set(self.acknowledged)

    @property
    def produced(self) -> int:
        return len(self.acknowledged)

    def task(self, i: int) -> tuple[int, str, int, bytes]:
        """Task number i: its partition, video, frame and record value."""
        partition = i % self.partitions
        video_id, frame_id = f"{self.prefix}-p{partition}", i // self.partitions
        value = orjson.dumps({"video_id": video_id, "frame_id": frame_id, "s3_key": self.keys[i % len(self.keys)]})
        return partition, video_id, frame_id, value

    async def _run(self) -> None:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        await producer.start()
        pending: set[asyncio.Task[None]] = set()
        started, i = time.monotonic(), 0
        try:
            while not self._stop.is_set():
                await asyncio.sleep(max(0.0, started + i / self.per_second - time.monotonic()))
                partition, video_id, frame_id, value = self.task(i)
                sent = await producer.send(self.topic, value, key=video_id.encode(), partition=partition)
                acked = asyncio.create_task(self._acknowledged(sent, video_id, frame_id))
                pending.add(acked)
                acked.add_done_callback(pending.discard)
                i += 1
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    async def _acknowledged(self, sent: asyncio.Future[Any], video_id: str, frame_id: int) -> None:
        try:
            await sent
        except Exception as exc:  # noqa: BLE001 - a task that was not written is reported, not raised here
            self.failures.append(f"{video_id}/{frame_id}: {exc!r}")
        else:
            self.acknowledged.append((video_id, frame_id))


@dataclass
class ProgressWatch:
    """Every committed result of `topic` as it becomes visible, and when."""

    bootstrap: str
    topic: str
    # Only results of videos whose id starts with this (tasks of earlier runs share the topic).
    prefix: str = ""
    # (partition, offset) -> (video_id, frame_id): a record read twice (a fetch position gone
    # back after a failover) is one record.
    records: dict[tuple[int, int], tuple[str, int]] = field(default_factory=dict)
    # When each (video_id, frame_id) was first seen.
    seen_at: dict[tuple[str, int], float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=asyncio.run, args=(self._run(),), name=f"watch-{self.topic}")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()

    def answered(self) -> int:
        """Distinct frames answered so far."""
        return len(self.seen_at)

    def longest_stall(self) -> float:
        """The longest time without a new answer, between the first answer and the last."""
        return self.longest_gap()[0]

    def longest_gap(self) -> tuple[float, float]:
        """The longest stall and when it began (time.monotonic()); (0, 0) before two answers."""
        times = sorted(self.seen_at.values())
        return max(((b - a, a) for a, b in itertools.pairwise(times)), default=(0.0, 0.0))

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            isolation_level="read_committed",
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            metadata_max_age_ms=METADATA_MAX_AGE_MS,
        )
        await consumer.start()
        try:
            while not self._stop.is_set():
                try:
                    batch = await consumer.getmany(timeout_ms=200)
                except Exception as exc:  # noqa: BLE001 - a reader rides out a failover; noted for the report
                    self.errors.append(repr(exc))
                    await asyncio.sleep(0.5)
                    continue
                now = time.monotonic()
                for part in batch.values():
                    for r in part:
                        value = orjson.loads(r.value) if r.value is not None else {}
                        key = (str(value.get("video_id")), int(value.get("frame_id", -1)))
                        if not key[0].startswith(self.prefix):
                            continue
                        self.records[(r.partition, r.offset)] = key
                        self.seen_at.setdefault(key, now)
        finally:
            await consumer.stop()
