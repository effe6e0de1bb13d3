"""Types and response models shared by all routes."""

from __future__ import annotations

import re
from typing import Any, Dict, Union

from fastapi import Path
from pydantic import BaseModel, BeforeValidator, Field
from typing_extensions import Annotated

# Ids are PostgreSQL bigint/integer: bound them so bad input is a 422, not a DB error.
MAX_DB_ID = 2**31 - 1

DbId = Annotated[int, Field(ge=1, le=MAX_DB_ID, strict=False)]
_DIGITS = re.compile(r"[0-9]{1,20}")


def _digits_only(value: Any) -> Any:
    # Lax int parsing would read "1.0", "+1", " 1" and "1_0" as ids: an id
    # in a path is written in digits and nothing else.
    if isinstance(value, str) and not _DIGITS.fullmatch(value):
        raise ValueError("the id must be an integer written in digits")
    return value


IdPath = Annotated[int, Path(ge=1, le=MAX_DB_ID), BeforeValidator(_digits_only)]


class ErrorResponse(BaseModel):
    detail: Any
    code: str


def error_responses(*statuses: int) -> Dict[Union[int, str], Dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can return,
    and always 400 (the HTTP server answers a request it cannot parse with
    plain text) and 413 (any body over MAX_BODY_BYTES)."""
    responses: Dict[Union[int, str], Dict[str, Any]] = {
        status: {"model": ErrorResponse} for status in statuses
    }
    responses[400] = {
        "model": ErrorResponse,
        "content": {"text/plain": {"schema": {"type": "string"}}},
    }
    responses.setdefault(413, {"model": ErrorResponse})
    return responses
