"""Every integer id in a path is an integer written in digits: `1.0`, `+1`,
`1_0` are 422, never read as id 1 (docs/api.md: ids are 1…2,147,483,647)."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest
from fastapi.routing import APIRoute

BAD_IDS = ["1.0", "1.5", "+1", "1_0", " 1", "0x1", "1e0", "0", "2147483648"]


def id_routes(app: Any) -> List[Tuple[str, str, List[str]]]:
    """(method, path, integer path parameters) of every API route with one."""
    found = []
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        names = [p.name for p in route.dependant.path_params if p.field_info.annotation is int]
        if names:
            for method in sorted(route.methods):
                found.append((method, route.path, names))
    return found


def test_the_routes_with_integer_ids_are_all_found(app: Any) -> None:
    paths = {path for _, path, _ in id_routes(app)}
    assert {
        "/api/posts/{post_id}",
        "/api/accounts/{account_id}",
        "/api/accounts/{account_id}/entries",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/retry",
        "/api/send-email/{user_id}",
    } <= paths


async def test_non_integer_ids_are_422_on_every_route(
    app: Any, client: Any, make_superuser: Callable[..., Any]
) -> None:
    admin = await make_superuser()
    post = await client.post(
        "/api/posts", json={"title": "one", "body": ""}, headers=admin["headers"]
    )
    assert post.status_code == 201
    failures = []
    for method, path, names in id_routes(app):
        for bad in BAD_IDS:
            url = path
            for name in names:
                url = url.replace("{" + name + "}", bad)
            response = await client.request(method, url, headers=admin["headers"], json={})
            body = response.json() if response.status_code == 422 else None
            located = body is not None and any(
                error.get("loc", [None])[0] == "path" for error in body["detail"]
            )
            if response.status_code != 422 or not located:
                failures.append((method, url, response.status_code))
    assert failures == []


@pytest.mark.parametrize("zeros", ["", "0", "00"])
async def test_ids_in_digits_still_work(
    client: Any, make_user: Callable[..., Any], zeros: str
) -> None:
    user = await make_user()
    created = await client.post(
        "/api/posts", json={"title": "t", "body": ""}, headers=user["headers"]
    )
    post_id = created.json()["id"]
    response = await client.get(f"/api/posts/{zeros}{post_id}", headers=user["headers"])
    assert response.status_code == 200
    assert response.json()["id"] == post_id
