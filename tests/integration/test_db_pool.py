from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import TimeoutError

from app.core.db import Database, PreparedRead, build_engine


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


async def test_reads_above_the_pool_size_open_no_connection_per_read(settings: Any) -> None:
    # More concurrent reads than the pool keeps connections: they wait at the
    # Reader's gate instead of opening overflow connections, which the pool
    # would close on return (a new PostgreSQL backend per read under load).
    engine = _small_pool(settings, size=2, overflow=3)
    database = Database()
    database.configure(engine)
    opened = []
    event.listen(engine.sync_engine, "connect", lambda *args: opened.append(1))
    slow_read = PreparedRead(select(func.pg_sleep(0.02)))
    try:
        for _ in range(3):
            await asyncio.gather(*(database.reader.fetch(slow_read, {}) for _ in range(10)))
        assert len(opened) == 2
        assert engine.pool.checkedin() == 2
    finally:
        await engine.dispose()
