"""The exactly-once commit cycle's pure part: which answers may reach a committed transaction."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import KafkaError, OutOfOrderSequenceNumber

from inference import commit


async def test_delivered_raises_the_first_rejection_after_all_settle() -> None:
    loop = asyncio.get_running_loop()
    ok, rejected, late = loop.create_future(), loop.create_future(), loop.create_future()
    ok.set_result(None)
    rejected.set_exception(OutOfOrderSequenceNumber())
    loop.call_soon(late.set_result, None)
    with pytest.raises(KafkaError):
        await commit._delivered([ok, rejected, late])
    assert late.done()


async def test_delivered_returns_when_every_record_is_accepted() -> None:
    loop = asyncio.get_running_loop()
    deliveries = [loop.create_future() for _ in range(3)]
    for i, delivery in enumerate(deliveries):
        loop.call_soon(delivery.set_result, i)
    await commit._delivered(deliveries)
    assert all(d.done() and d.exception() is None for d in deliveries)
