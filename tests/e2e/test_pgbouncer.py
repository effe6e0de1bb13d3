"""keel's engine through a real PgBouncer in transaction mode (the Debian
package, 1.18: no prepared-statement tracking), as deploy/pgbouncer.ini runs
it: more client connections than server connections, so consecutive
transactions of one client land on different PostgreSQL backends."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Set

import pytest
from sqlalchemy import Integer, bindparam, literal_column, select, text
from sqlalchemy.engine import make_url

from app.core.config import Settings
from app.core.db import Database, PreparedRead, build_engine
from tests.e2e.conftest import free_port

PGBOUNCER = shutil.which("pgbouncer") or (
    "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
)
SERVER_CONNECTIONS = 2
CLIENT_CONNECTIONS = 8

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install pgbouncer)"
)


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("pgbouncer did not start listening")


@pytest.fixture
def pgbouncer_url() -> Iterator[str]:
    """A PgBouncer (transaction mode, two server connections) in front of
    the test database; yields the URL keel connects to."""
    url = make_url(os.environ["DATABASE_URL"])
    host = url.host or url.query.get("host") or "127.0.0.1"
    target = f"host={host} dbname={url.database} user={url.username or 'postgres'}"
    if url.port:
        target += f" port={url.port}"
    if url.password:
        target += f" password={url.password}"
    port = free_port()
    # Not tmp_path: PgBouncer refuses to run as root, and the user it
    # switches to must read its folder.
    folder = Path(tempfile.mkdtemp(prefix="keel-pgbouncer-"))
    folder.chmod(0o755)
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"keel = {target}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        "auth_type = any\npool_mode = transaction\n"
        f"default_pool_size = {SERVER_CONNECTIONS}\nmin_pool_size = 0\nreserve_pool_size = 0\n"
        "max_client_conn = 100\n"
    )
    config.chmod(0o644)
    assert PGBOUNCER is not None
    command = [PGBOUNCER, str(config)]
    if os.geteuid() == 0:
        command[1:1] = ["-u", "postgres"]
    proc = subprocess.Popen(command)
    try:
        _wait_for_port(port, proc)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/keel"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


async def test_engine_works_through_pgbouncer_transaction_mode(pgbouncer_url: str) -> None:
    settings = Settings(
        database_url=pgbouncer_url,
        db_pgbouncer=True,
        db_pool_size=CLIENT_CONNECTIONS,
        db_max_overflow=0,
        db_pool_timeout=30,
    )
    database = Database()
    database.configure(build_engine(settings))
    n = bindparam("n", type_=Integer)
    read = PreparedRead(select(literal_column("1").label("one"), n.label("n")))
    backends: Set[int] = set()

    async def one_client(i: int) -> List[Any]:
        results: List[Any] = []
        # An ORM transaction: SQLAlchemy prepares each statement (by name).
        async with database.sessionmaker() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            backends.add(int(pid))
            value = await session.execute(text("SELECT CAST(:i AS integer) * 2"), {"i": i})
            results.append(value.scalar_one())
            # The ledger's hot path: driver SQL on the session's connection.
            connection = await session.connection()
            value = await connection.exec_driver_sql(
                "SELECT $1::integer + 1 AS n, pg_sleep(0.001), $2::jsonb AS j", (i, '{"a": 1}')
            )
            results.append(value.one().n)
            await session.commit()
        # The Reader's autocommit path (no transaction around the statement),
        # several times: each may land on another server connection.
        for _ in range(5):
            rows = await database.reader.fetch(read, {"n": i})
        results.append(rows[0]["n"])
        return results

    try:
        for _ in range(5):
            outcomes = await asyncio.gather(*(one_client(i) for i in range(32)))
            assert outcomes == [[2 * i, i + 1, i] for i in range(32)]
        # The pool's clients really shared PgBouncer's few server connections.
        assert database.pool_status()["size"] == CLIENT_CONNECTIONS  # type: ignore[index]
        assert 1 <= len(backends) <= SERVER_CONNECTIONS
    finally:
        await database.dispose()
