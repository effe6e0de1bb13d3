"""A 405 names every method the path supports (RFC 9110 §15.5.6), not only
the methods of the first route that happens to share the path."""

from __future__ import annotations

from typing import Any, Set

import pytest


def _allowed(response: Any) -> Set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("OPTIONS", "/api/posts", {"GET", "POST"}),
        ("PUT", "/api/posts/1", {"GET", "PATCH", "DELETE"}),
        ("OPTIONS", "/api/users", {"GET", "POST"}),
        ("DELETE", "/api/accounts", {"GET", "POST"}),
    ],
)
async def test_allow_lists_every_method_of_the_path(
    client: Any, method: str, path: str, expected: Set[str]
) -> None:
    response = await client.request(method, path)
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert _allowed(response) - {"HEAD"} == expected
