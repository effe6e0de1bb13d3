"""Migrations: upgrade → downgrade → upgrade on a fresh database, and the
models agree with the migrated schema (no autogenerate diff)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Iterator, List

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.core.migrations import downgrade, upgrade
from app.models import Base
from tests.conftest import _admin_execute


@pytest.fixture(scope="module")
def fresh_database_url(pytestconfig: pytest.Config) -> Iterator[str]:
    server_url = pytestconfig._keel_server_url  # type: ignore[attr-defined]
    name = f"keel_migrations_{uuid.uuid4().hex[:8]}"
    _admin_execute(server_url, f'CREATE DATABASE "{name}"')
    yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    _admin_execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _inspect(url: str) -> Any:
    async def run() -> Any:
        engine = create_async_engine(url)
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda c: sorted(inspect(c).get_table_names()))
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), Base.metadata
                )
            )
        await engine.dispose()
        return tables, diff

    return asyncio.run(run())


def _run_in_thread(fn: Any, *args: Any) -> Any:
    # Alembic's env.py runs its own event loop; keep it off pytest's loop thread.
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def test_upgrade_downgrade_upgrade_round_trip_matches_models(fresh_database_url: str) -> None:
    url = fresh_database_url
    _run_in_thread(upgrade, url)
    tables, diff = _run_in_thread(_inspect, url)
    expected: List[str] = sorted(t.name for t in Base.metadata.sorted_tables)
    assert set(expected) <= set(tables)
    assert diff == []

    _run_in_thread(downgrade, url)
    tables, _ = _run_in_thread(_inspect, url)
    assert tables == ["alembic_version"]

    _run_in_thread(upgrade, url)
    tables, diff = _run_in_thread(_inspect, url)
    assert set(expected) <= set(tables)
    assert diff == []
