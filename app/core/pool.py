"""A connection pool that serves waiters first come, first served.

SQLAlchemy's async pool keeps idle connections in an `asyncio.Queue`. When a
connection comes back, the queue wakes the oldest waiter but leaves the
connection in the queue until that waiter runs; a request arriving in between
takes it, and the woken waiter goes to the *back* of the line. Under a steady
overload (more concurrent requests than connections) some requests lose that
race again and again until `pool_timeout`: a p50 of 100 ms next to a p99 of
seconds, and spurious 503s (sqlalchemy#7679, asyncpg#1247).

Here a returned connection is handed straight to the oldest live waiter, so it
never sits where a newcomer can take it. A waiter that gives up (timeout or
cancellation) after being handed a connection passes it on, so nothing leaks.
A timed-out waiter's future fails, so it is skipped like a cancelled one.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Deque, Optional

from sqlalchemy.pool import AsyncAdaptedQueuePool
from sqlalchemy.util.queue import AsyncAdaptedQueue, Empty


class FairAsyncQueue(AsyncAdaptedQueue[Any]):
    def __init__(self, maxsize: int = 0, use_lifo: bool = False) -> None:
        super().__init__(maxsize, use_lifo)
        self._waiters: Deque[asyncio.Future[Any]] = deque()

    def put_nowait(self, item: Any) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(item)
                return
        super().put_nowait(item)

    def put(self, item: Any, block: bool = True, timeout: Optional[float] = None) -> None:
        self.put_nowait(item)  # the pool only ever puts without blocking

    def get(self, block: bool = True, timeout: Optional[float] = None) -> Any:
        # Invariant: while anyone waits, idle connections are not in the queue.
        try:
            return self._queue.get_nowait()
        except asyncio.QueueEmpty:
            if not block:
                raise Empty() from None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        return self.await_(self._wait(waiter, timeout))

    async def _wait(self, waiter: asyncio.Future[Any], timeout: Optional[float]) -> Any:
        # A timer, not wait_for(shield(...)): those add two callback hops (loop
        # iterations under load) between the hand-off and the waiter running,
        # while the handed connection sits idle.
        expiry = None
        if timeout is not None:
            expiry = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
        try:
            return await waiter
        except _Expired:
            raise Empty() from None
        except asyncio.CancelledError:
            self._give_up(waiter)
            raise
        finally:
            if expiry is not None:
                expiry.cancel()

    def _give_up(self, waiter: asyncio.Future[Any]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.put_nowait(waiter.result())  # handed to us too late: pass it on
        else:
            waiter.cancel()


class _Expired(Exception):
    """The pool timeout passed before a connection was handed over."""


def _expire(waiter: asyncio.Future[Any]) -> None:
    if not waiter.done():  # a handed-over connection wins over the timer
        waiter.set_exception(_Expired())


class FairAsyncQueuePool(AsyncAdaptedQueuePool):
    _queue_class = FairAsyncQueue
