"""The real stack serves what the pipeline needs: keyed topics, groups, transactions, the bucket."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from botocore.exceptions import ClientError

from tests.stack import Endpoints
from tests.support import Topics, consume, produce, s3_session


async def test_keyed_messages_round_trip_and_keep_their_partition(stack: Endpoints, topics: Topics) -> None:
    records = [(f"video-{i % 3}".encode(), f"frame-{i}".encode()) for i in range(30)]
    await produce(stack.bootstrap_servers, topics.tasks, records)
    seen = await consume(stack.bootstrap_servers, topics.tasks, lambda r: len(r) >= 30, timeout_s=30)
    assert sorted((r.key, r.value) for r in seen) == sorted(records)
    partitions_by_key: dict[bytes | None, set[int]] = {}
    for record in seen:
        partitions_by_key.setdefault(record.key, set()).add(record.partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values())


async def test_two_group_members_split_the_six_partitions(stack: Endpoints, topics: Topics) -> None:
    members = [
        AIOKafkaConsumer(topics.tasks, bootstrap_servers=stack.bootstrap_servers, group_id=topics.group)
        for _ in range(2)
    ]
    for member in members:
        await member.start()
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while True:
            await asyncio.gather(*(m.getmany(timeout_ms=100) for m in members))
            assignments = [m.assignment() for m in members]
            if all(len(a) == 3 for a in assignments) or asyncio.get_running_loop().time() > deadline:
                break
        assert [len(a) for a in assignments] == [3, 3]
        assert assignments[0].isdisjoint(assignments[1])
        assert {tp.partition for a in assignments for tp in a} == set(range(6))
    finally:
        for member in members:
            await member.stop()


async def test_read_committed_sees_committed_transactions_only(stack: Endpoints, topics: Topics) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, transactional_id=f"t-{uuid.uuid4()}")
    await producer.start()
    try:
        async with producer.transaction():
            await producer.send_and_wait(topics.results, b"committed", key=b"v")
        await producer.begin_transaction()
        await producer.send_and_wait(topics.results, b"aborted", key=b"v")
        await producer.abort_transaction()
        async with producer.transaction():
            await producer.send_and_wait(topics.results, b"after", key=b"v")
    finally:
        await producer.stop()
    committed = await consume(stack.bootstrap_servers, topics.results, lambda r: len(r) >= 2, timeout_s=30)
    assert [r.value for r in committed] == [b"committed", b"after"]
    everything = await consume(
        stack.bootstrap_servers, topics.results, lambda r: len(r) >= 3, timeout_s=30, read_committed=False
    )
    assert b"aborted" in [r.value for r in everything]


async def test_frames_bucket_put_get_and_missing_object(stack: Endpoints) -> None:
    key = f"stack-test/{uuid.uuid4()}.jpg"
    async with s3_session(stack).client("s3", endpoint_url=stack.s3_endpoint_url) as s3:
        await s3.put_object(Bucket="frames", Key=key, Body=b"\xff\xd8jpeg")
        response = await s3.get_object(Bucket="frames", Key=key)
        async with response["Body"] as body:
            assert await body.read() == b"\xff\xd8jpeg"
        with pytest.raises(ClientError) as missing:
            await s3.get_object(Bucket="frames", Key=f"{key}.missing")
        assert missing.value.response["Error"]["Code"] == "NoSuchKey"
