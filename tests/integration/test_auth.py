from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Callable

import jwt
import pytest

from app.core.security import ACCESS, REFRESH, create_token


async def _login(client: Any, email: str, password: str) -> Any:
    return await client.post("/token", data={"username": email, "password": password})


async def test_login_returns_bearer_pair(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    response = await _login(client, user["email"].upper(), user["password"])
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 15 * 60
    assert body["refresh_token"] and body["access_token"].count(".") == 2


@pytest.mark.parametrize("which", ["wrong_password", "unknown_email"])
async def test_login_with_bad_credentials_is_401(
    client: Any, make_user: Callable[..., Any], which: str
) -> None:
    user = await make_user()
    email = user["email"] if which == "wrong_password" else "ghost@example.com"
    response = await _login(client, email, "not-the-password")
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert response.headers["www-authenticate"] == "Bearer"


async def test_login_missing_form_fields_is_422(client: Any) -> None:
    response = await client.post("/token", data={"username": "a@example.com"})
    assert response.status_code == 422
    response = await client.post("/token", json={"username": "a", "password": "b"})
    assert response.status_code == 422


async def test_repeated_failures_for_one_account_are_throttled(
    client: Any, make_user: Callable[..., Any], settings: Any
) -> None:
    user = await make_user()
    for _ in range(settings.login_max_failures):
        assert (await _login(client, user["email"], "wrong-password")).status_code == 401
    blocked = await _login(client, user["email"], user["password"])
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "too_many_attempts"
    assert 0 < int(blocked.headers["retry-after"]) <= settings.login_lockout_seconds


async def test_refresh_rotates_and_old_token_stops_working(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    first = await client.post("/token/refresh", json={"refresh_token": user["refresh_token"]})
    assert first.status_code == 200
    new_pair = first.json()
    assert new_pair["refresh_token"] != user["refresh_token"]
    me = await client.get(
        "/api/users/me", headers={"Authorization": f"Bearer {new_pair['access_token']}"}
    )
    assert me.status_code == 200
    reused = await client.post("/token/refresh", json={"refresh_token": user["refresh_token"]})
    assert reused.status_code == 401
    assert reused.json()["code"] == "invalid_token"


async def test_reusing_rotated_token_revokes_whole_family(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    rotated = (
        await client.post("/token/refresh", json={"refresh_token": user["refresh_token"]})
    ).json()
    # An attacker replays the old token: the legitimate newer token dies too.
    await client.post("/token/refresh", json={"refresh_token": user["refresh_token"]})
    latest = await client.post("/token/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert latest.status_code == 401
    # Another login (another family) is unaffected.
    other = (await _login(client, user["email"], user["password"])).json()
    again = await client.post("/token/refresh", json={"refresh_token": other["refresh_token"]})
    assert again.status_code == 200


@pytest.mark.parametrize("token", ["", "garbage", "x" * 600])
async def test_refresh_with_bad_token_is_401_or_422(client: Any, token: str) -> None:
    response = await client.post("/token/refresh", json={"refresh_token": token})
    assert response.status_code in (401, 422)
    if response.status_code == 401:
        assert response.json()["code"] == "invalid_token"


async def test_refresh_rejects_access_token(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    response = await client.post("/token/refresh", json={"refresh_token": user["access_token"]})
    assert response.status_code == 401


async def test_logout_revokes_refresh_token(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    response = await client.post(
        "/api/auth/logout", json={"refresh_token": user["refresh_token"]}, headers=user["headers"]
    )
    assert response.status_code == 204
    assert response.content == b""
    refreshed = await client.post("/token/refresh", json={"refresh_token": user["refresh_token"]})
    assert refreshed.status_code == 401


async def test_logout_requires_auth_and_ignores_foreign_tokens(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    anonymous = await client.post(
        "/api/auth/logout", json={"refresh_token": alice["refresh_token"]}
    )
    assert anonymous.status_code == 401
    foreign = await client.post(
        "/api/auth/logout", json={"refresh_token": alice["refresh_token"]}, headers=bob["headers"]
    )
    assert foreign.status_code == 204
    still_valid = await client.post(
        "/token/refresh", json={"refresh_token": alice["refresh_token"]}
    )
    assert still_valid.status_code == 200


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_expired_access_token_is_401(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    token = create_token(str(user["id"]), ACCESS, timedelta(seconds=-5))
    assert (await client.get("/api/users/me", headers=_bearer(token))).status_code == 401


async def test_refresh_typed_jwt_is_not_an_access_token(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    token = create_token(str(user["id"]), REFRESH, timedelta(minutes=5))
    assert (await client.get("/api/users/me", headers=_bearer(token))).status_code == 401


async def test_alg_none_and_foreign_key_tokens_are_401(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    claims = {"sub": str(user["id"]), "type": ACCESS, "iat": 1, "exp": 9999999999, "jti": "j"}
    unsigned = jwt.encode(claims, None, algorithm="none")
    forged = jwt.encode(claims, "attacker-key-attacker-key-attacker-key", algorithm="HS256")
    for token in (unsigned, forged):
        response = await client.get("/api/users/me", headers=_bearer(token))
        assert response.status_code == 401
        assert response.json()["code"] == "invalid_token"


async def test_token_for_deleted_or_absurd_subject_is_401(client: Any) -> None:
    for subject in ("999999", "-1", "abc", str(2**70)):
        token = create_token(subject, ACCESS, timedelta(minutes=5))
        assert (await client.get("/api/users/me", headers=_bearer(token))).status_code == 401


async def test_concurrent_refresh_with_one_token_yields_one_winner(
    committed_client: Any,
) -> None:
    email, password = "race@example.com", "password-123"
    await committed_client.post(
        "/api/users", json={"email": email, "password": password, "name": "R"}
    )
    pair = (await _login(committed_client, email, password)).json()
    results = await asyncio.gather(
        *[
            committed_client.post("/token/refresh", json={"refresh_token": pair["refresh_token"]})
            for _ in range(5)
        ]
    )
    assert sorted(r.status_code for r in results) == [200, 401, 401, 401, 401]
