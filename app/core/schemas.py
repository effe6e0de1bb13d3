"""Types and response models shared by all routes."""

from __future__ import annotations

from typing import Any, Dict, Union

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


def error_responses(*statuses: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return.

    400 and 413 are always listed: besides our JSON errors, the HTTP server
    answers a request it cannot parse (malformed headers) with plain text, and
    any body over MAX_BODY_BYTES is refused with 413.
    """
    responses: Dict[Union[int, str], Dict[str, Any]] = {
        status: {"model": ErrorResponse} for status in statuses
    }
    responses[400] = {
        "model": ErrorResponse,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    # Any request body over the size limit.
    responses.setdefault(413, {"model": ErrorResponse})
    return responses
