"""Shared fixtures: real PostgreSQL and Redis, per-test isolation, ASGI client.

PostgreSQL: TEST_DATABASE_URL (CI sets it to the machine's server) or an
embedded server started here. Each run creates its own database, migrates it
to head, and drops it at the end. Redis: TEST_REDIS_URL or an embedded one.

Isolation: `session` wraps each test in an outer transaction that is rolled
back (the app's commits become savepoint releases). Tests that need real
commits across connections (concurrency, workers) use `committed_db`, which
truncates every table afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List

import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import make_url

from app.core.config import REPO_ROOT

_RUN_ID = uuid.uuid4().hex[:8]
# Everything a run creates (embedded servers' data, models, pytest's tmp_path
# folders) lives under the repo's .keel/ and is removed when the run ends;
# a folder given in KEEL_TEST_DATA_DIR is the caller's, and is kept.
_OWN_DATA_DIR = "KEEL_TEST_DATA_DIR" not in os.environ
_DATA_DIR = Path(os.environ.get("KEEL_TEST_DATA_DIR") or REPO_ROOT / ".keel" / f"test-{_RUN_ID}")


def _server_url() -> str:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return url
    from app.dev.embedded import embedded_database_url

    return embedded_database_url(_DATA_DIR)


def _redis_url() -> str:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        return url
    from app.dev.embedded import embedded_redis_url

    return embedded_redis_url(_DATA_DIR)


def _admin_execute(server_url: str, *statements: str) -> None:
    import asyncpg

    url = make_url(server_url).set(drivername="postgresql")

    async def run() -> None:
        conn = await asyncpg.connect(
            user=url.username or "postgres",
            password=url.password,
            host=url.host or url.query.get("host"),
            port=url.port,
            database=url.database or "postgres",
        )
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Point the app at the test servers before anything imports app.main.
    (tryfirst: pytest's tmp_path factory reads --basetemp in its own
    pytest_configure.)"""
    if config.option.basetemp is None:
        config.option.basetemp = str(_DATA_DIR / "pytest")
    server_url = _server_url()
    test_db = f"keel_test_{_RUN_ID}"
    _admin_execute(server_url, f'CREATE DATABASE "{test_db}"')
    database_url = make_url(server_url).set(database=test_db).render_as_string(hide_password=False)
    os.environ.update(
        {
            "ENVIRONMENT": "test",
            "DATABASE_URL": database_url,
            "REDIS_URL": _redis_url(),
            "BCRYPT_ROUNDS": "4",
            "DATA_DIR": str(_DATA_DIR),
            # Production's bound (0.5 s) is shorter than a stall of this
            # process on a machine whose cores other work keeps busy; no test
            # depends on it (a Redis outage is a refused connection).
            "REDIS_TIMEOUT_SECONDS": "10",
        }
    )
    # The fuzzing report (tests/e2e/test_fuzz_openapi.py) too; its summary is
    # printed with a failure.
    os.environ.setdefault("KEEL_FUZZ_REPORT", str(_DATA_DIR / "schemathesis.txt"))
    _ensure_model(_DATA_DIR / "models")
    config._keel_server_url = server_url  # type: ignore[attr-defined]
    config._keel_test_db = test_db  # type: ignore[attr-defined]
    from app.core.migrations import upgrade

    upgrade(database_url)


def _ensure_model(model_dir: Path) -> None:
    """The app serves predictions and reports ready only with a model: train a
    small one for the session (tests of the registry use their own folders)."""
    from app.ml.registry import Registry
    from app.ml.training import train_model

    os.environ["MODEL_DIR"] = str(model_dir)
    if not Registry(model_dir).versions():
        train_model(model_dir, kind="logreg", seed=42, activate=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    server_url = getattr(config, "_keel_server_url", None)
    if server_url:
        test_db = config._keel_test_db  # type: ignore[attr-defined]
        _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{test_db}" WITH (FORCE)')
    from app.dev.embedded import stop_all

    stop_all()
    if _OWN_DATA_DIR:
        shutil.rmtree(_DATA_DIR, ignore_errors=True)
    # Collect now, while asyncio is still importable: a task left pending is
    # then reported by name ("Task was destroyed but it is pending!") instead
    # of failing inside Task.__del__ at interpreter exit.
    gc.collect()


@pytest.fixture(scope="session")
def settings() -> Any:
    from app.core.config import get_settings

    return get_settings()


@pytest.fixture(scope="session")
async def engine(settings: Any) -> AsyncIterator[Any]:
    from app.core.db import build_engine, db

    engine = build_engine(settings)
    db.configure(engine)
    yield engine
    await db.dispose()


@pytest.fixture(scope="session")
def app(engine: Any) -> Any:
    from app.main import create_app

    return create_app()


@pytest.fixture
async def session(engine: Any) -> AsyncIterator[Any]:
    """A session inside a transaction that is rolled back after the test."""
    from sqlalchemy.ext.asyncio import AsyncSession

    async with engine.connect() as connection:
        transaction = await connection.begin()
        session = AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield session
        finally:
            await session.close()
            await transaction.rollback()


@pytest.fixture
async def client(app: Any, session: Any) -> AsyncIterator[Any]:
    """ASGI client whose requests share the test's rolled-back transaction."""
    import httpx

    from app.auth import principal
    from app.core.db import Reader, get_db, get_reader
    from app.core.fifo_gate import FifoGate

    async def override_get_db() -> AsyncIterator[Any]:
        yield session
        await session.commit()

    @asynccontextmanager
    async def shared_connection() -> AsyncIterator[Any]:
        yield await session.connection()  # reads see the test's uncommitted rows

    # One gate place: the Reader's statements take turns on the shared connection.
    reader = Reader(shared_connection, FifoGate(1), 5.0)

    async def override_get_reader() -> Reader:
        return reader

    app.dependency_overrides[get_db] = override_get_db
    app.dependency_overrides[get_reader] = override_get_reader
    principal.standing_reader = lambda: reader
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http
    # A background standing refresh runs on the shared connection: let it end
    # before the session's rollback uses that connection (a slow test leaves one).
    in_flight = list(principal._standing_loads.values())
    await asyncio.gather(*in_flight, return_exceptions=True)
    app.dependency_overrides.pop(get_db, None)
    app.dependency_overrides.pop(get_reader, None)
    principal.standing_reader = principal._process_reader


@pytest.fixture
async def committed_db(engine: Any) -> AsyncIterator[Any]:
    """Real commits (for concurrency/worker tests); every table emptied after."""
    from app.models import Base

    yield engine
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    async with engine.begin() as conn:
        await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture
async def committed_client(app: Any, committed_db: Any) -> AsyncIterator[Any]:
    """ASGI client using the app's own sessions (each request commits for real)."""
    import httpx

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


@pytest.fixture(autouse=True)
async def _clean_redis() -> AsyncIterator[None]:
    """Throttle counters and cached principals must not leak between tests."""
    from app.auth.principal import cancel_standing_loads, principal_cache
    from app.core.redis import get_redis, set_redis

    yield
    principal_cache.clear()
    cancel_standing_loads()  # a background refresh must not outlive this test's loop
    client = get_redis()
    await client.flushdb()
    await client.aclose()
    set_redis(None)


@pytest.fixture
def statement_counter(engine: Any) -> Iterator[List[str]]:
    """Collects every SQL statement the engine executes while active."""
    statements: List[str] = []

    def before_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", before_execute)
    yield statements
    event.remove(engine.sync_engine, "before_cursor_execute", before_execute)


# ----------------------------------------------------------------- factories

_counter = {"n": 0}


def unique_email(prefix: str = "user") -> str:
    _counter["n"] += 1
    return f"{prefix}{_counter['n']}-{uuid.uuid4().hex[:6]}@example.com"


@pytest.fixture
def make_user(client: Any) -> Callable[..., Any]:
    """Sign up through the API and log in; returns a dict with id, email, tokens, headers."""

    async def factory(
        email: str = "", password: str = "correct-horse-1", name: str = "Test User"
    ) -> Dict[str, Any]:
        email = email or unique_email()
        response = await client.post(
            "/api/users", json={"email": email, "password": password, "name": name}
        )
        assert response.status_code == 201, response.text
        user = response.json()
        tokens = await client.post("/token", data={"username": email, "password": password})
        assert tokens.status_code == 200, tokens.text
        pair = tokens.json()
        return {
            **user,
            "password": password,
            "access_token": pair["access_token"],
            "refresh_token": pair["refresh_token"],
            "headers": {"Authorization": f"Bearer {pair['access_token']}"},
        }

    return factory


@pytest.fixture
def make_superuser(make_user: Callable[..., Any], session: Any) -> Callable[..., Any]:
    async def factory(**kwargs: Any) -> Dict[str, Any]:
        from app.users.models import User

        user = await make_user(**kwargs)
        db_user = await session.get(User, user["id"])
        db_user.is_superuser = True
        await session.flush()
        return user

    return factory
