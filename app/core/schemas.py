"""Types and response models shared by all routes."""

from __future__ import annotations

from typing import Any

from fastapi import Path
from pydantic import BaseModel, Field
from typing_extensions import Annotated

# Ids are PostgreSQL bigint/integer: bound them so bad input is a 422, not a DB error.
MAX_DB_ID = 2**31 - 1

DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID, strict=False)]
IdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID)]


class ErrorResponse(BaseModel):
    detail: Any
    code: str


def error_responses(*statuses: int) -> dict:
    """OpenAPI `responses=` entries for the error statuses a route can return."""
    return {status: {"model": ErrorResponse} for status in statuses}
