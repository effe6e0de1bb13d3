from __future__ import annotations

from typing import Any, Callable

import pytest


async def _create(client: Any, user: dict, title: str = "Hello", body: str = "World") -> Any:
    return await client.post(
        "/api/posts", json={"title": title, "body": body}, headers=user["headers"]
    )


async def test_create_post_returns_full_post(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    response = await _create(client, user)
    assert response.status_code == 201
    post = response.json()
    assert set(post) == {"id", "title", "body", "author_id", "created_at", "updated_at"}
    assert post["author_id"] == user["id"] and post["title"] == "Hello"
    assert post["created_at"].endswith("Z") or "+00:00" in post["created_at"]


@pytest.mark.parametrize(
    "payload",
    [{}, {"title": ""}, {"title": "x" * 201}, {"title": "t", "body": "b" * 50_001}, {"title": 5}],
)
async def test_create_post_rejects_bad_input(
    client: Any, make_user: Callable[..., Any], payload: dict
) -> None:
    user = await make_user()
    response = await client.post("/api/posts", json=payload, headers=user["headers"])
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_posts_require_auth(client: Any) -> None:
    assert (await client.get("/api/posts")).status_code == 401
    assert (await client.post("/api/posts", json={"title": "t"})).status_code == 401
    assert (await client.get("/api/posts/1")).status_code == 401


async def test_list_posts_is_paged_newest_first(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    ids = [(await _create(client, user, title=f"t{i}")).json()["id"] for i in range(3)]
    page = (await client.get("/api/posts", params={"limit": 2}, headers=user["headers"])).json()
    assert page["limit"] == 2 and page["offset"] == 0 and page["total"] >= 3
    assert [p["id"] for p in page["items"]] == ids[::-1][:2]
    second = (
        await client.get("/api/posts", params={"limit": 2, "offset": 1}, headers=user["headers"])
    ).json()
    assert second["items"][0]["id"] == ids[1]


async def test_list_items_match_the_created_posts_exactly(
    client: Any, make_user: Callable[..., Any]
) -> None:
    # The list is serialized straight from rows (orjson), creation through the
    # PostOut model (pydantic): both must write the same JSON.
    user = await make_user()
    created = [(await _create(client, user, title=f"t{i}", body="é" * i)).json() for i in range(3)]
    page = (await client.get("/api/posts", params={"limit": 3}, headers=user["headers"])).json()
    assert page["items"] == created[::-1]


async def test_page_past_the_end_is_empty_with_the_total(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    await _create(client, user)
    first = (await client.get("/api/posts", headers=user["headers"])).json()
    past = (
        await client.get("/api/posts", params={"offset": 100_000}, headers=user["headers"])
    ).json()
    assert past == {"items": [], "total": first["total"], "limit": 50, "offset": 100_000}


async def test_anyone_signed_in_reads_a_post(client: Any, make_user: Callable[..., Any]) -> None:
    author, reader = await make_user(), await make_user()
    post = (await _create(client, author)).json()
    response = await client.get(f"/api/posts/{post['id']}", headers=reader["headers"])
    assert response.status_code == 200 and response.json() == post


async def test_missing_post_is_404(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    for method in ("get", "patch", "delete"):
        kwargs = {"json": {"title": "x"}} if method == "patch" else {}
        response = await client.request(
            method, "/api/posts/987654", headers=user["headers"], **kwargs
        )
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("bad_id", ["abc", "0", "-3", "99999999999999999999"])
async def test_invalid_post_id_is_422(
    client: Any, make_user: Callable[..., Any], bad_id: str
) -> None:
    user = await make_user()
    assert (await client.get(f"/api/posts/{bad_id}", headers=user["headers"])).status_code == 422


async def test_author_updates_post_partially(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    post = (await _create(client, user)).json()
    response = await client.patch(
        f"/api/posts/{post['id']}", json={"body": "Changed"}, headers=user["headers"]
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["body"] == "Changed" and updated["title"] == post["title"]


async def test_non_author_cannot_change_or_delete(
    client: Any, make_user: Callable[..., Any]
) -> None:
    author, other = await make_user(), await make_user()
    post = (await _create(client, author)).json()
    patch = await client.patch(
        f"/api/posts/{post['id']}", json={"title": "x"}, headers=other["headers"]
    )
    assert patch.status_code == 403 and patch.json()["code"] == "not_author"
    delete = await client.delete(f"/api/posts/{post['id']}", headers=other["headers"])
    assert delete.status_code == 403 and delete.json()["code"] == "not_author"
    unchanged = await client.get(f"/api/posts/{post['id']}", headers=author["headers"])
    assert unchanged.json()["title"] == post["title"]


async def test_patch_rejects_null_and_bad_fields(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    post = (await _create(client, user)).json()
    for payload in ({"title": None}, {"title": ""}, {"body": "x" * 50_001}):
        response = await client.patch(
            f"/api/posts/{post['id']}", json=payload, headers=user["headers"]
        )
        assert response.status_code == 422


async def test_author_deletes_post(client: Any, make_user: Callable[..., Any]) -> None:
    user = await make_user()
    post = (await _create(client, user)).json()
    response = await client.delete(f"/api/posts/{post['id']}", headers=user["headers"])
    assert response.status_code == 204
    assert (
        await client.get(f"/api/posts/{post['id']}", headers=user["headers"])
    ).status_code == 404


async def test_a_repeated_paging_parameter_takes_the_last_value(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    for i in range(4):
        await _create(client, user, title=f"t{i}")
    once = await client.get("/api/posts", params={"limit": 3}, headers=user["headers"])
    twice = await client.get("/api/posts?limit=1&limit=3&offset=0", headers=user["headers"])
    assert once.status_code == twice.status_code == 200
    assert once.content == twice.content
    assert once.headers["content-type"] == twice.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    "query",
    ["limit=0", "limit=101", "limit=abc", "offset=-1", "offset=1000001", "limit=1&limt=2"],
)
async def test_list_posts_rejects_bad_or_unknown_query_parameters(
    client: Any, make_user: Callable[..., Any], query: str
) -> None:
    user = await make_user()
    response = await client.get(f"/api/posts?{query}", headers=user["headers"])
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
