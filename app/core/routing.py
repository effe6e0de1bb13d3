"""The route class every router uses: JSON bodies with lone UTF-16 surrogates
(`"\\ud800"`) or NUL characters (`"\\u0000"`) are rejected as invalid JSON
(422). Python's json accepts them, but PostgreSQL text and UTF-8 responses
cannot carry them; checking where the body is decoded covers every field of
every route at once.

This is FastAPI's documented extension point for it (a custom `Request`
returned by a custom `APIRoute`'s `get_route_handler`). Query parameters are
made strict by the routes' own query models (app/core/pagination.py).

`read_json_body` is the prediction endpoints' way to take their body: one
pydantic-core pass from the bytes (`model_validate_json`) instead of
`json.loads` and then validation of the Python objects, declared in the
OpenAPI document with `json_body_openapi` (FastAPI's documented pattern for
a body read by the endpoint). Anything that does not pass goes through the
same steps as a body parameter, so its 422 is word for word FastAPI's.
"""

from __future__ import annotations

import email.message
import json
import re
from typing import Any, Callable, Coroutine, Dict, Type, TypeVar

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

_SUSPECT_ESCAPE = re.compile(rb"\\u(?:[dD][89a-fA-F]|0000)")

M = TypeVar("M", bound=BaseModel)
_UNREADABLE = "There was an error parsing the body"


def strict_json_loads(body: bytes) -> Any:
    value = json.loads(body)
    if _SUSPECT_ESCAPE.search(body):
        _reject_unstorable_text(body, value)
    return value


class StrictJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = strict_json_loads(await self.body())
        return self._json


def _reject_unstorable_text(body: bytes, value: Any) -> None:
    # Surrogate pairs decode to one valid code point; only lone halves fail here.
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise json.JSONDecodeError(
            "lone surrogate in string", body.decode("ascii", "replace"), 0
        ) from exc
    if _contains_nul(value):
        raise json.JSONDecodeError("NUL character in string", body.decode("ascii", "replace"), 0)


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, list):
        return any(_contains_nul(item) for item in value)
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    return False


async def read_json_body(request: Request, model: Type[M]) -> M:
    """The request's JSON body as `model`; a RequestValidationError (422)
    with FastAPI's own errors (`loc` starting with "body") otherwise."""
    try:
        body = await request.body()
    except ClientDisconnect as exc:  # gone before the whole body: FastAPI's 400
        raise HTTPException(400, _UNREADABLE) from exc
    content_type = request.headers.get("content-type")
    if body and content_type == "application/json" and not _SUSPECT_ESCAPE.search(body):
        try:
            return model.model_validate_json(body)
        except ValidationError:
            pass  # the errors are reported as a body parameter's, below
    # What FastAPI does with a body parameter: JSON when the content type is
    # JSON (or absent), else the raw bytes, which no model accepts.
    value: Any = None
    if body:
        value = body
        if content_type is None or _is_json(content_type):
            try:
                value = strict_json_loads(body)
            except json.JSONDecodeError as exc:
                error = {
                    "type": "json_invalid",
                    "loc": ("body", exc.pos),
                    "msg": "JSON decode error",
                    "input": {},
                    "ctx": {"error": exc.msg},
                }
                raise RequestValidationError([error], body=exc.doc) from exc
            except UnicodeDecodeError as exc:  # not UTF-8/16/32: FastAPI's 400
                raise HTTPException(400, _UNREADABLE) from exc
    if value is None:
        missing = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}
        raise RequestValidationError([missing])
    try:
        return model.model_validate(value, from_attributes=True)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in errors], body=value
        ) from exc


def _is_json(content_type: str) -> bool:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")


def json_body_openapi(model: Type[BaseModel]) -> Dict[str, Any]:
    """`openapi_extra` for a route that reads its body with read_json_body."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"content": {"application/json": {"schema": schema}}, "required": True}}


class KeelRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_json_handler(request: Request) -> Response:
            return await handler(StrictJSONRequest(request.scope, request.receive))

        return strict_json_handler
