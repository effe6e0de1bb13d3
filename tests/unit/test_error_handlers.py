from __future__ import annotations

import json
from typing import Any

import asyncpg
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request

from app.core.errors import _database_error


class _DriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("driver error")
        self.sqlstate = sqlstate


def _request() -> Request:
    return Request({"type": "http", "method": "POST", "path": "/x", "headers": []})


async def _handle(exc: Any) -> Any:
    response = await _database_error(_request(), exc)
    return response.status_code, json.loads(response.body)


async def test_data_exception_from_database_is_422_not_500() -> None:
    exc = DBAPIError("INSERT ...", {}, _DriverError("22021"))
    status, body = await _handle(exc)
    assert status == 422 and body["code"] == "invalid_data"


async def test_other_database_errors_stay_500_without_details() -> None:
    exc = DBAPIError("SELECT secret FROM t", {}, _DriverError("42P01"))
    status, body = await _handle(exc)
    assert status == 500
    assert body == {"detail": "Internal server error", "code": "internal_error"}


async def test_raw_driver_data_exception_is_422_too() -> None:
    # Paths that use the driver directly (Reader.fetch) raise asyncpg's own error.
    exc = asyncpg.exceptions.NumericValueOutOfRangeError("value out of range")
    assert exc.sqlstate == "22003"
    status, body = await _handle(exc)
    assert status == 422 and body["code"] == "invalid_data"
