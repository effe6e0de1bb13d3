"""The route class every router uses: JSON bodies are checked for lone
UTF-16 surrogates (`"\\ud800"`), which Python's json accepts but PostgreSQL
and UTF-8 responses cannot carry. Such a body is a 422 like any bad JSON."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Coroutine

from fastapi import Request, Response
from fastapi.routing import APIRoute

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            value = json.loads(body)
            if _SURROGATE_ESCAPE.search(body):
                _reject_lone_surrogates(body, value)
            self._json = value
        return self._json


def _reject_lone_surrogates(body: bytes, value: Any) -> None:
    # Surrogate pairs decode to one valid code point; only lone halves fail here.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise json.JSONDecodeError(
            "lone surrogate in string", body.decode("ascii", "replace"), 0
        ) from exc


class KeelRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_handler
