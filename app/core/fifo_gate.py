"""A first-come, first-served gate in front of the Reader's pool checkouts.

Why: SQLAlchemy's async pool hands a returned connection to whichever
coroutine asks next, not to the one that waited longest, so with more
concurrent reads than connections some requests lose that race again and
again (a p99 of seconds, and stray 503s from the pool timeout: bench/README.md).
The gate admits in arrival order; a place given back goes straight to the
oldest waiter. It has as many places as the pool keeps connections
(`DB_POOL_SIZE`, not the overflow): the pool closes an overflow connection
when it comes back, so reads kept above that size would open a new
PostgreSQL connection (a new backend) again and again under steady load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Deque


class FifoGate:
    """`await enter(timeout)` before the checkout, `leave()` after the
    connection went back. A wait longer than `timeout` raises
    asyncio.TimeoutError, as the pool's own wait would."""

    def __init__(self, places: int) -> None:
        self._free = places
        self._waiters: Deque[asyncio.Future[None]] = deque()

    async def enter(self, timeout: float) -> None:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        expiry = loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except BaseException:  # timed out or cancelled: re-raised below
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self.leave()  # handed a place, then cancelled: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            expiry.cancel()

    def leave(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():  # one that timed out or was cancelled is skipped
                waiter.set_result(None)
                return
        self._free += 1


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(asyncio.TimeoutError())
