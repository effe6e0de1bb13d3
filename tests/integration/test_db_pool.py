from __future__ import annotations

from typing import Any

from sqlalchemy import event, text

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
