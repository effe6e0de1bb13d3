from __future__ import annotations

import asyncio
from typing import Any, List

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import TimeoutError

from app.core.db import build_engine


async def test_idle_connection_killed_by_server_is_replaced_at_checkout(settings: Any) -> None:
    engine = build_engine(settings.model_copy(update={"db_pre_ping_idle_seconds": 0}))
    try:
        async with engine.connect() as conn:
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        admin = build_engine(settings)
        try:
            async with admin.connect() as admin_conn:
                await admin_conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        finally:
            await admin.dispose()
        async with engine.connect() as conn:
            new_pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert new_pid != pid
    finally:
        await engine.dispose()


async def test_recently_used_connection_is_not_pinged(settings: Any) -> None:
    engine = build_engine(settings.model_copy(update={"db_pre_ping_idle_seconds": 60}))
    statements = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        event.listen(engine.sync_engine, "before_cursor_execute", record)
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 2"))
        assert statements == ["SELECT 2"]
    finally:
        await engine.dispose()


def _small_pool(settings: Any, size: int = 1, overflow: int = 0, timeout: float = 5.0) -> Any:
    return build_engine(
        settings.model_copy(
            update={"db_pool_size": size, "db_max_overflow": overflow, "db_pool_timeout": timeout}
        )
    )


async def test_waiters_get_connections_in_arrival_order_even_against_a_barging_caller(
    settings: Any,
) -> None:
    """The stock asyncio pool lets a caller that asks right after a release jump
    the line; here the waiters that were already queued go first."""
    engine = _small_pool(settings)
    order: List[str] = []

    async def waiter(name: str) -> None:
        async with engine.connect() as conn:
            order.append(name)
            await conn.execute(text("SELECT 1"))

    try:
        holder = await engine.connect()
        waiters = []
        for name in ("w1", "w2", "w3"):
            waiters.append(asyncio.ensure_future(waiter(name)))
            await asyncio.sleep(0.05)  # queue them in a known order
        await holder.close()
        # Ask again at once, before any woken waiter has run.
        async with engine.connect():
            order.append("barger")
        await asyncio.gather(*waiters)
        assert order == ["w1", "w2", "w3", "barger"]
    finally:
        await engine.dispose()


async def test_a_waiter_that_times_out_leaks_nothing(settings: Any) -> None:
    engine = _small_pool(settings, timeout=0.2)
    try:
        holder = await engine.connect()
        with pytest.raises(TimeoutError):
            await engine.connect()
        await holder.close()
        assert engine.pool.checkedout() == 0
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 7"))).scalar_one() == 7
    finally:
        await engine.dispose()


async def test_a_waiter_cancelled_after_the_handoff_passes_the_connection_on(
    settings: Any,
) -> None:
    engine = _small_pool(settings, timeout=2)
    try:
        holder = await engine.connect()
        first = asyncio.ensure_future(engine.connect())
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(engine.connect())
        await asyncio.sleep(0.05)
        await holder.close()  # hands the connection to `first`...
        first.cancel()  # ...which gives up before it runs
        (outcome,) = await asyncio.gather(first, return_exceptions=True)
        if not isinstance(outcome, asyncio.CancelledError):
            # Python < 3.12: wait_for may swallow a cancel that races a result;
            # then `first` owns the connection and returns it like any caller.
            await outcome.close()
        conn = await asyncio.wait_for(second, timeout=1)
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
        await conn.close()
        assert engine.pool.checkedout() == 0
    finally:
        await engine.dispose()


async def test_overflow_connections_are_closed_on_return(settings: Any) -> None:
    engine = _small_pool(settings, size=1, overflow=1)
    try:
        first, second = await engine.connect(), await engine.connect()
        assert engine.pool.checkedout() == 2
        await first.close()
        await second.close()
        assert engine.pool.checkedout() == 0
        assert engine.pool.checkedin() == 1  # the overflow one was closed
    finally:
        await engine.dispose()
