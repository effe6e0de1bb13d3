"""The lean path of GET /api/posts (app/core/fastpath.py).

It must answer plain page requests itself, with exactly the body the regular
route gives, and decline everything else without sending a byte, leaving the
regular route to give its usual answer."""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

from app.core.pagination import plain_page
from app.posts.router import _list_posts_fast


@pytest.mark.parametrize(
    "query, expected",
    [
        (b"", (50, 0)),
        (b"limit=3", (3, 0)),
        (b"offset=7", (50, 7)),
        (b"limit=100&offset=1000000", (100, 1_000_000)),
        (b"offset=2&limit=05", (5, 2)),
        (b"limit=0", None),
        (b"limit=101", None),
        (b"offset=1000001", None),
        (b"limit=-1", None),
        (b"limit=+1", None),
        (b"limit=", None),
        (b"limit", None),
        (b"limit=1.0", None),
        (b"limit=%31", None),
        (b"limit=99999999999999999999", None),
        (b"limit=1&limit=2", None),
        (b"limit=1&x=2", None),
        (b"limt=1", None),
        (b"&", None),
        (b"limit=\xd9\xa3", None),  # an Arabic-Indic digit: not ASCII
    ],
)
def test_plain_page_accepts_only_plain_in_range_digits(
    query: bytes, expected: Optional[Tuple[int, int]]
) -> None:
    assert plain_page(query) == expected


class Sink:
    def __init__(self) -> None:
        self.messages: List[Dict[str, Any]] = []

    async def __call__(self, message: Dict[str, Any]) -> None:
        self.messages.append(message)


def _scope(app: Any, authorization: Optional[bytes], query: bytes = b"") -> Dict[str, Any]:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    return {
        "type": "http",
        "method": "GET",
        "path": "/api/posts",
        "query_string": query,
        "headers": headers,
        "app": app,
    }


async def _posts(client: Any, user: Dict[str, Any], n: int) -> List[Dict[str, Any]]:
    made = []
    for i in range(n):
        response = await client.post(
            "/api/posts", json={"title": f"t{i}", "body": "b" * i}, headers=user["headers"]
        )
        made.append(response.json())
    return made


async def test_fast_path_answers_a_plain_page_itself(
    app: Any, client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    made = await _posts(client, user, 3)
    sink = Sink()
    bearer = f"Bearer {user['access_token']}".encode()
    assert await _list_posts_fast(_scope(app, bearer, b"limit=2"), b"", sink) is True
    start, body = sink.messages
    assert start["status"] == 200
    assert dict(start["headers"])[b"content-type"] == b"application/json"
    assert int(dict(start["headers"])[b"content-length"]) == len(body["body"])
    page = json.loads(body["body"])
    assert page["items"] == made[::-1][:2] and page["limit"] == 2 and page["total"] >= 3


@pytest.mark.parametrize(
    "authorization, query",
    [
        (None, b""),
        (b"Bearer ", b""),
        (b"Bearer not.a.jwt", b""),
        (b"Basic dXNlcjpwYXNz", b""),
        ("valid-lowercase", b""),  # valid, but the regular route handles the odd spelling
        ("valid", b"limit=0"),
        ("valid", b"limit=1&unknown=2"),
    ],
)
async def test_fast_path_declines_without_sending_anything(
    app: Any,
    client: Any,
    make_user: Callable[..., Any],
    authorization: Any,
    query: bytes,
) -> None:
    user = await make_user()
    if authorization == "valid":
        authorization = f"Bearer {user['access_token']}".encode()
    elif authorization == "valid-lowercase":
        authorization = f"bearer {user['access_token']}".encode()
    sink = Sink()
    assert await _list_posts_fast(_scope(app, authorization, query), b"", sink) is False
    assert sink.messages == []


async def test_fast_and_regular_paths_give_the_same_answer(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    await _posts(client, user, 4)
    fast = await client.get("/api/posts", params={"limit": 3}, headers=user["headers"])
    # A repeated parameter is declined by the fast path; FastAPI takes the last.
    regular = await client.get(
        "/api/posts?limit=1&limit=3&offset=0",
        headers={"Authorization": user["headers"]["Authorization"].replace("Bearer", "bearer")},
    )
    assert fast.status_code == regular.status_code == 200
    assert fast.content == regular.content
    assert fast.headers["content-type"] == regular.headers["content-type"]
    assert fast.headers["x-request-id"] and regular.headers["x-request-id"]


@pytest.mark.parametrize(
    "query, status, code",
    [
        ("limit=0", 422, "validation_error"),
        ("limit=101", 422, "validation_error"),
        ("limit=abc", 422, "validation_error"),
        ("offset=-1", 422, "validation_error"),
        ("limit=1&limt=2", 422, "validation_error"),
    ],
)
async def test_requests_it_declines_get_the_regular_errors(
    client: Any, make_user: Callable[..., Any], query: str, status: int, code: str
) -> None:
    user = await make_user()
    response = await client.get(f"/api/posts?{query}", headers=user["headers"])
    assert response.status_code == status and response.json()["code"] == code
    unauthenticated = await client.get("/api/posts", headers={"Authorization": "Bearer x.y.z"})
    assert unauthenticated.status_code == 401
