"""Console sign-in, the signed session cookie, CSRF tokens and response headers.

Sign-in goes through `app.auth.service.login`, so the console checks the
password with the same bcrypt verification and counts failures against the
same lockout as `POST /token` (a lockout earned on one door closes both).
The refresh token that login issues is revoked at once: the console keeps
its own session, a cookie signed with SECRET_KEY (Starlette's
SessionMiddleware) that holds the user id, the sign-in time, the last
activity and the CSRF token.

Every console request re-reads the user: a session ends as soon as its user
is deactivated, loses superuser rights or has its sessions revoked
(`tokens_valid_after` later than the sign-in), and after
`IDLE_TIMEOUT_SECONDS` without a request.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from typing import Any, Optional

from redis.exceptions import RedisError
from sqladmin.authentication import AuthenticationBackend
from sqlalchemy.exc import DBAPIError
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.admin import audit
from app.admin.audit import CONSOLE
from app.auth import service as auth_service
from app.core.config import Settings
from app.core.db import db
from app.core.errors import InvalidCredentials, ServiceUnavailable, TooManyRequests
from app.core.security import ACCESS, decode_token
from app.users.models import User

logger = logging.getLogger(__name__)

COOKIE_NAME = "keel_admin"
# Ends a session this long after its last request (the cookie's signature
# carries its own age, and the session its last-activity time).
IDLE_TIMEOUT_SECONDS = 30 * 60
CSRF_FIELD = "csrf_token"
# The bounds `POST /token` applies to its form fields.
MAX_EMAIL_CHARS = 320
MAX_PASSWORD_CHARS = 1024

# Every asset the console loads comes from the app itself (sqladmin's own
# static files); inline SVG charts need no source at all. No inline script
# runs. sqladmin's list templates carry a few `style="..."` attributes
# (layout only), so style *attributes* are allowed; style sheets and <style>
# elements still come from the app alone.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "style-src-attr 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'self'; object-src 'none'"
)


def csrf_token(request: Request) -> str:
    """This session's CSRF token, created on first use (also before sign-in,
    for the sign-in form)."""
    token = request.session.get("csrf")
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session["csrf"] = token
    return token


def csrf_valid(request: Request, presented: Any) -> bool:
    expected = request.session.get("csrf")
    return (
        isinstance(presented, str)
        and isinstance(expected, str)
        and bool(expected)
        and hmac.compare_digest(presented.encode(), expected.encode())
    )


def csrf_refused() -> Response:
    return HTMLResponse(
        "<h1>403 Forbidden</h1><p>Missing or stale form token: reload the page and try again.</p>",
        status_code=403,
    )


def console_user(request: Request) -> User:
    """The signed-in superuser of this request (set by `authenticate`)."""
    user: User = request.state.admin_user
    return user


class AdminAuth(AuthenticationBackend):
    def __init__(self, settings: Settings) -> None:
        # Not super().__init__: its cookie has none of the settings below.
        self.middlewares = [
            Middleware(
                SessionMiddleware,
                secret_key=settings.secret_key,
                session_cookie=COOKIE_NAME,
                max_age=IDLE_TIMEOUT_SECONDS,
                path="/admin",
                same_site="lax",
                https_only=settings.is_production,
            )
        ]

    async def login(self, request: Request) -> bool:
        form = await request.form()
        if not csrf_valid(request, form.get(CSRF_FIELD)):
            request.state.login_error = "The sign-in form expired. Please try again."
            return False
        email, password = form.get("username"), form.get("password")
        if (
            not isinstance(email, str)
            or not isinstance(password, str)
            or not 0 < len(email) <= MAX_EMAIL_CHARS
            or not 0 < len(password) <= MAX_PASSWORD_CHARS
        ):
            request.state.login_error = "Invalid email or password."
            return False
        address = audit.request_address(request)
        async with db.sessionmaker() as session:
            try:
                pair = await auth_service.login(
                    session, email=email, password=password, client_host=address
                )
            except TooManyRequests as exc:
                wait = (exc.headers or {}).get("Retry-After", "")
                request.state.login_error = (
                    f"Too many failed sign-ins. Try again in {wait} seconds."
                )
                return False
            except InvalidCredentials:
                request.state.login_error = "Invalid email or password."
                return False
            user = await session.get(User, int(decode_token(pair.access_token, ACCESS)["sub"]))
            assert user is not None  # login just found it
            # The console does not use API tokens: end the login's token family.
            await auth_service.logout(session, user=user, refresh_token=pair.refresh_token)
            if not user.is_superuser:
                await session.commit()
                request.state.login_error = "Only superusers may use the console."
                return False
            await audit.record(
                session, user, "console.sign_in", "user", user.id, address=address, channel=CONSOLE
            )
            await session.commit()
        # A fresh session (and CSRF token) at every sign-in: no fixation.
        now = time.time()
        request.session.clear()
        request.session.update({"uid": user.id, "since": now, "seen": now})
        csrf_token(request)
        return True

    async def logout(self, request: Request) -> Response:
        if not csrf_valid(request, request.query_params.get(CSRF_FIELD)):
            return csrf_refused()
        request.session.clear()
        return RedirectResponse(request.url_for("admin:login"), status_code=302)

    async def authenticate(self, request: Request) -> bool:
        uid, since, seen = (request.session.get(k) for k in ("uid", "since", "seen"))
        if not isinstance(uid, int) or not isinstance(since, float) or not isinstance(seen, float):
            return False
        now = time.time()
        if now - seen > IDLE_TIMEOUT_SECONDS:
            request.session.clear()
            return False
        async with db.sessionmaker() as session:
            user = await session.get(User, uid)
        if user is None or not user.is_active or not user.is_superuser:
            request.session.clear()
            return False
        revoked_at = user.tokens_valid_after
        if revoked_at is not None and revoked_at.timestamp() > since:
            request.session.clear()
            return False
        request.session["seen"] = now
        request.state.admin_user = user
        return True


class ConsoleHeaders:
    """Security headers on every console response, and a 503 page with
    Retry-After (not a 500) when the database or Redis fails mid-request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in (b"content-security-policy", b"cache-control")
                ]
                headers += [
                    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                    (b"x-frame-options", b"DENY"),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),
                    (b"cache-control", _cache_control(scope)),
                ]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except (DBAPIError, ServiceUnavailable, RedisError, OSError) as exc:
            if started:
                raise
            logger.warning("console request failed on a dependency: %r", exc)
            response = HTMLResponse(
                "<h1>503 Service Unavailable</h1>"
                "<p>The database or Redis is not answering. Try again shortly.</p>",
                status_code=503,
                headers={"Retry-After": "5"},
            )
            await response(scope, receive, send_with_headers)


def _cache_control(scope: Scope) -> bytes:
    path: Optional[str] = scope.get("path")
    # Pages hold account data: never cached. The library's assets may be.
    if path is not None and "/statics/" in path:
        return b"public, max-age=3600"
    return b"no-store"
