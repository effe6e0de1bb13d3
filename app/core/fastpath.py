"""Accept-only fast paths for the hottest endpoints.

Why: for a small request FastAPI's route machinery (trying each route's
regex, solving dependencies, validating and serializing through Pydantic,
one Request object per layer) costs more than the work itself: a third of
`GET /api/posts`'s CPU, ~10× an onnxruntime call on `POST /api/predict`.

How it stays equivalent: a fast handler *only accepts*. It answers a request
itself when the request is plainly valid (for example in-range query
parameters, an exact JSON body and a bearer token that authenticates, see
`app.auth.principal.bearer_principal`) and declines anything else. A
declined request goes, untouched (its body replayed), to the regular FastAPI
route, so every error — status, code, body, headers, and which error wins
when several apply — comes from the same code as before. The declared
endpoint keeps the OpenAPI document unchanged.

Where it runs: as the innermost of the app's middlewares, so the others
(request id, security headers, metrics by route template, body-size limit)
wrap both paths, while an accepted request skips what only the regular path
needs: Starlette's exception middleware, FastAPI's exit stack and the router.
For exceptions it does what the exception middleware would: the app's
handler for the nearest class, if one is registered; anything else
propagates to the server-error handler as before.

Use: decorate a GET or POST endpoint without path parameters with
`@served_by(handler)`, and call `install(app)` in create_app. GET handlers
get an empty body (the request's own is never read); a POST with a query
string always takes the regular path.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar

from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# (scope, body, send) -> True if it sent the response, False to decline.
FastHandler = Callable[[Scope, bytes, Send], Awaitable[bool]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_FAST_METHODS = frozenset(("GET", "POST"))
_JSON_HEADERS = [(b"content-type", b"application/json")]


def served_by(fast: FastHandler) -> Callable[[Endpoint], Endpoint]:
    """Mark a FastAPI endpoint as answered by `fast` when `fast` accepts."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_path = fast  # type: ignore[attr-defined]
        return endpoint

    return mark


def install(app: FastAPI) -> None:
    """Make the fast path the innermost of the app's middlewares (create_app).
    Appended last, so middlewares added before or after all wrap it."""
    app.user_middleware.append(Middleware(FastPathMiddleware, fastapi_app=app))


class FastPathMiddleware:
    """Offers each GET or POST to a fast-path route to its endpoint's fast
    handler; passes everything else, and every declined request (its body
    replayed), to the app unchanged."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.routes: Optional[Dict[Tuple[str, str], Tuple[APIRoute, FastHandler]]] = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in _FAST_METHODS:
            await self.app(scope, receive, send)
            return
        if self.routes is None:
            self.routes = _fast_routes(self.fastapi_app)
        method = scope["method"]
        # Mounted under a root_path, the regular routing (which strips it) decides.
        found = None if scope.get("root_path") else self.routes.get((method, scope["path"]))
        if found is None or (method == "POST" and scope.get("query_string")):
            await self.app(scope, receive, send)
            return
        route, fast = found
        scope["route"] = route  # metrics label requests by its template
        scope["endpoint"] = route.endpoint
        scope["path_params"] = {}
        consumed: List[Message] = []
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            body = b"" if method == "GET" else await _read_body(receive, consumed)
            if body is not None and await fast(scope, body, tracking_send):
                return
        except Exception as exc:
            handler = None if started else self._handler_for(exc)
            if handler is None:
                raise
            response = handler(Request(scope, receive), exc)
            if inspect.isawaitable(response):
                response = await response
            await response(scope, receive, send)
            return
        await self.app(scope, _replay(consumed, receive) if consumed else receive, send)

    def _handler_for(self, exc: Exception) -> Optional[Callable[..., Any]]:
        """The handler Starlette's exception middleware would pick: the nearest
        class in the exception's MRO (500/Exception belong to the server-error
        middleware, which sees whatever this re-raises)."""
        handlers = self.fastapi_app.exception_handlers
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            if cls in handlers:
                return handlers[cls]
        return None


def _fast_routes(app: FastAPI) -> Dict[Tuple[str, str], Tuple[APIRoute, FastHandler]]:
    """(method, path) of GET and POST routes without path parameters whose
    endpoint has a fast path. Keyed by method too: a GET endpoint's fast
    handler never sees a POST to the same path."""
    return {
        (method, route.path): (route, route.endpoint.fast_path)  # type: ignore[attr-defined]
        for route in app.router.routes
        if isinstance(route, APIRoute)
        and "{" not in route.path
        and getattr(route.endpoint, "fast_path", None)
        for method in route.methods & _FAST_METHODS
    }


async def _read_body(receive: Receive, consumed: List[Message]) -> Optional[bytes]:
    """The whole body, or None if the client went away (the regular path then
    sees the same messages and handles the disconnect as it always did)."""
    chunks: List[bytes] = []
    while True:
        message = await receive()
        consumed.append(message)
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(consumed: List[Message], receive: Receive) -> Receive:
    pending = list(consumed)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed


def header(scope: Scope, name: bytes) -> Optional[bytes]:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def is_json(scope: Scope) -> bool:
    value = header(scope, b"content-type")
    return value is not None and value.split(b";", 1)[0].strip().lower() == b"application/json"


async def send_json(send: Send, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(payload)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": payload})
