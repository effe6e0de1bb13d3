"""The gate in front of the Reader's checkouts (app/core/fifo_gate.py): places
go to waiters in arrival order, never to a newcomer, and none is lost when a
waiter times out or is cancelled."""

from __future__ import annotations

import asyncio
from typing import List, Tuple

import pytest

from app.core.fifo_gate import FifoGate


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_place_given_back_goes_to_the_oldest_waiter_not_a_newcomer() -> None:
    gate = FifoGate(1)
    admitted: List[str] = []

    async def visit(name: str) -> None:
        await gate.enter(timeout=60)
        admitted.append(name)

    await gate.enter(timeout=60)  # the only place
    first = asyncio.ensure_future(visit("first"))
    second = asyncio.ensure_future(visit("second"))
    await _settle()
    assert admitted == []
    gate.leave()
    # A newcomer arriving in the same instant queues behind both waiters.
    newcomer = asyncio.ensure_future(visit("newcomer"))
    await _settle()
    assert admitted == ["first"]
    gate.leave()
    await _settle()
    gate.leave()
    await asyncio.gather(first, second, newcomer)
    assert admitted == ["first", "second", "newcomer"]


async def test_a_wait_past_the_timeout_raises_and_loses_no_place() -> None:
    gate = FifoGate(1)
    await gate.enter(timeout=60)
    with pytest.raises(asyncio.TimeoutError):
        await gate.enter(timeout=0.01)
    gate.leave()
    await asyncio.wait_for(gate.enter(timeout=60), 5)  # the place is free again


async def _full_gate_with_two_waiters() -> Tuple[
    FifoGate, asyncio.Future[None], asyncio.Future[None]
]:
    gate = FifoGate(1)
    await gate.enter(timeout=60)
    first = asyncio.ensure_future(gate.enter(timeout=60))
    second = asyncio.ensure_future(gate.enter(timeout=60))
    await _settle()
    return gate, first, second


async def test_a_cancelled_waiter_is_skipped() -> None:
    gate, gone, later = await _full_gate_with_two_waiters()
    gone.cancel()
    await _settle()
    gate.leave()
    await asyncio.wait_for(later, 5)
    assert gone.cancelled()


async def test_a_waiter_cancelled_after_being_handed_a_place_passes_it_on() -> None:
    gate, handed, next_in_line = await _full_gate_with_two_waiters()
    gate.leave()  # the place goes to `handed`, which has not run yet...
    handed.cancel()  # ...and is cancelled before it does
    await asyncio.wait_for(next_in_line, 5)
    assert handed.cancelled()
