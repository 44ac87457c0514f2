"""The soak's verdict: once the group has committed every task, each has exactly one committed result.

Results are read with `read_committed` and counted by partition and offset: a record read twice
(a fetch position gone back after a failover) is one record, and an answer given twice is a
second record at an offset of its own.
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass

import orjson


@dataclass(frozen=True)
class Verdict:
    tasks: int
    results: int
    missing: int
    duplicates: int


async def uncommitted(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    """Tasks on `topic` past the group's committed offsets, over all partitions."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        end = await consumer.end_offsets(tps)
        return sum([end[tp] - (await consumer.committed(tp) or 0) for tp in tps])
    finally:
        await consumer.stop()


def all_committed(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """True once the group has committed every task on `topic` (so no late answer can follow)."""
    try:
        return asyncio.run(uncommitted(bootstrap, group, topic, partitions)) == 0
    except Exception:  # noqa: BLE001 - just after a failover a reader can fail to bootstrap: "not yet"
        return False


async def read_results(bootstrap: str, topic: str, timeout_s: float = 120.0) -> dict[tuple[int, int], tuple[str, int]]:
    """(video_id, frame_id) of every committed result of `topic`, by (partition, offset)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False,
        isolation_level="read_committed",
    )  # fmt: skip
    await consumer.start()
    found: dict[tuple[int, int], tuple[str, int]] = {}
    try:
        end = await consumer.end_offsets(list(consumer.assignment()))
        deadline = time.monotonic() + timeout_s
        while any([await consumer.position(tp) < offset for tp, offset in end.items()]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end in {timeout_s:.0f}s")
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    value = orjson.loads(r.value) if r.value is not None else {}
                    found[(r.partition, r.offset)] = (str(value.get("video_id")), int(value.get("frame_id", -1)))
    finally:
        await consumer.stop()
    return found


def judge(expected: set[tuple[str, int]], results: dict[tuple[int, int], tuple[str, int]]) -> Verdict:
    counts = collections.Counter(results.values())
    duplicates = sum(n - 1 for n in counts.values())
    return Verdict(len(expected), sum(counts.values()), len(expected - set(counts)), duplicates)
