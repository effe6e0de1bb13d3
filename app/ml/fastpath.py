"""The lean path of POST /api/predict and /api/predict/batch.

Why it exists: onnxruntime needs ~12 µs per row, while FastAPI's route
machinery (dependency solving, Pydantic validation and serialization, JSON
decoding, one Request object per layer) cost ~10× that per request; it was
what capped throughput and tail latency (docs/ml.md has the profile).

How it stays equivalent: the lean path *only accepts*. It answers a request
itself when the request is plainly valid — POST, no query string, a JSON
content type, a bearer token that authenticates, and a body that is exactly
`{"features": [numbers]}` (or `{"instances": [[numbers], ...]}`) with the
served model's width, every number finite and within float32 range. Anything
else is handed, untouched (the body replayed), to the regular FastAPI route,
so every error — status, code, body, headers, and which error wins when
several apply — is produced by the same code as before. Errors raised after
acceptance (503 model_unavailable / overloaded) are the same exceptions,
turned into responses by the app's own exception handlers. The declared
endpoint keeps the OpenAPI document unchanged.

Where it runs: as the innermost of the app's middlewares, so the others
(request id, security headers, metrics by route template, body-size limit)
wrap both paths, while an accepted request skips what only the regular path
needs — Starlette's exception middleware, FastAPI's exit stack and the router
(~8 µs a request, measured). For exceptions it does what the exception
middleware would: the app's handler for the nearest class, if one is
registered; anything else propagates to the server-error handler as before.
"""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Dict, List, Optional, Tuple, TypeVar

import numpy as np
import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.auth.principal import authenticate_principal
from app.core.errors import InvalidToken
from app.core.logging import user_id_var
from app.ml.schemas import FLOAT32_MAX, MAX_BATCH_ROWS
from app.ml.serving import model_server

# (scope, body, send) -> True if it sent the response, False to decline.
FastHandler = Callable[[Scope, bytes, Send], Awaitable[bool]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])

_NUMBER_TYPES = frozenset((float, int))  # exact types: bool is refused, as Strict() does
_JSON_HEADERS = [(b"content-type", b"application/json")]


def served_by(fast: FastHandler) -> Callable[[Endpoint], Endpoint]:
    """Mark a FastAPI endpoint as answered by `fast` when `fast` accepts."""

    def mark(endpoint: Endpoint) -> Endpoint:
        endpoint.fast_path = fast  # type: ignore[attr-defined]
        return endpoint

    return mark


class FastPathMiddleware:
    """Offers each POST to a fast-path route to its endpoint's fast handler;
    passes everything else, and every declined request (its body replayed),
    to the app unchanged."""

    def __init__(self, app: ASGIApp, fastapi_app: FastAPI) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.routes: Optional[Dict[str, Tuple[APIRoute, FastHandler]]] = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope.get("query_string"):
            await self.app(scope, receive, send)
            return
        if self.routes is None:
            self.routes = _fast_routes(self.fastapi_app)
        # Mounted under a root_path, the regular routing (which strips it) decides.
        found = None if scope.get("root_path") else self.routes.get(scope["path"])
        if found is None:
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
            body = await _read_body(receive, consumed)
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
        await self.app(scope, _replay(consumed, receive), send)

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


def _fast_routes(app: FastAPI) -> Dict[str, Tuple[APIRoute, FastHandler]]:
    """POST routes without path parameters whose endpoint has a fast path.
    (Only POST: a GET endpoint's fast path, e.g. app/core/fastpath.py's, must
    never see a POST to the same path.)"""
    return {
        route.path: (route, route.endpoint.fast_path)  # type: ignore[attr-defined]
        for route in app.router.routes
        if isinstance(route, APIRoute)
        and "POST" in route.methods
        and "{" not in route.path
        and getattr(route.endpoint, "fast_path", None)
    }


def install(app: FastAPI) -> None:
    """Make the fast path the innermost of the app's middlewares (create_app).
    Appended last, so middlewares added before or after all wrap it."""
    app.user_middleware.append(Middleware(FastPathMiddleware, fastapi_app=app))


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


def _header(scope: Scope, name: bytes) -> Optional[bytes]:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _is_json(scope: Scope) -> bool:
    value = _header(scope, b"content-type")
    return value is not None and value.split(b";", 1)[0].strip().lower() == b"application/json"


async def _authenticated(scope: Scope) -> bool:
    """True when the bearer token is valid (same check as CurrentPrincipal).
    On False the regular path re-runs it and answers the 401 itself."""
    authorization = _header(scope, b"authorization")
    if authorization is None or not authorization.startswith(b"Bearer "):
        return False
    token = authorization[7:].decode("latin-1")
    if not token:
        return False
    try:
        principal = await authenticate_principal(token)
    except InvalidToken:
        return False
    user_id_var.set(principal.id)
    return True


def _is_row(row: Any, width: int) -> bool:
    # orjson never yields NaN or ±inf (it rejects those literals and overflow),
    # so min/max bound every value.
    return (
        type(row) is list
        and len(row) == width
        and {*map(type, row)} <= _NUMBER_TYPES
        and -FLOAT32_MAX <= min(row)
        and max(row) <= FLOAT32_MAX
    )


def _document(body: bytes, key: str) -> Any:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict or len(document) != 1:
        return None
    return document.get(key)


def parse_features(body: bytes, width: int) -> Optional[np.ndarray]:
    """A (1, width) float32 array for a plainly valid `{"features": [...]}`,
    else None (the regular path then explains what is wrong)."""
    row = _document(body, "features")
    if width < 1 or not _is_row(row, width):
        return None
    # Through float64 like the regular path (Pydantic floats), then float32.
    return np.array([row], dtype=np.float64).astype(np.float32)


def parse_instances(body: bytes, width: int) -> Optional[np.ndarray]:
    """An (n, width) float32 array for a plainly valid `{"instances": [[...], ...]}`
    with 1–MAX_BATCH_ROWS rows, else None."""
    rows = _document(body, "instances")
    if (
        width < 1
        or type(rows) is not list
        or not 1 <= len(rows) <= MAX_BATCH_ROWS
        or not all(_is_row(row, width) for row in rows)
    ):
        return None
    return np.array(rows, dtype=np.float64).astype(np.float32)


async def _send_json(send: Send, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(payload)).encode()), *_JSON_HEADERS],
        }
    )
    await send({"type": "http.response.body", "body": payload})


async def predict_one(scope: Scope, body: bytes, send: Send) -> bool:
    if not _is_json(scope):
        return False
    model = model_server.current()
    if model is None:  # the regular path answers 503 model_unavailable
        return False
    rows = parse_features(body, model.n_features)
    if rows is None or not await _authenticated(scope):
        return False
    result = await model_server.predict(rows)
    payload = orjson.dumps(
        {
            "prediction": result.labels[0],
            "probability": result.probabilities[0],
            "model_version": result.model_version,
        }
    )
    await _send_json(send, payload)
    return True


async def predict_batch(scope: Scope, body: bytes, send: Send) -> bool:
    if not _is_json(scope):
        return False
    model = model_server.current()
    if model is None:
        return False
    rows = parse_instances(body, model.n_features)
    if rows is None or not await _authenticated(scope):
        return False
    result = await model_server.predict(rows)
    predictions = [
        {"prediction": label, "probability": probability}
        for label, probability in zip(result.labels, result.probabilities)
    ]
    payload = orjson.dumps({"predictions": predictions, "model_version": result.model_version})
    await _send_json(send, payload)
    return True
