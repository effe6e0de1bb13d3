"""Login throttling cannot be turned against an account's owner: failures
lock the (account, client address) pair, a completed password reset clears
the account's counters, and one address still has a budget of its own."""

from __future__ import annotations

import secrets
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any, AsyncIterator, Callable

import httpx

from app.auth import repository
from app.auth.password_reset import reset_token_from_nonce
from app.core.security import sha256_hex, utcnow


@asynccontextmanager
async def _from(app: Any, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client calling from `address` (the test's dependency overrides apply)."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def _login(http: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await http.post("/token", data={"username": email, "password": password})


async def _lock_out(http: httpx.AsyncClient, email: str, settings: Any) -> None:
    for _ in range(settings.login_max_failures):
        assert (await _login(http, email, "wrong-password")).status_code == 401
    assert (await _login(http, email, "wrong-password")).status_code == 429


async def test_failures_from_one_address_do_not_lock_the_owner_out_elsewhere(
    app: Any, client: Any, make_user: Callable[..., Any], settings: Any
) -> None:
    owner = await make_user()
    async with _from(app, "203.0.113.7") as attacker, _from(app, "198.51.100.2") as home:
        await _lock_out(attacker, owner["email"], settings)
        locked = await _login(attacker, owner["email"], owner["password"])
        assert locked.status_code == 429 and locked.json()["code"] == "too_many_attempts"
        assert 0 < int(locked.headers["retry-after"]) <= settings.login_lockout_seconds
        assert (await _login(home, owner["email"], owner["password"])).status_code == 200


async def test_a_completed_password_reset_clears_the_accounts_counters(
    app: Any, client: Any, session: Any, make_user: Callable[..., Any], settings: Any
) -> None:
    owner = await make_user()
    shared_address = "192.0.2.44"  # the owner behind the attacker's NAT
    async with _from(app, shared_address) as http:
        await _lock_out(http, owner["email"], settings)
        nonce = secrets.token_hex(16)
        await repository.add_password_reset_token(
            session,
            user_id=owner["id"],
            nonce=nonce,
            token_hash=sha256_hex(reset_token_from_nonce(nonce)),
            expires_at=utcnow() + timedelta(minutes=30),
        )
        confirmed = await http.post(
            "/api/auth/password-reset/confirm",
            json={"token": reset_token_from_nonce(nonce), "new_password": "brand-new-pass-1"},
        )
        assert confirmed.status_code == 204, confirmed.text
        assert (await _login(http, owner["email"], "brand-new-pass-1")).status_code == 200


async def test_one_address_still_has_a_budget_across_accounts(
    app: Any, client: Any, settings: Any
) -> None:
    budget = settings.login_max_failures * 10
    async with _from(app, "203.0.113.99") as sprayer, _from(app, "198.51.100.3") as other:
        for n in range(budget):
            # Never the same account twice: only the address limit can stop it.
            response = await _login(sprayer, f"victim{n}@example.com", "guess-1234")
            assert response.status_code == 401, n
        assert (await _login(sprayer, "fresh@example.com", "guess-1234")).status_code == 429
        assert (await _login(other, "fresh@example.com", "guess-1234")).status_code == 401


async def test_a_successful_login_clears_only_its_own_pair(
    app: Any, client: Any, make_user: Callable[..., Any], settings: Any
) -> None:
    owner = await make_user()
    async with _from(app, "203.0.113.8") as attacker, _from(app, "198.51.100.4") as home:
        for _ in range(settings.login_max_failures - 1):
            assert (await _login(attacker, owner["email"], "wrong-password")).status_code == 401
        assert (await _login(home, owner["email"], owner["password"])).status_code == 200
        # The owner's success elsewhere gives the attacker no fresh guesses.
        assert (await _login(attacker, owner["email"], "wrong-password")).status_code == 401
        assert (await _login(attacker, owner["email"], "wrong-password")).status_code == 429


async def test_redis_calls_are_bounded_by_the_setting() -> None:
    """Past REDIS_TIMEOUT_SECONDS Redis counts as down (the throttle fails
    open); the suite sets 10 s, production's default is 0.5 s."""
    from app.core.config import Settings, get_settings
    from app.core.redis import get_redis

    kwargs = get_redis().connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 10
    assert get_settings().redis_timeout_seconds == 10
    assert Settings.model_fields["redis_timeout_seconds"].default == 0.5
