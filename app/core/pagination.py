"""The list contract: `limit` (1-100, default 50), `offset`, and a page body."""

from __future__ import annotations

from typing import Any, Callable, Generic, List, Optional, Tuple, TypeVar, Union

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Reader

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_OFFSET = 1_000_000


class PageParams(BaseModel):
    limit: int = DEFAULT_LIMIT
    offset: int = 0


# async: FastAPI runs a plain `def` dependency in its thread pool, a costly hop for nothing.
async def page_params(
    limit: int = Query(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


def plain_page(query_string: bytes) -> Optional[Tuple[int, int]]:
    """(limit, offset) when the query string is nothing but in-range
    `limit`/`offset` digits, each at most once; None for anything else (a
    fast path then leaves the request to `page_params` and its errors)."""
    limit, offset = DEFAULT_LIMIT, 0
    seen = set()
    for part in query_string.split(b"&") if query_string else ():
        name, _, value = part.partition(b"=")
        if name in seen or not value.isdigit() or len(value) > 7:
            return None
        seen.add(name)
        if name == b"limit":
            limit = int(value)
        elif name == b"offset":
            offset = int(value)
        else:
            return None
    if 1 <= limit <= MAX_LIMIT and offset <= MAX_OFFSET:
        return limit, offset
    return None


class Page(BaseModel, Generic[T]):
    items: List[T]
    total: int
    limit: int
    offset: int


class PageQuery:
    """An ordered select, prepared once for paging.

    `rows` adds the total as a window count and takes `limit`/`offset` as
    bound parameters; `count` is the fallback for a page past the end. Keep
    one per list at module level: a request then reuses SQLAlchemy's memoized
    cache key and compiled SQL instead of rebuilding and re-hashing the
    statement (half the cost of a small read). `build` runs on first use, when
    every model is mapped.
    """

    def __init__(self, build: Callable[[], Select]) -> None:
        self._build = build
        self._statements: Optional[Tuple[Select, Select]] = None

    def statements(self) -> Tuple[Select, Select]:
        if self._statements is None:
            stmt = self._build()
            rows = (
                stmt.add_columns(func.count().over().label("_total"))
                .limit(bindparam("limit"))
                .offset(bindparam("offset"))
            )
            count = select(func.count()).select_from(stmt.order_by(None).subquery())
            self._statements = (rows, count)
        return self._statements


async def fetch_page(
    session: Union[AsyncSession, Reader],
    query: PageQuery,
    *,
    limit: int,
    offset: int,
    entities: bool = True,
) -> Tuple[List[Any], int]:
    """One page of `query` and the total row count.

    The total rides along as a window count, so a page costs one round trip;
    only a page past the end (no rows to carry it) needs a separate count.
    `entities=True` (a `select(Model)`) returns the objects; `False` (a select
    of columns) returns each row as a dict of its columns.
    """
    rows_stmt, count_stmt = query.statements()
    rows = (await session.execute(rows_stmt, {"limit": limit, "offset": offset})).all()
    if rows:
        if entities:
            items: List[Any] = [row[0] for row in rows]
        else:
            names = list(rows[0]._fields[:-1])
            items = [dict(zip(names, row)) for row in rows]
        return items, int(rows[0][-1])
    return [], int((await session.execute(count_stmt)).scalar_one())
