"""The app's one JSON response class (FastAPI's `default_response_class`).

orjson, through FastAPI's ORJSONResponse. UTC datetimes end in `Z`, as
pydantic writes them, so a route returning database rows as they are (no
`response_model` validation) sends the same text as one returning models;
tests check that for each such route.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import ORJSONResponse


class ORJSONUTCResponse(ORJSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(
            content,
            option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY,
        )
