"""CurrentUser's principal: the caller's identity without a database round
trip per request, yet revocations apply at once in the
process that performs them."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List

import pytest

from app.auth import principal as principal_module
from app.auth import service as auth_service
from app.auth.principal import principal_cache
from app.users.models import User

FEATURES = {"features": [0.0] * 30}


class _CountingReader:
    def __init__(self, inner: Any, reads: List[Dict[str, Any]]) -> None:
        self.inner, self.reads = inner, reads

    async def fetch(self, read: Any, parameters: Dict[str, Any]) -> Any:
        self.reads.append(parameters)
        return await self.inner.fetch(read, parameters)


@pytest.fixture
def standing_reads(client: Any) -> Iterator[List[Dict[str, Any]]]:
    """The parameters of every standing read made while active (the read goes
    to asyncpg directly, so the engine's statement events do not see it)."""
    reads: List[Dict[str, Any]] = []
    real = principal_module.standing_reader  # the test session's, set by `client`
    principal_module.standing_reader = lambda: _CountingReader(real(), reads)
    yield reads
    principal_module.standing_reader = real


async def test_revoking_sessions_rejects_cached_principal_at_once(
    client: Any, session: Any, make_user: Callable[..., Any], settings: Any
) -> None:
    from app.ml.serving import model_server

    user = await make_user()
    await model_server.start(settings.resolved_model_dir, watch_interval=0)
    try:
        first = await client.post("/api/predict", json=FEATURES, headers=user["headers"])
        assert first.status_code == 200
        assert principal_cache.get(user["id"])[0]  # now cached

        db_user = await session.get(User, user["id"])
        await auth_service.revoke_sessions(session, db_user)
        await session.commit()  # the cache entry goes when the revocation commits

        revoked = await client.post("/api/predict", json=FEATURES, headers=user["headers"])
        assert revoked.status_code == 401
        assert revoked.json()["code"] == "invalid_token"
    finally:
        await model_server.stop()


async def test_a_deactivated_account_has_no_standing(
    client: Any, session: Any, make_user: Callable[..., Any]
) -> None:
    from app.auth.principal import authenticate_principal
    from app.core.errors import InvalidToken

    user = await make_user()
    principal_cache.clear()
    assert (await authenticate_principal(user["access_token"])).id == user["id"]
    db_user = await session.get(User, user["id"])
    db_user.is_active = False
    await session.flush()
    principal_cache.clear()  # as another process sees it once its entry expires
    with pytest.raises(InvalidToken):
        await authenticate_principal(user["access_token"])


async def test_predict_requires_a_valid_token(client: Any) -> None:
    missing = await client.post("/api/predict", json=FEATURES)
    assert missing.status_code == 401
    forged = await client.post(
        "/api/predict", json=FEATURES, headers={"Authorization": "Bearer not.a.jwt"}
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"


async def test_concurrent_requests_share_one_standing_lookup(
    client: Any, make_user: Callable[..., Any], standing_reads: Any
) -> None:
    import asyncio

    from app.auth.principal import authenticate_principal

    user = await make_user()
    principal_cache.clear()
    standing_reads.clear()
    principals = await asyncio.gather(
        *(authenticate_principal(user["access_token"]) for _ in range(10))
    )
    assert {p.id for p in principals} == {user["id"]}
    assert standing_reads == [{"user_id": user["id"]}]


async def test_a_failed_standing_lookup_fails_every_waiter_and_is_retried(
    client: Any, make_user: Callable[..., Any]
) -> None:
    import asyncio
    from contextlib import asynccontextmanager

    from app.core.db import Reader
    from app.core.errors import InvalidToken
    from app.core.fifo_gate import FifoGate

    user = await make_user()
    principal_cache.clear()
    working = principal_module.standing_reader

    @asynccontextmanager
    async def database_down() -> Any:
        raise ConnectionRefusedError("database down")
        yield  # pragma: no cover

    principal_module.standing_reader = lambda: Reader(database_down, FifoGate(1), 5.0)
    try:
        results = await asyncio.gather(
            *(principal_module.authenticate_principal(user["access_token"]) for _ in range(3)),
            return_exceptions=True,
        )
        assert all(isinstance(r, ConnectionRefusedError) for r in results)
    finally:
        principal_module.standing_reader = working
    recovered = await principal_module.authenticate_principal(user["access_token"])
    assert recovered.id == user["id"]
    with pytest.raises(InvalidToken):
        await principal_module.authenticate_principal("forged")


async def test_a_standing_due_for_refresh_is_reloaded_in_the_background(
    client: Any,
    make_user: Callable[..., Any],
    standing_reads: Any,
    settings: Any,
    monkeypatch: Any,
) -> None:
    import asyncio

    from app.auth.principal import Principal, authenticate_principal

    user = await make_user()
    principal_cache.clear()
    # A standing in the second half of its life: served as is, reloaded once.
    # The cache's clock stands still, so the entry cannot expire meanwhile.
    now = [1000.0]
    monkeypatch.setattr(principal_cache, "clock", lambda: now[0])
    stale = Principal(
        id=user["id"], is_superuser=True, tokens_valid_after=None, email="u@example.com", name="u"
    )
    principal_cache.put(user["id"], stale, ttl=10)
    now[0] += 6  # past half its life, well before its end
    standing_reads.clear()
    served = await asyncio.gather(*(authenticate_principal(user["access_token"]) for _ in range(5)))
    assert all(p is stale for p in served)  # nobody waited for the read
    from app.auth import principal as principal_module

    await asyncio.gather(*principal_module._standing_loads.values())  # the background read
    found, fresh = principal_cache.get(user["id"])
    assert found and fresh is not None and fresh.is_superuser is False  # the database's truth
    assert standing_reads == [{"user_id": user["id"]}]


async def test_cancelling_the_standing_loads_stops_a_read_in_flight(
    client: Any, make_user: Callable[..., Any]
) -> None:
    import asyncio

    from app.auth.principal import authenticate_principal, cancel_standing_loads

    user = await make_user()
    principal_cache.clear()
    working = principal_module.standing_reader
    reading = asyncio.Event()

    class StalledReader:
        async def fetch(self, read: Any, parameters: Dict[str, Any]) -> Any:
            reading.set()
            await asyncio.Event().wait()  # a database that never answers

    principal_module.standing_reader = StalledReader
    try:
        waiter = asyncio.ensure_future(authenticate_principal(user["access_token"]))
        await asyncio.wait_for(reading.wait(), 5)
        cancel_standing_loads()  # as the app's shutdown does
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(waiter, 5)
    finally:
        principal_module.standing_reader = working
    # Forgotten, not shared with the next caller: a new read answers.
    assert (await authenticate_principal(user["access_token"])).id == user["id"]


async def test_a_standing_read_before_the_revocation_commits_is_not_kept(
    committed_client: Any,
) -> None:
    """A request that reads the standing after `revoke_sessions` ran but before
    its transaction committed sees (correctly) the old standing; it must not
    stay cached once the revocation is committed."""
    from app.auth.principal import authenticate_principal
    from app.core.db import db
    from app.core.errors import InvalidToken

    email, password = "race@example.com", "correct-horse-1"
    created = await committed_client.post(
        "/api/users", json={"email": email, "password": password, "name": "Race"}
    )
    assert created.status_code == 201, created.text
    login = await committed_client.post("/token", data={"username": email, "password": password})
    token = login.json()["access_token"]
    principal_cache.clear()

    async with db.sessionmaker() as revoking:
        user = await revoking.get(User, created.json()["id"])
        await auth_service.revoke_sessions(revoking, user)
        await revoking.flush()
        # A concurrent request, between the revocation and its commit.
        assert (await authenticate_principal(token)).id == user.id
        await revoking.commit()

    with pytest.raises(InvalidToken):
        await authenticate_principal(token)
    assert (
        await committed_client.get("/api/users/me", headers={"Authorization": f"Bearer {token}"})
    ).status_code == 401
