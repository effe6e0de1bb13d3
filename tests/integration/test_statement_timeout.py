"""A statement that runs past the statement timeout is a retryable 503, on
both read paths (SQLAlchemy and Reader.fetch), never a 500."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import pytest
from sqlalchemy import bindparam, func, literal, select, text
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from app.core.db import PreparedRead, Reader
from app.core.errors import DatabaseTimeout, _database_error
from app.core.fifo_gate import FifoGate


async def test_statement_timeout_on_the_sqlalchemy_path_is_503(session: Any) -> None:
    await session.execute(text("SET LOCAL statement_timeout = '20ms'"))
    with pytest.raises(DBAPIError) as caught:
        await session.execute(text("SELECT pg_sleep(2)"))
    request = Request({"type": "http", "method": "GET", "path": "/x", "headers": []})
    response = await _database_error(request, caught.value)
    assert response.status_code == 503
    assert json.loads(response.body)["code"] == "database_timeout"
    assert response.headers["retry-after"] == "1"


async def test_statement_timeout_on_reader_fetch_is_503(session: Any) -> None:
    @asynccontextmanager
    async def shared() -> AsyncIterator[Any]:
        yield await session.connection()

    await session.execute(text("SET LOCAL statement_timeout = '20ms'"))
    with pytest.raises(DatabaseTimeout) as caught:
        await Reader(shared, FifoGate(1), 5.0).fetch(PreparedRead(select(func.pg_sleep(2))), {})
    assert caught.value.status_code == 503 and caught.value.code == "database_timeout"


async def test_prepared_read_binds_named_and_literal_parameters(session: Any) -> None:
    @asynccontextmanager
    async def shared() -> AsyncIterator[Any]:
        yield await session.connection()

    read = PreparedRead(
        select(literal(7).label("fixed"), bindparam("b", type_=None).label("b")).where(
            bindparam("a") > 1
        )
    )
    rows = await Reader(shared, FifoGate(1), 5.0).fetch(read, {"a": 5, "b": "x"})
    assert [dict(row) for row in rows] == [{"fixed": 7, "b": "x"}]
    assert await Reader(shared, FifoGate(1), 5.0).fetch(read, {"a": 0, "b": "x"}) == []
