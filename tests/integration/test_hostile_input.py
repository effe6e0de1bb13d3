"""Malformed input never yields a 500 on the foundation endpoints."""

from __future__ import annotations

from typing import Any, Callable

import pytest

BAD_BODIES = [
    b"",
    b"null",
    b"[]",
    b'"x"',
    b"{",
    b'{"title": {"nested": [1, 2, 3]}}',
    b"\xff\xfe\x00garbage",
    b'{"title": "\\ud800"}',
    b'{"title": "a\\u0000b", "body": "x"}',
    b'{"title": "ok", "body": "nul \\u0000 inside"}',
    b"1e999999",
    b"[" * 5000 + b"]" * 5000,
]


@pytest.mark.parametrize("body", BAD_BODIES)
@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/api/users"),
        ("POST", "/api/posts"),
        ("PATCH", "/api/posts/1"),
        ("POST", "/token/refresh"),
        ("POST", "/api/auth/logout"),
        ("POST", "/token"),
    ],
)
async def test_malformed_bodies_get_4xx(
    client: Any, make_user: Callable[..., Any], method: str, path: str, body: bytes
) -> None:
    user = await make_user()
    response = await client.request(
        method, path, content=body, headers={**user["headers"], "content-type": "application/json"}
    )
    assert 400 <= response.status_code < 500, response.text
    assert "code" in response.json()


async def test_body_over_limit_is_413_whatever_content_length_says(
    client: Any, settings: Any
) -> None:
    big = b'{"email": "' + b"a" * (settings.max_body_bytes + 10) + b'"}'
    declared = await client.post(
        "/api/users", content=big, headers={"content-type": "application/json"}
    )
    assert declared.status_code == 413
    assert declared.json()["code"] == "payload_too_large"

    async def chunks() -> Any:  # no Content-Length: chunked transfer
        for start in range(0, len(big), 65536):
            yield big[start : start + 65536]

    streamed = await client.post(
        "/api/users", content=chunks(), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 413


async def test_unknown_route_and_method_get_json_errors(client: Any) -> None:
    missing = await client.get("/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = await client.put("/health")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"


async def test_security_headers_present(client: Any) -> None:
    response = await client.get("/health")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"


async def test_every_route_rejects_an_undeclared_query_parameter(
    app: Any, client: Any, make_superuser: Callable[..., Any]
) -> None:
    """docs/api.md: a query parameter the route does not declare is a 422
    `extra_forbidden`, on every API route (not only the list routes). The
    browser pages outside the schema (/docs, its OAuth2 redirect that must
    take the provider's `code` and `state`) are not API routes."""
    from fastapi.routing import APIRoute

    admin = await make_superuser()
    checked = 0
    for route in app.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        path = route.path_format.replace("{version}", "v1")
        for name in route.param_convertors:
            path = path.replace("{" + name + "}", "1")
        for method in route.methods:
            response = await client.request(
                method, f"{path}?undeclared=1", headers=admin["headers"]
            )
            assert response.status_code == 422, (method, path, response.text)
            body = response.json()
            assert body["code"] == "validation_error"
            assert {"type": "extra_forbidden", "loc": ["query", "undeclared"]}.items() <= next(
                (e for e in body["detail"] if e["loc"] == ["query", "undeclared"]), {}
            ).items(), (method, path, body)
            checked += 1
    assert checked >= 30
