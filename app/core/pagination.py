"""The list contract: `limit` (1-100, default 50), `offset`, and a page body.

Query parameters are declared as FastAPI query parameter models that forbid
extra fields: a parameter the route does not declare (`limt=5`) is a 422
`extra_forbidden`, not a silently ignored filter. A list route takes
`page: Pagination` (or a subclass of PageParams for more filters); a route
without query parameters declares `dependencies=[NoQuery]`.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Generic, List, Optional, Tuple, TypeVar

from fastapi import Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import Select, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from typing_extensions import Annotated

from app.core.db import PreparedRead, Reader

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 100
MAX_OFFSET = 1_000_000


class StrictQuery(BaseModel):
    """Base of every query parameter model: undeclared parameters are a 422."""

    model_config = ConfigDict(extra="forbid")


class PageParams(StrictQuery):
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)


Pagination = Annotated[PageParams, Query()]


# async: FastAPI runs a plain `def` dependency in its thread pool, a costly hop for nothing.
async def _no_query(request: Request) -> None:
    """Takes no query parameters, so any one is a 422, reported exactly as a
    query model that forbids extras reports it. Not declared as such a model,
    whose resolution costs every request of a route with nothing to parse a
    few percent of a prediction: the model only runs when there is a query."""
    if not request.scope["query_string"]:
        return
    params = request.query_params
    values = {name: _one_or_all(params.getlist(name)) for name in params}
    try:
        StrictQuery.model_validate(values)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("query", *e["loc"])} for e in errors]) from None


def _one_or_all(values: List[str]) -> Any:
    return values[0] if len(values) == 1 else values


NoQuery = Depends(_no_query)


class Page(BaseModel, Generic[T]):
    items: List[T]
    total: int
    limit: int
    offset: int


class PageQuery:
    """An ordered select, prepared once for paging.

    Its page statement adds the total as a window count and takes `limit`
    and `offset` as bound parameters; its count statement is the fallback for
    a page past the end. Keep one per list at module level: a request then
    reuses SQLAlchemy's memoized cache key and compiled SQL (or, for
    `fetch_row_page`, the asyncpg SQL) instead of rebuilding the statement.
    `build` runs on first use, when every model is mapped.
    """

    def __init__(self, build: Callable[[], Select]) -> None:
        self._build = build
        self._statements: Optional[Tuple[Select, Select]] = None
        self._prepared: Optional[Tuple[PreparedRead, PreparedRead]] = None

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

    def prepared(self) -> Tuple[PreparedRead, PreparedRead]:
        if self._prepared is None:
            rows, count = self.statements()
            self._prepared = (PreparedRead(rows), PreparedRead(count))
        return self._prepared


async def fetch_page(
    session: AsyncSession,
    query: PageQuery,
    *,
    limit: int,
    offset: int,
    params: Optional[Dict[str, Any]] = None,
) -> Tuple[List[Any], int]:
    """One page of `query` (a `select(Model)`, so ORM objects) and the total
    row count; `params` fills the query's own bound parameters (filters).
    The total rides along as a window count, so a page costs one statement;
    only a page past the end (no rows to carry it) needs a separate count."""
    rows_stmt, count_stmt = query.statements()
    filters = params or {}
    rows = (await session.execute(rows_stmt, {**filters, "limit": limit, "offset": offset})).all()
    if rows:
        return [row[0] for row in rows], int(rows[0][-1])
    return [], int((await session.execute(count_stmt, filters)).scalar_one())


async def fetch_row_page(
    reader: Reader, query: PageQuery, *, limit: int, offset: int
) -> Tuple[List[Dict[str, Any]], int]:
    """Like `fetch_page` for a select of columns, read through `Reader.fetch`:
    each row is a dict of its columns."""
    rows_read, count_read = query.prepared()
    rows = await reader.fetch(rows_read, {"limit": limit, "offset": offset})
    if rows:
        columns = tuple(rows[0].keys())[:-1]  # all but the last, `_total`
        return [dict(zip(columns, row)) for row in rows], int(rows[0]["_total"])
    return [], int((await reader.fetch(count_read, {}))[0][0])
