"""Pure-ASGI middleware: request id, security headers, body size limit."""

from __future__ import annotations

import json
import random
import re
from typing import Dict, Iterable, List, Optional, Tuple

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import error_body
from app.core.logging import request_id_var

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

SECURITY_HEADERS: List[Tuple[bytes, bytes]] = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class RequestContextMiddleware:
    """Echo or assign X-Request-ID, add security headers to every response."""

    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.extra_headers = list(SECURITY_HEADERS)
        if hsts:
            self.extra_headers.append(
                (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Not uuid4: its os.urandom call is a system call per request
        # (bench/README.md); a correlation id needs uniqueness, not unpredictability.
        request_id = _incoming_request_id(scope["headers"]) or f"{random.getrandbits(128):032x}"
        token = request_id_var.set(request_id)
        encoded = request_id.encode("latin-1")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", encoded))
                headers.extend(self.extra_headers)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            request_id_var.reset(token)


def _incoming_request_id(headers: Iterable[Tuple[bytes, bytes]]) -> str:
    for name, value in headers:
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _VALID_REQUEST_ID.match(candidate):
                return candidate
            return ""
    return ""


class BodySizeLimitMiddleware:
    """Reject bodies over a limit, counting bytes actually received (a
    declared Content-Length over it before reading anything). Paths in
    `overrides` get their own limit, and in `codes` their own 413 code."""

    def __init__(
        self,
        app: ASGIApp,
        default_limit: int,
        overrides: dict,
        codes: Optional[Dict[str, str]] = None,
    ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.overrides = overrides
        self.codes = codes or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.overrides.get(scope["path"], self.default_limit)
        code = self.codes.get(scope["path"], "payload_too_large")
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await _send_413(send, limit, code)
                    return
                if declared > limit:
                    await _send_413(send, limit, code)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, code)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not response_started:
                await _send_413(send, limit, code)


class BodyTooLarge(HTTPException):
    """Raised from receive() when the body passes the limit. An HTTPException,
    so FastAPI's body parsing lets it through to the error handler as a 413."""

    def __init__(self, limit: int, code: str = "payload_too_large") -> None:
        super().__init__(413, f"Request body exceeds the limit of {limit} bytes")
        self.limit = limit
        self.code = code


async def _send_413(send: Send, limit: int, code: str) -> None:
    body = json.dumps(error_body(f"Request body exceeds the limit of {limit} bytes", code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
