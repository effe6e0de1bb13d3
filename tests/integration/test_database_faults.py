"""Every database fault answers 503 with Retry-After and a specific code,
against real PostgreSQL servers the tests own or hold: a server in recovery
(57P03) and stopped, a pool whose only connection the test holds, a transfer
whose statement is cancelled or whose backend is killed mid-statement. And
nothing else is called a database fault."""

from __future__ import annotations

import asyncio
import errno
import shutil
import uuid
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from app.core.db import build_engine, db
from app.core.errors import install_error_handlers
from app.core.migrations import upgrade
from app.dev.embedded import Postgres, asyncpg_url
from tests.integration.test_ledger import open_account, signed_up_user


@asynccontextmanager
async def _app_on(app: Any, engine: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of `app` whose requests use `engine`'s pool (the process
    pool is put back afterwards)."""
    previous = db.engine
    db.configure(engine)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
    finally:
        db.configure(previous)
        await engine.dispose()


def _assert_503(response: httpx.Response, code: str) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["code"] == code
    assert int(response.headers["retry-after"]) >= 1


async def _wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    for _ in range(600):  # a hang guard only: each check waits on the server
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------- a server the test owns


class OwnPostgres:
    def __init__(self, folder: Path) -> None:
        self.server = Postgres(folder)
        self.server.start()
        self.url = asyncpg_url(self.server)
        self.socket_dir = str(self.server.socket_dir)

    def stop(self) -> None:
        self.server.pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        self.server.start()

    def restart_in_recovery(self) -> None:
        """Restart as a standby that accepts no connections: the server is in
        recovery (as after a crash) until promoted, and every connection is
        refused with SQLSTATE 57P03, the error crash recovery gives."""
        self.stop()
        with open(self.server.pgdata / "postgresql.conf", "a") as conf:
            conf.write("\nhot_standby = off\n")
        (self.server.pgdata / "standby.signal").touch()
        self.start()

    def end_recovery(self) -> None:
        self.server.pg_ctl("-w", "promote")

    async def connect(self) -> Any:
        return await asyncpg.connect(host=self.socket_dir, user="postgres", database="postgres")


@pytest.fixture
def own_postgres(settings: Any) -> Iterator[OwnPostgres]:
    # In the run's data folder, not pytest's shared temp root: a pytest
    # starting elsewhere on the machine resets that root to 0700, and the
    # server's own user could no longer reach its data.
    folder = Path(settings.data_dir) / f"own-pg-{uuid.uuid4().hex[:8]}"
    folder.mkdir(parents=True)
    server = OwnPostgres(folder / "pg")
    try:
        upgrade(server.url)
        yield server
    finally:
        server.server.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def test_postgres_in_recovery_or_stopped_answers_503_then_recovers(
    app: Any, settings: Any, own_postgres: OwnPostgres
) -> None:
    from app.auth.principal import principal_cache

    sign_up = {"password": "password-1", "name": "R"}
    engine = build_engine(settings, own_postgres.url)
    async with _app_on(app, engine) as http:
        user = await signed_up_user(http)
        own_postgres.restart_in_recovery()
        with pytest.raises(asyncpg.CannotConnectNowError):  # what the pool's connect step meets
            await own_postgres.connect()
        await engine.dispose()  # every request now connects anew
        principal_cache.clear()

        in_recovery = await http.post("/api/users", json={**sign_up, "email": "r1@example.com"})
        _assert_503(in_recovery, "database_unavailable")
        # The standing read and the post reads go through Reader (raw asyncpg).
        _assert_503(await http.get("/api/posts", headers=user["headers"]), "database_unavailable")

        own_postgres.end_recovery()
        await _wait_until(
            lambda: _accepts(own_postgres), "the promoted server to accept connections"
        )
        created = await http.post("/api/users", json={**sign_up, "email": "r2@example.com"})
        assert created.status_code == 201, created.text
        assert (await http.get("/api/posts", headers=user["headers"])).status_code == 200

        own_postgres.stop()  # nothing listens: refused at the pool's connect step
        await engine.dispose()
        stopped = await http.post("/api/users", json={**sign_up, "email": "r3@example.com"})
        _assert_503(stopped, "database_unavailable")
        own_postgres.start()
        again = await http.post("/api/users", json={**sign_up, "email": "r4@example.com"})
        assert again.status_code == 201, again.text


async def _accepts(server: OwnPostgres) -> bool:
    try:
        connection = await server.connect()
    except asyncpg.CannotConnectNowError:
        return False
    await connection.close()
    return True


async def test_a_server_that_never_answers_the_connect_answers_503(app: Any, settings: Any) -> None:
    """The connect timeout (asyncio.TimeoutError, not an OSError before
    Python 3.11) is a database fault too: a listener that never speaks."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes handshakes; nobody ever answers
    port = silent.getsockname()[1]
    try:
        url = f"postgresql+asyncpg://postgres@127.0.0.1:{port}/keel"
        engine = build_engine(settings.model_copy(update={"db_connect_timeout": 0.2}), url)
        async with _app_on(app, engine) as http:
            response = await http.post(
                "/api/users",
                json={"email": "silent@example.com", "password": "password-1", "name": "S"},
            )
            _assert_503(response, "database_unavailable")
    finally:
        silent.close()


# ------------------------------------------------- the pool, held by the test


async def test_an_exhausted_pool_answers_503_database_timeout(
    app: Any, settings: Any, committed_db: Any
) -> None:
    one_connection = settings.model_copy(
        update={"db_pool_size": 1, "db_max_overflow": 0, "db_pool_timeout": 0.01}
    )
    engine = build_engine(one_connection)
    async with _app_on(app, engine) as http:
        held = await engine.connect()
        try:
            busy = await http.post(
                "/api/users",
                json={"email": "busy@example.com", "password": "password-1", "name": "B"},
            )
            _assert_503(busy, "database_timeout")
        finally:
            await held.close()
        created = await http.post(
            "/api/users", json={"email": "busy@example.com", "password": "password-1", "name": "B"}
        )
        assert created.status_code == 201, created.text


# ------------------------------------------------- driver errors on the transfer path


async def _funded_pair(http: httpx.AsyncClient) -> Dict[str, Any]:
    user = await signed_up_user(http)
    source = await open_account(http, user)
    target = await open_account(http, user)
    async with db.engine.begin() as conn:
        await conn.execute(
            text("UPDATE accounts SET balance = 100 WHERE id = :id"), {"id": source["id"]}
        )
    return {"user": user, "from": source["id"], "to": target["id"]}


async def _balances(engine: Any, *ids: int) -> Dict[int, Decimal]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT id, balance FROM accounts WHERE id = ANY(:ids)"), {"ids": list(ids)}
        )
        return {row[0]: row[1] for row in rows}


@asynccontextmanager
async def _row_locked(engine: Any, account_id: int) -> AsyncIterator[None]:
    """Hold the account's row lock until the block ends, so the transfer's
    lock statement waits on it for as long as the test decides."""
    async with engine.connect() as conn:
        transaction = await conn.begin()
        await conn.execute(
            text("SELECT 1 FROM accounts WHERE id = :id FOR UPDATE"), {"id": account_id}
        )
        try:
            yield
        finally:
            await transaction.rollback()


async def _waiting_on_a_lock(engine: Any) -> Any:
    async with engine.connect() as conn:
        return (
            await conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = 'keel'"
                    " AND wait_event_type = 'Lock' AND query LIKE '%FOR UPDATE%'"
                    " AND datname = current_database()"
                )
            )
        ).scalar_one_or_none()


def _transfer(http: httpx.AsyncClient, pair: Dict[str, Any]) -> Awaitable[httpx.Response]:
    body = {"from_account_id": pair["from"], "to_account_id": pair["to"], "amount": "10.00"}
    return http.post("/api/transfers", json=body, headers=pair["user"]["headers"])


async def test_a_transfer_past_the_statement_timeout_answers_503_database_timeout(
    app: Any, settings: Any, committed_client: Any, engine: Any
) -> None:
    pair = await _funded_pair(committed_client)
    # Far above any of the transfer's own statements; the lock wait below
    # lasts until the response, so it always runs past it.
    timed = build_engine(settings.model_copy(update={"db_statement_timeout_ms": 1000}))
    async with _app_on(app, timed) as http:
        async with _row_locked(engine, pair["from"]):
            _assert_503(await _transfer(http, pair), "database_timeout")
        assert await _balances(engine, pair["from"], pair["to"]) == {
            pair["from"]: Decimal("100"),
            pair["to"]: Decimal("0"),
        }
        assert (await _transfer(http, pair)).status_code == 201  # the pool is healthy


async def test_a_transfer_whose_backend_dies_answers_503_database_unavailable(
    app: Any, settings: Any, committed_client: Any, engine: Any
) -> None:
    pair = await _funded_pair(committed_client)
    async with _app_on(app, build_engine(settings)) as http:
        async with _row_locked(engine, pair["from"]):
            pending = asyncio.ensure_future(_transfer(http, pair))
            found: Dict[str, Any] = {}

            async def waiting() -> bool:
                assert not pending.done(), pending.result().text
                found["pid"] = await _waiting_on_a_lock(engine)
                return found["pid"] is not None

            await _wait_until(waiting, "the transfer to wait on the row lock")
            pid = found["pid"]
            async with engine.connect() as conn:
                await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            _assert_503(await asyncio.wait_for(pending, 60), "database_unavailable")
        assert await _balances(engine, pair["from"], pair["to"]) == {
            pair["from"]: Decimal("100"),
            pair["to"]: Decimal("0"),
        }
        assert (await _transfer(http, pair)).status_code == 201


# ------------------------------------------------- nothing else is a database fault


def _faulty_app(exc: BaseException) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/fault")
    async def fault() -> None:
        raise exc

    return app


async def _get_fault(exc: BaseException) -> httpx.Response:
    transport = httpx.ASGITransport(app=_faulty_app(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        return await http.get("/fault")


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        PermissionError(errno.EACCES, "Permission denied", "/srv/uploads/x"),
        asyncpg.UniqueViolationError("duplicate key"),
    ],
    ids=["disk-full", "permission", "unique-violation"],
)
async def test_other_errors_are_not_reported_as_database_faults(exc: BaseException) -> None:
    response = await _get_fault(exc)
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}


@pytest.mark.parametrize(
    "exc, code",
    [
        (
            asyncpg.CannotConnectNowError("the database system is in recovery mode"),
            "database_unavailable",
        ),
        (asyncpg.AdminShutdownError("terminating connection"), "database_unavailable"),
        (asyncpg.ConnectionDoesNotExistError("connection was closed"), "database_unavailable"),
        (
            asyncpg.InterfaceError("cannot call Connection.fetch(): connection is closed"),
            "database_unavailable",
        ),
        (
            asyncpg.QueryCanceledError("canceling statement due to statement timeout"),
            "database_timeout",
        ),
        (
            asyncpg.TooManyConnectionsError("sorry, too many clients already"),
            "database_unavailable",
        ),
    ],
)
async def test_raw_driver_faults_map_to_503(exc: BaseException, code: str) -> None:
    _assert_503(await _get_fault(exc), code)
