"""Responses serialized by pydantic-core in one step.

A route that returns a model normally has it validated again against its
`response_model`, turned into Python primitives, then `json.dumps`-ed. For
large read responses that is most of the request's CPU; `model_json` skips
it. The route keeps its `response_model` for the OpenAPI schema, and the model
was validated when it was built, so the body still matches the schema.
"""

from __future__ import annotations

from fastapi import Response
from pydantic import BaseModel


def model_json(model: BaseModel, status_code: int = 200) -> Response:
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")
