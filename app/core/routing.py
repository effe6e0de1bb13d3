"""The route class every router uses: JSON bodies with lone UTF-16 surrogates
(`"\\ud800"`) or NUL characters (`"\\u0000"`) are rejected as invalid JSON
(422). Python's json accepts them, but PostgreSQL text and UTF-8 responses
cannot carry them; checking where the body is decoded covers every field of
every route at once.

This is FastAPI's documented extension point for it (a custom `Request`
returned by a custom `APIRoute`'s `get_route_handler`). Query parameters are
made strict by the routes' own query models (app/core/pagination.py).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Coroutine

from fastapi import Request, Response
from fastapi.routing import APIRoute

_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            if _SUSPECT_ESCAPE.search(body):
                _reject_unstorable_text(body, value)
            self._json = value
        return self._json


def _reject_unstorable_text(body: bytes, value: Any) -> None:
    # Surrogate pairs decode to one valid code point; only lone halves fail here.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise json.JSONDecodeError(
            "lone surrogate in string", body.decode("ascii", "replace"), 0
        ) from exc
    if _contains_nul(value):
        raise json.JSONDecodeError("NUL character in string", body.decode("ascii", "replace"), 0)


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    return False


class KeelRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_json_handler
