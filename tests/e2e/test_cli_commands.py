"""Every `keel` sub-command run as a fresh process, the way an operator runs
it, against the test database: nothing is imported into the test process
first, so a command that forgets to load what it needs fails here."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from app.core.config import REPO_ROOT
from tests.conftest import unique_email
from tests.e2e.conftest import RedisServer, free_port, wait_until, wait_until_healthy

pytestmark = pytest.mark.e2e

KEEL = Path(sys.executable).with_name("keel")  # the console script next to this interpreter


def keel(
    *args: str,
    env: Optional[Dict[str, str]] = None,
    stdin: Optional[str] = None,
    script: bool = False,
) -> subprocess.CompletedProcess:
    """`keel ARGS` (the console script) or `python -m app ARGS`, to completion."""
    command: List[str] = [str(KEEL)] if script else [sys.executable, "-m", "app"]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, **(env or {})},
        cwd=str(REPO_ROOT),
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,  # hang guard
    )


def start(args: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """A long-running command in a session of its own (as a terminal would
    run it: a Ctrl-C there reaches the whole process group)."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "app", *args],
            env={**os.environ, **(env or {})},
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


async def _fetch(database_url: str, query: str, *args: Any) -> List[Any]:
    url = make_url(database_url)
    conn = await asyncpg.connect(
        user=url.username or "postgres",
        password=url.password,
        host=url.host or url.query.get("host"),
        port=url.port,
        database=url.database,
    )
    try:
        return list(await conn.fetch(query, *args))
    finally:
        await conn.close()


def fetch(database_url: str, query: str, *args: Any) -> List[Any]:
    return asyncio.run(_fetch(database_url, query, *args))


# ------------------------------------------------------------ create-superuser


def _superuser_flag(email: str) -> Optional[bool]:
    rows = fetch(
        os.environ["DATABASE_URL"], "SELECT is_superuser FROM users WHERE email = $1", email
    )
    return rows[0]["is_superuser"] if rows else None


async def _login(client: Any, email: str, password: str) -> int:
    response = await client.post("/token", data={"username": email, "password": password})
    return int(response.status_code)


async def test_create_superuser_reads_the_password_from_stdin_and_the_account_can_log_in(
    committed_client: Any,
) -> None:
    email = unique_email("admin")
    done = await asyncio.to_thread(
        keel,
        "create-superuser",
        "--email",
        email.upper(),
        "--password-stdin",
        stdin="stdin-password-1\n",
        script=True,
    )
    assert done.returncode == 0, done.stderr
    assert f"superuser {email} created" in done.stdout
    assert "Traceback" not in done.stderr
    assert await asyncio.to_thread(_superuser_flag, email) is True
    assert await _login(committed_client, email, "stdin-password-1") == 200


async def test_create_superuser_promotes_an_existing_account_and_runs_again_harmlessly(
    committed_client: Any,
) -> None:
    email = unique_email("member")
    signed_up = await committed_client.post(
        "/api/users", json={"email": email, "password": "members-own-1", "name": "M"}
    )
    assert signed_up.status_code == 201, signed_up.text
    env = {"KEEL_SUPERUSER_PASSWORD": "not-used-for-existing-1"}

    first = await asyncio.to_thread(keel, "create-superuser", "--email", email, env=env)
    assert first.returncode == 0, first.stderr
    assert "promoted to superuser; password unchanged" in first.stdout
    assert await asyncio.to_thread(_superuser_flag, email) is True
    assert await _login(committed_client, email, "members-own-1") == 200

    again = await asyncio.to_thread(keel, "create-superuser", "--email", email, env=env)
    assert again.returncode == 0, again.stderr
    assert "already a superuser" in again.stdout
    rows = await asyncio.to_thread(
        fetch, os.environ["DATABASE_URL"], "SELECT count(*) AS n FROM users WHERE email = $1", email
    )
    assert rows[0]["n"] == 1


async def test_create_superuser_takes_the_password_from_the_environment(
    committed_client: Any,
) -> None:
    email = unique_email("envadmin")
    done = await asyncio.to_thread(
        keel,
        "create-superuser",
        "--email",
        email,
        env={"KEEL_SUPERUSER_PASSWORD": "from-the-env-1"},
    )
    assert done.returncode == 0, done.stderr
    assert await asyncio.to_thread(_superuser_flag, email) is True
    assert await _login(committed_client, email, "from-the-env-1") == 200


@pytest.mark.parametrize(
    ("stdin_password", "message"),
    [
        (None, "no password given"),  # no terminal, no flag, no environment
        ("short\n", "at least 8 characters"),
    ],
)
async def test_create_superuser_refuses_in_one_line_without_a_usable_password(
    committed_db: Any, stdin_password: Optional[str], message: str
) -> None:
    email = unique_email("nopw")
    args = ["create-superuser", "--email", email]
    if stdin_password is not None:
        args.append("--password-stdin")
    env = {k: v for k, v in os.environ.items() if k != "KEEL_SUPERUSER_PASSWORD"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "app", *args],
        env=env,
        cwd=str(REPO_ROOT),
        input=stdin_password,
        stdin=None if stdin_password is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert await asyncio.to_thread(_superuser_flag, email) is None


# ------------------------------------------------------------------- migrate


@pytest.fixture
def scratch_database() -> Iterator[str]:
    """An empty database of its own on the test server (dropped afterwards)."""
    server = make_url(os.environ["DATABASE_URL"])
    name = f"keel_cli_{uuid.uuid4().hex[:8]}"
    admin = server.set(database="postgres").render_as_string(hide_password=False)

    async def execute(statement: str) -> None:
        await _fetch(admin, statement)

    asyncio.run(execute(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        asyncio.run(execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _revision(database_url: str) -> Optional[str]:
    tables = fetch(database_url, "SELECT to_regclass('alembic_version') AS t")
    if tables[0]["t"] is None:
        return None
    rows = fetch(database_url, "SELECT version_num FROM alembic_version")
    return rows[0]["version_num"] if rows else None


def _app_tables(database_url: str) -> List[str]:
    rows = fetch(
        database_url,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
        "AND tablename <> 'alembic_version' ORDER BY tablename",
    )
    return [row["tablename"] for row in rows]


def test_migrate_upgrades_downgrades_and_upgrades_again(scratch_database: str) -> None:
    head = _revision(os.environ["DATABASE_URL"])  # the test database is at head
    assert head
    env = {"DATABASE_URL": scratch_database}

    up = keel("migrate", env=env)
    assert up.returncode == 0, up.stderr
    assert _revision(scratch_database) == head
    tables = _app_tables(scratch_database)
    assert {"users", "posts", "accounts", "jobs"} <= set(tables)

    one_back = keel("migrate", "--downgrade", env=env)  # default: one step
    assert one_back.returncode == 0, one_back.stderr
    previous = _revision(scratch_database)
    assert previous and previous != head

    to_base = keel("migrate", "--downgrade", "base", env=env)
    assert to_base.returncode == 0, to_base.stderr
    assert _revision(scratch_database) is None
    assert _app_tables(scratch_database) == []

    again = keel("migrate", env=env)
    assert again.returncode == 0, again.stderr
    assert _revision(scratch_database) == head
    assert _app_tables(scratch_database) == tables


# --------------------------------------------------------------- train-model


def test_train_model_registers_a_version_and_if_missing_leaves_it(tmp_path: Path) -> None:
    from app.ml.registry import Registry

    model_dir = tmp_path / "models"
    trained = keel("train-model", "--model-dir", str(model_dir), "--seed", "7")
    assert trained.returncode == 0, trained.stderr
    assert "registered" in trained.stdout
    versions = Registry(model_dir).versions()
    assert len(versions) == 1

    skipped = keel("train-model", "--model-dir", str(model_dir), "--if-missing")
    assert skipped.returncode == 0, skipped.stderr
    assert "nothing to do" in skipped.stdout
    assert Registry(model_dir).versions() == versions


# ------------------------------------------------------------------ serve


def test_serve_answers_health_and_exits_zero_on_sigterm(committed_db: Any, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(KEEL), "serve", "--workers", "1", "--port", str(port)],
            env=env,
            cwd=str(REPO_ROOT),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc, timeout=120)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


# ------------------------------------------------------------------ worker


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A broker only this module's processes use."""
    server = RedisServer(tmp_path_factory.mktemp("cli-redis"))
    server.start()
    yield server
    server.stop()


def test_worker_answers_a_ping_and_exits_zero_on_sigterm(
    committed_db: Any, own_redis: RedisServer, tmp_path: Path
) -> None:
    from celery import Celery

    name = f"cli-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    log = tmp_path / "worker.log"
    proc = start(
        ["worker", "--pool", "solo", "--hostname", name, "--loglevel", "INFO"],
        log,
        env={"REDIS_URL": own_redis.url},
    )
    try:
        # A client of its own: control replies come back over the app's broker.
        client = Celery("cli-test", broker=own_redis.url)

        def pong() -> Any:
            assert proc.poll() is None, log.read_text()[-3000:]
            replies = client.control.ping(destination=[name], timeout=1.0)
            return [r for r in replies if name in r]

        try:
            replies = wait_until(pong, 60, "the worker to answer a ping")
        finally:
            client.close()
        assert replies[0][name] == {"ok": "pong"}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


# --------------------------------------------------------------------- dev


def test_dev_serves_and_a_ctrl_c_stops_everything_cleanly_in_one_line(
    committed_db: Any, own_redis: RedisServer, tmp_path: Path
) -> None:
    port = free_port()
    log = tmp_path / "dev.log"
    # DATABASE_URL (the test database) and REDIS_URL are set: `keel dev`
    # embeds only the SMTP sink. Its data folder is this test's.
    proc = start(
        ["dev", "--port", str(port)],
        log,
        env={"REDIS_URL": own_redis.url, "DATA_DIR": str(tmp_path / "data")},
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", proc, timeout=120)
        children = [
            int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        ]
        assert len(children) == 2  # the API and the worker
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        assert proc.wait(60) == 0, log.read_text()[-3000:]
    finally:
        kill_group(proc)
    output = log.read_text()
    assert not any(Path(f"/proc/{pid}").exists() for pid in children)
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-1] == "keel dev: stopped cleanly", output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "Pool disposed" not in output, output[-3000:]
    assert "exited with" not in output, output[-3000:]
