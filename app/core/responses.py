"""Read responses of database rows, serialized by orjson in one step.

A route that returns a model normally has it validated against its
`response_model`, turned into Python primitives, then `json.dumps`-ed: for a
page of posts that is most of the request's CPU. Rows of typed columns (ints,
strings, timezone-aware datetimes) need none of it. Routes using `rows_json`
keep their `response_model` for the OpenAPI schema; orjson writes the same
format pydantic does (`Z` for UTC), which tests check for each such route.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Response


def dump_rows(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def rows_json(content: Any, status_code: int = 200) -> Response:
    return Response(dump_rows(content), status_code=status_code, media_type="application/json")
