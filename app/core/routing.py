"""The route class every router uses. It makes input checks uniform:

- JSON bodies with lone UTF-16 surrogates (`"\\ud800"`) or NUL characters
  (`"\\u0000"`) are rejected as invalid JSON (422): Python's json accepts
  them, but PostgreSQL text and UTF-8 responses cannot carry them.
- Query parameters the route does not declare are a 422 (`limt=5` is a typo
  the client should hear about, not a silently ignored filter).
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Coroutine, FrozenSet

from fastapi import Request, Response
from fastapi.dependencies.utils import get_flat_dependant
from fastapi.exceptions import RequestValidationError
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
        allowed = self._declared_query_names()

        async def strict_handler(request: Request) -> Response:
            unknown = [name for name in request.query_params if name not in allowed]
            if unknown:
                raise RequestValidationError(
                    [
                        {
                            "type": "extra_forbidden",
                            "loc": ("query", name),
                            "msg": "Unknown query parameter",
                            "input": request.query_params[name],
                        }
                        for name in unknown
                    ]
                )
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler

    def _declared_query_names(self) -> FrozenSet[str]:
        flat = get_flat_dependant(self.dependant)
        return frozenset(param.alias for param in flat.query_params)
