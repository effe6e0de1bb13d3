"""Async engine, session factory, request-scoped session and declarative Base."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncContextManager, AsyncIterator, Callable, Dict, List, Optional, Tuple

import asyncpg
from fastapi import Depends
from sqlalchemy import MetaData, Select, event
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import QueuePool
from typing_extensions import Annotated

from app.core.config import Settings, get_settings
from app.core.errors import DatabaseTimeout, DatabaseUnavailable
from app.core.fifo_gate import FifoGate

logger = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# What an unset DATABASE_URL means. app/dev registers keel's embedded
# PostgreSQL here (`register_embedded_defaults`), so core depends on nothing above it.
_default_database_url: Optional[Callable[[Settings], str]] = None


def set_default_database_url(provider: Optional[Callable[[Settings], str]]) -> None:
    global _default_database_url
    _default_database_url = provider


def resolve_database_url(settings: Settings) -> str:
    """DATABASE_URL when set, otherwise the registered default (embedded PostgreSQL)."""
    if settings.database_url:
        return settings.database_url
    if _default_database_url is None:
        raise RuntimeError("DATABASE_URL is not set and no embedded default is registered")
    return _default_database_url(settings)


def install_idle_pre_ping(engine: AsyncEngine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling that is free under load: a connection
    is pinged at checkout only if it sat idle in the pool for `idle_seconds`.
    A dead one is replaced (DisconnectionError makes the pool reconnect), so
    requests after a database restart succeed without a process restart.
    A connection that died while busy fails its request with a 503, and the
    disconnect invalidates the rest of the pool."""
    pool = engine.sync_engine.pool
    dbapi_error = engine.dialect.loaded_dbapi.Error

    @event.listens_for(pool, "checkin")
    def _mark_idle(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.pop("idle_since", None)
        if idle_since is None or time.monotonic() - idle_since < idle_seconds:
            return  # brand new, or in use a moment ago
        try:
            dbapi_connection.ping()
        except (dbapi_error, OSError) as exc:
            raise DisconnectionError("connection failed its idle ping") from exc


_CONNECT_FAULT_SQLSTATES = ("53300", "57P01", "57P02", "57P03")


def report_connect_faults(engine: AsyncEngine) -> None:
    """Make a failed connect an OperationalError, as SQLAlchemy reports a
    failure on an open connection. asyncpg raises its own errors there
    (57P03 while PostgreSQL recovers from a crash, OSError when nothing
    listens, a timeout), which the engine lets through untranslated: as a
    bare OSError a refused connection looks like any disk error, and
    CannotConnectNowError like a bug."""
    dialect = engine.dialect

    @event.listens_for(engine.sync_engine, "do_connect")
    def _connect(dialect_: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        try:
            return dialect.connect(*cargs, **cparams)
        except (asyncpg.PostgresError, OSError, asyncio.TimeoutError) as exc:
            sqlstate = getattr(exc, "sqlstate", None)
            if isinstance(exc, asyncpg.PostgresError) and not (
                str(sqlstate).startswith("08") or sqlstate in _CONNECT_FAULT_SQLSTATES
            ):
                raise  # a bad password or database name: configuration, not a fault
            error: Any = dialect.loaded_dbapi.OperationalError(f"{type(exc).__name__}: {exc}")
            error.sqlstate = error.pgcode = sqlstate
            raise error from exc


def _anonymous_statement() -> str:
    return ""


def build_engine(settings: Settings, url: Optional[str] = None) -> AsyncEngine:
    server_settings = {"application_name": "keel"}
    connect_args: Dict[str, Any] = {"timeout": settings.db_connect_timeout}
    if settings.db_pgbouncer:
        # No statement caches (asyncpg's, SQLAlchemy's): a cached statement
        # lives on one server connection and the next transaction may get
        # another. And only unnamed statements, which asyncpg (cache off)
        # parses again in the same message group as their execution: a named
        # one, even uniquely named, is prepared in one group and executed in
        # the next, and outside a transaction (autocommit reads, the outbox's
        # one-statement writes) PgBouncer may send the two to different
        # servers. (statement_timeout: see Settings.db_pgbouncer.)
        connect_args.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            prepared_statement_name_func=_anonymous_statement,
        )
    elif settings.db_statement_timeout_ms:
        server_settings["statement_timeout"] = str(settings.db_statement_timeout_ms)
    connect_args["server_settings"] = server_settings
    engine = create_async_engine(
        url or resolve_database_url(settings),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout,
        pool_recycle=settings.db_pool_recycle,
        # Replaced by install_idle_pre_ping, which skips recently used connections.
        pool_pre_ping=False,
        connect_args=connect_args,
    )
    report_connect_faults(engine)
    if settings.db_pool_pre_ping:
        install_idle_pre_ping(engine, settings.db_pre_ping_idle_seconds)
    return engine


class PreparedRead:
    """A Core select compiled once to asyncpg's SQL, for `Reader.fetch`.

    Only bound parameters (`bindparam("name")` or literal values); no
    expanding IN lists. Build it where every model involved is mapped (at
    first use, not at import).
    """

    def __init__(self, statement: Select) -> None:
        compiled = statement.compile(dialect=_ASYNCPG_DIALECT)
        self.sql = str(compiled)
        self._names: Tuple[str, ...] = tuple(compiled.positiontup or ())
        self._defaults = compiled.params

    def arguments(self, parameters: Dict[str, Any]) -> List[Any]:
        return [parameters.get(name, self._defaults[name]) for name in self._names]


_ASYNCPG_DIALECT = asyncpg_dialect.dialect()


class Reader:
    """The one read path beside the request's session: `fetch` runs one
    `PreparedRead` on the asyncpg connection of a pooled connection checked
    out for that statement alone, outside any transaction, and returns
    asyncpg records. For the hot one-statement reads (the auth standing, `GET
    /api/posts`): one round trip, one snapshot, the connection held only while
    PostgreSQL works, none of SQLAlchemy's execution and result machinery
    (which cost as much as the query: bench/README.md). Never for writes.
    Connection failures become 503 `database_unavailable` (the connection is
    discarded), a statement timeout 503 `database_timeout`.
    """

    def __init__(
        self, connect: Callable[[], AsyncContextManager[Any]], gate: FifoGate, gate_timeout: float
    ) -> None:
        self._connect = connect
        self._gate = gate
        self._gate_timeout = gate_timeout

    async def fetch(self, read: PreparedRead, parameters: Dict[str, Any]) -> List[Any]:
        try:
            await self._gate.enter(self._gate_timeout)
        except asyncio.TimeoutError:
            raise DatabaseTimeout(
                "No database connection came free in time, try again shortly"
            ) from None
        try:
            return await self._fetch(read, parameters)
        finally:
            self._gate.leave()

    async def _fetch(self, read: PreparedRead, parameters: Dict[str, Any]) -> List[Any]:
        async with self._connect() as connection:
            driver = (await connection.get_raw_connection()).driver_connection
            try:
                return await driver.fetch(read.sql, *read.arguments(parameters))
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                logger.warning("database connection failed during a read: %r", exc)
                await connection.invalidate()
                raise DatabaseUnavailable() from exc
            except asyncpg.QueryCanceledError as exc:
                logger.warning("read cancelled (statement timeout?): %.80s", read.sql)
                raise DatabaseTimeout() from exc


class Database:
    """Holds the process's engine and session factory, created lazily."""

    def __init__(self) -> None:
        self._engine: Optional[AsyncEngine] = None
        self._sessionmaker: Optional[async_sessionmaker[AsyncSession]] = None
        self._reader: Optional[Reader] = None

    def configure(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
        # Same pool. Reader.fetch runs its statement on the driver connection,
        # which asyncpg executes outside any transaction: no BEGIN/COMMIT. Its
        # checkouts queue in arrival order (app/core/fifo_gate.py), at most
        # as many at once as the pool keeps connections: no overflow churn.
        pool = engine.pool
        assert isinstance(pool, QueuePool)  # build_engine's pool: size and timeout
        self._reader = Reader(engine.connect, FifoGate(pool.size()), pool.timeout())

    @property
    def engine(self) -> AsyncEngine:
        if self._engine is None:
            self.configure(build_engine(get_settings()))
        assert self._engine is not None
        return self._engine

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        if self._sessionmaker is None:
            self.configure(self.engine)
        assert self._sessionmaker is not None
        return self._sessionmaker

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self.configure(self.engine)
        assert self._reader is not None
        return self._reader

    def pool_status(self) -> Optional[Dict[str, int]]:
        """Size, in-use and overflow counts of this process's pool (None before first use)."""
        if self._engine is None:
            return None
        pool: Any = self._engine.pool
        return {
            "size": pool.size(),
            "checked_out": pool.checkedout(),
            "overflow": max(0, pool.overflow()),
        }

    async def dispose(self) -> None:
        if self._engine is not None:
            await self._engine.dispose()
        self._engine = None
        self._sessionmaker = None
        self._reader = None


db = Database()


async def get_db() -> AsyncIterator[AsyncSession]:
    """One session and one transaction per request.

    Used through `DbSession` (scope="function"), so the commit below runs when
    the endpoint returns and *before* the response is sent: a failed commit
    becomes an error response, never a success the database did not keep.
    """
    async with db.sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


DbSession = Annotated[AsyncSession, Depends(get_db, scope="function")]


async def get_reader() -> Reader:
    """The process's Reader (a dependency, so tests can point it at their
    rolled-back transaction)."""
    return db.reader


Reads = Annotated[Reader, Depends(get_reader)]
