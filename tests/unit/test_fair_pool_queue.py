"""The hand-off rules of the fair pool queue (app/core/pool.py)."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.util.queue import Empty

from app.core.pool import FairAsyncQueue


async def test_a_returned_item_goes_to_the_oldest_live_waiter() -> None:
    queue = FairAsyncQueue(maxsize=2)
    loop = asyncio.get_running_loop()
    gone, oldest, younger = loop.create_future(), loop.create_future(), loop.create_future()
    gone.cancel()
    queue._waiters.extend([gone, oldest, younger])
    queue.put_nowait("conn")
    assert oldest.result() == "conn"
    assert not younger.done()
    assert queue.qsize() == 0  # never parked where a newcomer could take it


async def test_with_no_waiters_the_item_is_queued() -> None:
    queue = FairAsyncQueue(maxsize=2)
    queue.put_nowait("conn")
    assert queue.get(block=False) == "conn"


async def test_a_waiter_giving_up_after_the_handoff_passes_the_item_on() -> None:
    queue = FairAsyncQueue(maxsize=2)
    loop = asyncio.get_running_loop()
    first, second = loop.create_future(), loop.create_future()
    queue._waiters.extend([first, second])
    queue.put_nowait("conn")
    queue._give_up(first)
    assert second.result() == "conn"


async def test_a_waiter_giving_up_before_the_handoff_is_skipped() -> None:
    queue = FairAsyncQueue(maxsize=2)
    loop = asyncio.get_running_loop()
    first = loop.create_future()
    queue._waiters.append(first)
    queue._give_up(first)
    assert first.cancelled()
    queue.put_nowait("conn")
    assert queue.get(block=False) == "conn"


async def test_a_timed_out_wait_leaves_no_waiter_behind() -> None:
    queue = FairAsyncQueue(maxsize=2)
    waiter = asyncio.get_running_loop().create_future()
    queue._waiters.append(waiter)
    with pytest.raises(Empty):
        await queue._wait(waiter, 0.01)
    assert waiter.done()  # a later hand-off skips it
    queue.put_nowait("conn")
    assert queue.get(block=False) == "conn"
