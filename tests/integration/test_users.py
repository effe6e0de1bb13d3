from __future__ import annotations

from typing import Any, Callable

import pytest

from tests.conftest import unique_email


async def test_sign_up_returns_public_fields_and_stores_bcrypt_hash(
    client: Any, session: Any
) -> None:
    from app.users.models import User

    email = unique_email()
    response = await client.post(
        "/api/users", json={"email": email, "password": "password-1", "name": "Ann"}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"id", "email", "name"}
    assert body["email"] == email and body["name"] == "Ann"
    user = await session.get(User, body["id"])
    assert user.password_hash.startswith("$2b$") and "password-1" not in user.password_hash


async def test_sign_up_email_taken_is_case_insensitive(client: Any) -> None:
    email = unique_email()
    first = await client.post(
        "/api/users", json={"email": email, "password": "password-1", "name": "A"}
    )
    assert first.status_code == 201
    again = await client.post(
        "/api/users", json={"email": email.upper(), "password": "password-1", "name": "B"}
    )
    assert again.status_code == 409
    assert again.json()["code"] == "email_taken"


@pytest.mark.parametrize(
    "payload",
    [
        {"email": "nope", "password": "password-1", "name": "A"},
        {"email": "a@example.com", "password": "short", "name": "A"},
        {"email": "a@example.com", "password": "x" * 73, "name": "A"},
        {"email": "a@example.com", "password": "password-1", "name": ""},
        {"email": "a@example.com", "password": "password-1"},
        {"email": ["a@example.com"], "password": "password-1", "name": "A"},
        {"email": "a@example.com", "password": None, "name": "A"},
        {"email": "a@example.com", "password": "password-1", "name": "x" * 100_000},
        [],
        "string",
    ],
)
async def test_sign_up_rejects_bad_input_with_422(client: Any, payload: Any) -> None:
    response = await client.post("/api/users", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "validation_error"
    assert isinstance(body["detail"], list)


async def test_sign_up_rejects_malformed_json(client: Any) -> None:
    response = await client.post(
        "/api/users", content=b'{"email": ', headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_me_returns_current_user(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user(name="Me")
    response = await client.get("/api/users/me", headers=user["headers"])
    assert response.status_code == 200
    assert response.json() == {"id": user["id"], "email": user["email"], "name": "Me"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer " + "a" * 5000},
    ],
)
async def test_me_without_valid_token_is_401_with_bearer_challenge(
    client: Any, headers: dict
) -> None:
    response = await client.get("/api/users/me", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["code"] in {"not_authenticated", "invalid_token"}


async def test_list_users_shows_profiles_with_posts_and_no_emails(
    client: Any, make_user: Callable[..., Any]
) -> None:
    author = await make_user(name="Author")
    await client.post("/api/posts", json={"title": "First", "body": "x"}, headers=author["headers"])
    response = await client.get("/api/users", params={"limit": 100}, headers=author["headers"])
    assert response.status_code == 200
    page = response.json()
    assert set(page) == {"items", "total", "limit", "offset"}
    mine = next(item for item in page["items"] if item["id"] == author["id"])
    assert "email" not in mine
    assert [p["title"] for p in mine["posts"]] == ["First"]
    assert set(mine["posts"][0]) == {"id", "title", "created_at"}


async def test_list_users_statement_count_does_not_grow_with_page_size(
    client: Any, make_user: Callable[..., Any], statement_counter: list
) -> None:
    viewer = await make_user()
    for i in range(6):
        user = await make_user()
        await client.post("/api/posts", json={"title": f"p{i}"}, headers=user["headers"])

    async def count_for(limit: int) -> int:
        statement_counter.clear()
        response = await client.get(
            "/api/users", params={"limit": limit}, headers=viewer["headers"]
        )
        assert response.status_code == 200
        assert len(response.json()["items"]) == min(limit, response.json()["total"])
        return len([s for s in statement_counter if not s.startswith(("SAVEPOINT", "RELEASE"))])

    small, large = await count_for(1), await count_for(7)
    assert small == large


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}])
async def test_list_users_rejects_bad_paging(
    client: Any, make_user: Callable[..., Any], params: dict
) -> None:
    user = await make_user()
    response = await client.get("/api/users", params=params, headers=user["headers"])
    assert response.status_code == 422


async def test_list_users_requires_auth(client: Any) -> None:
    assert (await client.get("/api/users")).status_code == 401


async def test_every_response_has_request_id_echoed(client: Any) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert response.headers["x-request-id"] == "abc-123"
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.json() == {"status": "ok"}
