"""Domain errors and the one place that turns errors into response bodies."""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional, Set

import asyncpg
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Route

logger = logging.getLogger(__name__)


class AppError(Exception):
    """Base of every error a client may see: an HTTP status and a stable code."""

    status_code = 400
    code = "bad_request"
    message = "Bad request"

    def __init__(
        self,
        message: Optional[str] = None,
        *,
        headers: Optional[Dict[str, str]] = None,
        detail: Any = None,
    ) -> None:
        self.message = message or self.message
        self.detail = detail if detail is not None else self.message
        self.headers = headers
        super().__init__(self.message)


class BadRequest(AppError):
    status_code = 400
    code = "bad_request"


class NotAuthenticated(AppError):
    status_code = 401
    code = "not_authenticated"
    message = "Not authenticated"

    def __init__(self, message: Optional[str] = None, **kwargs: Any) -> None:
        kwargs.setdefault("headers", {"WWW-Authenticate": "Bearer"})
        super().__init__(message, **kwargs)


class InvalidToken(NotAuthenticated):
    code = "invalid_token"
    message = "Invalid or expired token"


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    message = "Incorrect email or password"


class Forbidden(AppError):
    status_code = 403
    code = "forbidden"
    message = "Not allowed"


class NotFound(AppError):
    status_code = 404
    code = "not_found"
    message = "Not found"


class Conflict(AppError):
    status_code = 409
    code = "conflict"
    message = "Conflict"


class PayloadTooLarge(AppError):
    status_code = 413
    code = "payload_too_large"
    message = "Request body too large"


class UnprocessableEntity(AppError):
    status_code = 422
    code = "validation_error"
    message = "Invalid input"


class TooManyRequests(AppError):
    status_code = 429
    code = "too_many_attempts"
    message = "Too many attempts, try again later"

    def __init__(self, retry_after: int, message: Optional[str] = None) -> None:
        super().__init__(message, headers={"Retry-After": str(max(1, int(retry_after)))})


class ServiceUnavailable(AppError):
    status_code = 503
    code = "service_unavailable"
    message = "Service temporarily unavailable"

    def __init__(self, message: Optional[str] = None, *, retry_after: int = 1, **kw: Any) -> None:
        kw.setdefault("headers", {"Retry-After": str(retry_after)})
        super().__init__(message, **kw)


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    message = "The database is unavailable, try again shortly"


class DatabaseTimeout(ServiceUnavailable):
    """A statement ran past DB_STATEMENT_TIMEOUT_MS (or was cancelled), or no
    pooled connection came free within DB_POOL_TIMEOUT. The contract names
    two database codes, so a pool wait that timed out is a timeout too."""

    code = "database_timeout"
    message = "The database took too long to answer, try again shortly"


QUERY_CANCELED = "57014"  # SQLSTATE of statement_timeout and pg_cancel_backend
TOO_MANY_CONNECTIONS = "53300"
# Besides class 08 (connection exception): the server shutting down (57P01,
# 57P02), not accepting connections yet (57P03), or full.
_UNAVAILABLE_SQLSTATES = ("57P01", "57P02", "57P03", TOO_MANY_CONNECTIONS)


def sqlstate(exc: BaseException) -> str:
    """SQLAlchemy wraps the driver's error in .orig; asyncpg's own errors carry it."""
    return str(getattr(getattr(exc, "orig", exc), "sqlstate", None) or "")


def database_fault(exc: BaseException) -> Optional[ServiceUnavailable]:
    """The 503 that `exc` calls for if it is a database fault, else None.
    A bare OSError is not one: the engine reports a failed connect as
    OperationalError (app/core/db.py); anything else is not the database's."""
    if isinstance(exc, PoolTimeout):
        return DatabaseTimeout("No database connection came free in time, try again shortly")
    state = sqlstate(exc)
    if state == QUERY_CANCELED:
        return DatabaseTimeout()
    if state.startswith("08") or state in _UNAVAILABLE_SQLSTATES:
        return DatabaseUnavailable()
    if isinstance(exc, (OperationalError, InterfaceError)) or (
        isinstance(exc, DBAPIError) and exc.connection_invalidated
    ):
        return DatabaseUnavailable()
    if isinstance(exc, asyncpg.InterfaceError) and "connection is closed" in str(exc):
        return DatabaseUnavailable()  # the disconnect test of SQLAlchemy's asyncpg dialect
    return None


def error_body(detail: Any, code: str) -> Dict[str, Any]:
    return {"detail": detail, "code": code}


_HTTP_CODES = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


async def _app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    body = error_body(jsonable_encoder(exc.detail), exc.code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [_clean_validation_error(error) for error in exc.errors()]
    return JSONResponse(error_body(jsonable_encoder(errors), "validation_error"), 422)


def _clean_validation_error(error: Any) -> Any:
    """Make a pydantic error JSON-safe and short: no exception objects, no
    echo of huge or binary inputs."""
    if not isinstance(error, dict):
        return str(error)
    error = dict(error)
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        error["ctx"] = {k: v if isinstance(v, _SCALARS) else str(v) for k, v in ctx.items()}
    value = error.get("input")
    if isinstance(value, bytes):
        value = value[:200].decode("utf-8", "replace")
    if isinstance(value, str):
        if len(value) > 200:
            value = value[:200] + "..."
        value = value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
    elif not isinstance(value, _SCALARS):
        # Containers may hold anything (inf, huge nesting): name the type only.
        value = type(value).__name__
    error["input"] = value
    error.pop("url", None)
    error["msg"] = str(error.get("msg", "")).encode("utf-8", "replace").decode("utf-8")
    return error


_SCALARS = (str, int, float, bool, type(None))


def _methods_of_path(request: Request) -> Set[str]:
    """Every method some route serves at this path. Starlette's 405 names the
    methods of the first route matching the path only, and a path served by
    several routes (GET and POST /api/posts) needs them all in `Allow`."""
    methods: Set[str] = set()
    for route in request.app.router.routes:
        if isinstance(route, Route) and route.methods:
            match, _ = route.matches(request.scope)
            if match is Match.PARTIAL:
                methods |= route.methods
    return methods


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = getattr(exc, "code", None) or _HTTP_CODES.get(exc.status_code, "error")
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        methods = _methods_of_path(request)
        if methods:
            headers["Allow"] = ", ".join(sorted(methods))
    return JSONResponse(error_body(exc.detail, code), exc.status_code, headers=headers or None)


class InvalidData(AppError):
    status_code = 422
    code = "invalid_data"
    message = "The input contains a value the database cannot store"


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Down, unreachable, recovering, overloaded or too slow: a fast, retryable
    # 503 rather than a 500.
    fault = database_fault(exc)
    if fault is not None:
        logger.warning(
            "database fault on %s %s: %s (%s)",
            request.method,
            request.url.path,
            fault.code,
            type(exc).__name__,
        )
        return JSONResponse(error_body(fault.detail, fault.code), 503, headers=fault.headers)
    if isinstance(exc, DataError) or sqlstate(exc).startswith("22"):
        # SQLSTATE class 22 (bad encoding, out-of-range value): input the
        # validators let through. A 422, logged so the validator gets fixed.
        logger.warning("database rejected input on %s: %s", request.url.path, sqlstate(exc))
        invalid = InvalidData()
        return JSONResponse(error_body(invalid.detail, invalid.code), 422)
    return await _unhandled_error(request, exc)


async def _unhandled_error(request: Request, exc: Exception) -> JSONResponse:
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse(error_body("Internal server error", "internal_error"), status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
    # Raised as they are on the paths that use the driver directly.
    app.add_exception_handler(asyncpg.PostgresError, _database_error)
    app.add_exception_handler(asyncpg.InterfaceError, _database_error)
    app.add_exception_handler(Exception, _unhandled_error)
