"""The service against its own PostgreSQL and Redis instances, stopped and
restarted under it (never the machine's shared servers)."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from app.core.config import REPO_ROOT
from app.core.migrations import upgrade
from app.dev.embedded import Postgres, asyncpg_url
from tests.e2e.conftest import start_server, stop_process


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    # Under the repo's .keel/: when the tests run as root the server runs as
    # another user, who must be able to reach the folder.
    (REPO_ROOT / ".keel").mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="test-outage-", dir=REPO_ROOT / ".keel"))
    server = Postgres(folder / "pg")
    server.start()
    yield server
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


def _stop(server: Postgres) -> None:
    server.stop()


def _wait_for(predicate: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def test_database_outage_answers_503_then_recovers_without_restart(
    own_postgres: Postgres,
) -> None:
    url = asyncpg_url(own_postgres)
    upgrade(url)
    proc, base = start_server({"DATABASE_URL": url, "DB_CONNECT_TIMEOUT": "2"})
    try:
        with httpx.Client(base_url=base, timeout=15) as http:
            created = http.post(
                "/api/users",
                json={"email": "out@example.com", "password": "password-1", "name": "O"},
            )
            assert created.status_code == 201
            token = http.post(
                "/token", data={"username": "out@example.com", "password": "password-1"}
            ).json()["access_token"]
            headers = {"Authorization": f"Bearer {token}"}
            post = http.post("/api/posts", json={"title": "before outage"}, headers=headers)
            assert post.status_code == 201

            assert http.get("/api/posts", headers=headers).status_code == 200

            _stop(own_postgres)
            # Reads through Reader.fetch (raw asyncpg) first: pooled connections are dead now.
            for path in ("/api/posts", f"/api/posts/{post.json()['id']}", "/api/posts?limit=5"):
                read = http.get(path, headers=headers)
                assert read.status_code == 503, (path, read.text)
                assert read.json()["code"] == "database_unavailable"
                assert "retry-after" in read.headers
            # Then the ORM session's path (a list of users).
            down = http.get("/api/users", headers=headers)
            assert down.status_code == 503
            assert down.json()["code"] == "database_unavailable"
            assert "retry-after" in down.headers
            write = http.post("/api/posts", json={"title": "during"}, headers=headers)
            assert write.status_code == 503
            ready = http.get("/ready")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]["message"]
            assert http.get("/health").status_code == 200

            own_postgres.start()
            assert _wait_for(
                lambda: http.get("/api/users/me", headers=headers).status_code == 200, 30
            )
            titles = [p["title"] for p in http.get("/api/posts", headers=headers).json()["items"]]
            assert titles == ["before outage"]
            assert http.get("/ready").json()["checks"]["database"] == "ok"
    finally:
        stop_process(proc)
