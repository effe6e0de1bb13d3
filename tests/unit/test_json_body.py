"""read_json_body answers exactly as a FastAPI body parameter does: same
accepted values, same 422s (the prediction endpoints read their body with it)."""

from __future__ import annotations

import itertools
from typing import Any, List, Optional, Tuple

import httpx
import pytest
from fastapi import APIRouter, FastAPI, Request
from pydantic import BaseModel, ConfigDict

from app.core.errors import install_error_handlers
from app.core.routing import KeelRoute, json_body_openapi, read_json_body
from app.ml.schemas import BatchPredictRequest, PredictRequest


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    count: int = 0
    tags: List[str] = []
    ratio: Optional[float] = None


def _reader(model: Any) -> Any:
    async def read(request: Request) -> Any:
        return (await read_json_body(request, model)).model_dump()

    return read


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    router = APIRouter(route_class=KeelRoute)
    for name, model in (
        ("predict", PredictRequest),
        ("batch", BatchPredictRequest),
        ("note", Note),
    ):

        async def declared(body: Any) -> Any:
            return body.model_dump()

        declared.__annotations__["body"] = model  # a body parameter of this model

        router.add_api_route(f"/declared/{name}", declared, methods=["POST"])
        router.add_api_route(
            f"/read/{name}",
            _reader(model),
            methods=["POST"],
            openapi_extra=json_body_openapi(model),
        )
    app.include_router(router)
    return app


BODIES = [
    b'{"features": [1, 2.5, -3e2]}',
    b'{"features": []}',
    b'{"instances": [[1, 2], [3.5]]}',
    b'{"instances": []}',
    b'{"title": "hello", "count": 3, "tags": ["a", "b"], "ratio": 0.5}',
    b'{"title": "\\ud83d\\ude00 pair"}',
    b'{"title": "\\ud800 lone"}',
    b'{"title": "nul \\u0000 inside"}',
    b'{"title": "\xff not utf-8"}',
    '{"title": "utf-16"}'.encode("utf-16"),
    b"",
    b"not json",
    b'{"features": [1, 2,',
    b"[1, 2]",
    b"null",
    b"{}",
    b'{"features": "x"}',
    b'{"features": [true]}',
    b'{"features": [NaN]}',
    b'{"features": [Infinity]}',
    b'{"features": [1e500]}',
    b'{"features": [null]}',
    b'{"features": ["1"]}',
    b'{"features": [1], "extra": 1}',
    b'{"features": [1], "features": [2]}',
    b'{"title": 5, "count": "7", "ratio": "x"}',
    b'{"title": "t", "count": 1.0}',
    b'{"title": "t", "count": 1.5}',
]
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/vnd.api+json",
    "text/plain",
    "application/x-www-form-urlencoded",
    None,
]


async def _answer(
    client: httpx.AsyncClient, path: str, body: bytes, ctype: Optional[str]
) -> Tuple[int, Any]:
    headers = {"content-type": ctype} if ctype else {}
    response = await client.post(path, content=body, headers=headers)
    return response.status_code, response.json()


@pytest.mark.parametrize("name", ["predict", "batch", "note"])
async def test_same_answer_as_a_body_parameter(name: str) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for body, ctype in itertools.product(BODIES, CONTENT_TYPES):
            expected = await _answer(client, f"/declared/{name}", body, ctype)
            got = await _answer(client, f"/read/{name}", body, ctype)
            assert got == expected, (body, ctype)


async def test_valid_bodies_are_accepted_and_invalid_ones_are_422() -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        ok = await _answer(client, "/read/predict", BODIES[0], "application/json")
        assert ok == (200, {"features": [1.0, 2.5, -300.0]})
        lone = await _answer(client, "/read/note", BODIES[6], "application/json")
        assert lone[0] == 422 and lone[1]["detail"][0]["type"] == "json_invalid"


def test_the_openapi_document_describes_the_body() -> None:
    operation = _app().openapi()["paths"]["/read/predict"]["post"]
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    assert operation["requestBody"]["required"] is True
    assert schema["required"] == ["features"] and schema["additionalProperties"] is False
