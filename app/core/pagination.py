"""The list contract: `limit` (1-100, default 50), `offset`, and a page body."""

from __future__ import annotations

from typing import Any, Generic, List, Tuple, TypeVar, Union

from fastapi import Query
from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import Reader

T = TypeVar("T")

MAX_LIMIT = 100
MAX_OFFSET = 1_000_000


class PageParams(BaseModel):
    limit: int = 50
    offset: int = 0


# async: FastAPI runs a plain `def` dependency in its thread pool, a costly hop for nothing.
async def page_params(
    limit: int = Query(50, ge=1, le=MAX_LIMIT),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
) -> PageParams:
    return PageParams(limit=limit, offset=offset)


class Page(BaseModel, Generic[T]):
    items: List[T]
    total: int
    limit: int
    offset: int


async def fetch_page(
    session: Union[AsyncSession, Reader],
    stmt: Select,
    *,
    limit: int,
    offset: int,
    entities: bool = True,
) -> Tuple[List[Any], int]:
    """Run an ordered select for one page and the total row count.

    The total rides along as a window count, so a page costs one round trip;
    only a page past the end (no rows to carry it) needs a separate count.
    `entities=True` (a `select(Model)`) returns the objects; `False` (a select
    of columns) returns the rows as mappings, whose extra `_total` key
    validation ignores.
    """
    windowed = stmt.add_columns(func.count().over().label("_total")).limit(limit).offset(offset)
    rows = (await session.execute(windowed)).all()
    if rows:
        items = [row[0] for row in rows] if entities else [row._mapping for row in rows]
        return items, int(rows[0][-1])
    count_stmt = select(func.count()).select_from(stmt.order_by(None).subquery())
    return [], int((await session.execute(count_stmt)).scalar_one())
