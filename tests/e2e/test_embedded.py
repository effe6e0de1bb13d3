"""The embedded PostgreSQL and Redis behind `make run` and `make test`: real
servers started in a fresh process, which must leave nothing behind outside
their data folder (the system temp directory stays as it was) and no server
running once that process has exited."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

from app.core.config import REPO_ROOT
from app.dev import embedded

pytestmark = pytest.mark.e2e

_REDIS = """
    import redis
    url = embedded.embedded_redis_url(data)
    client = redis.Redis.from_url(url)
    assert client.ping()
    client.close()
"""

_POSTGRES = """
    import asyncio, asyncpg
    from sqlalchemy.engine import make_url
    url = make_url(embedded.embedded_database_url(data))

    async def probe():
        conn = await asyncpg.connect(
            user=url.username, host=url.query["host"], database=url.database
        )
        try:
            assert await conn.fetchval("SELECT 1") == 1
        finally:
            await conn.close()

    asyncio.run(probe())
"""


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder under the repo's .keel/, like `make run`'s (the server
    user must be able to reach it when the tests run as root)."""
    parent = REPO_ROOT / ".keel"
    parent.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="test-embedded-", dir=parent))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _run(tmp_path: Path, data: Path, body: str, stop: bool) -> Dict[str, Path]:
    """Runs `body` in a fresh interpreter whose temp directory is an empty
    folder of this test; `stop` says whether it calls stop_all() itself or
    leaves the servers to the exit handlers."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from app.dev import embedded\n"
        "data = Path(sys.argv[1])\n"
        + textwrap.dedent(body)
        + ("embedded.stop_all()\n" if stop else "")
    )
    env = {**os.environ, "TMPDIR": str(temp)}
    done = subprocess.run(
        [sys.executable, "-c", script, str(data)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return {"temp": temp, "data": data}


def _running_servers(data: Path) -> List[str]:
    """Command lines of the processes that name this test's data folder
    (postgres -D <folder>, redis-server's title shows its socket)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended meanwhile
            continue
        if str(data) in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.parametrize("stop", [True, False], ids=["stop_all", "at_exit"])
def test_embedded_redis_leaves_no_temp_folder_and_no_server(
    tmp_path: Path, data_dir: Path, stop: bool
) -> None:
    folders = _run(tmp_path, data_dir, _REDIS, stop)
    assert sorted(os.listdir(folders["temp"])) == []
    assert _running_servers(folders["data"]) == []


@pytest.mark.parametrize("stop", [True, False], ids=["stop_all", "at_exit"])
def test_embedded_postgres_leaves_no_temp_folder_and_no_server(
    tmp_path: Path, data_dir: Path, stop: bool
) -> None:
    folders = _run(tmp_path, data_dir, _POSTGRES, stop)
    assert sorted(os.listdir(folders["temp"])) == []
    assert _running_servers(folders["data"]) == []


def _distro_postgres() -> Path:
    try:
        return embedded.postgres_bin_dir(use_wheel=False)
    except embedded.EmbeddedUnavailable:
        pytest.skip("the distribution's PostgreSQL is not installed")


def test_distribution_postgres_serves_and_stops(data_dir: Path) -> None:
    """The binaries Python 3.13 uses (no pgserver wheel there), on any Python."""
    import asyncio

    import asyncpg

    server = embedded.Postgres(data_dir / "pgdata", bin_dir=_distro_postgres())
    server.start()
    try:

        async def probe() -> int:
            conn = await asyncpg.connect(user="postgres", host=str(server.socket_dir))
            try:
                return int(await conn.fetchval("SELECT 1"))
            finally:
                await conn.close()

        assert asyncio.run(probe()) == 1
        assert server.running()
        assert _running_servers(data_dir) != []
    finally:
        server.stop()
    assert not server.running()
    assert _running_servers(data_dir) == []


def test_distribution_redis_serves_and_stops(data_dir: Path) -> None:
    import redis

    try:
        binary = embedded.redis_server_binary(use_wheel=False)
    except embedded.EmbeddedUnavailable:
        pytest.skip("the distribution's redis-server is not installed")
    server = embedded.Redis(data_dir / "redis", binary=binary)
    server.start()
    try:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.close()
        assert _running_servers(data_dir) != []
    finally:
        server.stop()
    assert _running_servers(data_dir) == []


def test_missing_binaries_say_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(embedded.EmbeddedUnavailable, match="apt-get install postgresql"):
        embedded.postgres_bin_dir(use_wheel=False, search_path="", distro_root=tmp_path)
    with pytest.raises(embedded.EmbeddedUnavailable, match="apt-get install redis-server"):
        embedded.redis_server_binary(use_wheel=False, search_path="")


def test_a_long_data_path_puts_sockets_in_a_temp_folder_removed_at_stop(data_dir: Path) -> None:
    deep = data_dir.joinpath(*(["nested-folder-name"] * 6), "redis")
    server = embedded.Redis(deep)
    assert len(str(server.socket_file)) <= 100
    server.start()
    try:
        assert server.socket_file.parent.is_dir()
    finally:
        server.stop()
    assert not server.socket_file.parent.exists()
