"""The lean path of POST /api/predict(/batch) (app/ml/fastpath.py).

Two halves: the fast handlers called directly (they must answer plainly valid
requests themselves and decline everything else without sending a byte), and
the same inputs through the whole app (every declined request must get the
answer the regular FastAPI route gives: same status, code and headers)."""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Tuple

import pytest

from app.core import fastpath as core_fastpath
from app.ml import fastpath
from app.ml.schemas import FLOAT32_MAX

ROW = [1.5] * 30
ROW_JSON = "[" + ", ".join(["1.5"] * 30) + "]"


def _scope(
    token: Optional[str],
    content_type: Optional[bytes] = b"application/json",
    path: str = "/api/predict",
    query: bytes = b"",
) -> Dict[str, Any]:
    headers: List[Tuple[bytes, bytes]] = []
    if content_type is not None:
        headers.append((b"content-type", content_type))
    if token is not None:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": query,
        "headers": headers,
    }


class Sink:
    def __init__(self) -> None:
        self.messages: List[Dict[str, Any]] = []

    async def __call__(self, message: Dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    def json(self) -> Any:
        return json.loads(self.messages[1]["body"])


# ------------------------------------------------------------ pure parsing


@pytest.mark.parametrize(
    "raw",
    [
        '{"features": ' + ROW_JSON + "}",
        '{"features": [' + ", ".join(["1"] * 30) + "]}",  # integers are numbers
        '  {"features" : [' + ", ".join(["-3.4028234663852886e38"] * 30) + "]}  ",
        '{"features": [1.0], "features": ' + ROW_JSON + "}",  # duplicate key: last wins
    ],
)
def test_parse_features_accepts_plain_rows(raw: str) -> None:
    rows = fastpath.parse_features(raw.encode(), 30)
    assert rows is not None and rows.shape == (1, 30) and str(rows.dtype) == "float32"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"not json",
        b"[1.0]",
        b"null",
        b'"features"',
        b"{}",
        b'{"features": null}',
        b'{"features": "1.0"}',
        b'{"features": {"a": 1}}',
        b'{"features": [1.0]}',
        b'{"Features": ' + ROW_JSON.encode() + b"}",
        b'{"features": ' + ROW_JSON.encode() + b', "extra": 1}',
        b'{"features": [NaN' + b", 1.0" * 29 + b"]}",
        b'{"features": [Infinity' + b", 1.0" * 29 + b"]}",
        b'{"features": [1e400' + b", 1.0" * 29 + b"]}",
        b'{"features": [1e39' + b", 1.0" * 29 + b"]}",
        b'{"features": [-1e39' + b", 1.0" * 29 + b"]}",
        b'{"features": [' + b"1" + b"0" * 40 + b", 1.0" * 29 + b"]}",  # huge integer
        b'{"features": [true' + b", 1.0" * 29 + b"]}",
        b'{"features": [null' + b", 1.0" * 29 + b"]}",
        b'{"features": ["1.0"' + b", 1.0" * 29 + b"]}",
        b'{"features": [[1.0]' + b", 1.0" * 29 + b"]}",
        b'{"features": [{"a": 1}' + b", 1.0" * 29 + b"]}",
        b'{"features": ' + ROW_JSON.encode() + b"} trailing",
        b"\xef\xbb\xbf" + b'{"features": ' + ROW_JSON.encode() + b"}",  # BOM
        b'{"features": ' + ROW_JSON.encode() + b', "features": [1.0]}',
    ],
)
def test_parse_features_declines_anything_not_plainly_valid(raw: bytes) -> None:
    assert fastpath.parse_features(raw, 30) is None


def test_parse_features_keeps_float32_rounding_of_the_regular_path() -> None:
    big = 2**60 + 1  # float64 first, then float32, as Pydantic floats are
    rows = fastpath.parse_features(b'{"features": [' + str(big).encode() + b"]}", 1)
    assert rows is not None and float(rows[0, 0]) == float(__import__("numpy").float32(float(big)))


def test_parse_instances_accepts_1_to_1000_rows_and_declines_the_rest() -> None:
    def body(n: int) -> bytes:
        return json.dumps({"instances": [ROW] * n}).encode()

    assert fastpath.parse_instances(body(1), 30).shape == (1, 30)  # type: ignore[union-attr]
    assert fastpath.parse_instances(body(1000), 30).shape == (1000, 30)  # type: ignore[union-attr]
    for declined in (
        body(0),
        body(1001),
        json.dumps({"instances": [ROW, ROW[:29]]}).encode(),
        json.dumps({"instances": [ROW, [True] * 30]}).encode(),
        json.dumps({"instances": ROW}).encode(),
        json.dumps({"instances": [ROW], "x": 1}).encode(),
        json.dumps({"instances": [ROW[:29] + [FLOAT32_MAX * 10]]}).encode(),
        b'{"instances": [[NaN' + b", 1.0" * 29 + b"]]}",
    ):
        assert fastpath.parse_instances(declined, 30) is None


# ------------------------------------------------------- fast handlers, direct


async def test_fast_path_answers_a_valid_request_by_itself(make_user, serving) -> None:
    user = await make_user()
    sink = Sink()
    body = json.dumps({"features": ROW}).encode()
    assert await fastpath.predict_one(_scope(user["access_token"]), body, sink) is True
    assert sink.status == 200
    assert dict(sink.messages[0]["headers"])[b"content-type"] == b"application/json"
    answer = sink.json()
    assert set(answer) == {"prediction", "probability", "model_version"}
    assert answer["model_version"] == "v1"

    batch = Sink()
    rows = json.dumps({"instances": [ROW, [0.0] * 30]}).encode()
    scope = _scope(user["access_token"], path="/api/predict/batch")
    assert await fastpath.predict_batch(scope, rows, batch) is True
    assert batch.status == 200 and len(batch.json()["predictions"]) == 2
    assert batch.json()["predictions"][0]["probability"] == answer["probability"]


@pytest.mark.parametrize(
    "token_kind, content_type",
    [
        ("missing", b"application/json"),
        ("forged", b"application/json"),
        ("empty", b"application/json"),
        ("valid", None),
        ("valid", b"text/plain"),
        ("valid", b"application/x-www-form-urlencoded"),
        ("valid", b"application/merge-patch+json"),
    ],
)
async def test_fast_path_declines_without_sending_anything(
    make_user,
    serving,
    token_kind: str,
    content_type: Optional[bytes],
) -> None:
    user = await make_user()
    token = {"missing": None, "forged": "not.a.jwt", "empty": "", "valid": user["access_token"]}
    sink = Sink()
    body = json.dumps({"features": ROW}).encode()
    scope = _scope(token[token_kind], content_type)
    assert await fastpath.predict_one(scope, body, sink) is False
    assert await fastpath.predict_batch(scope, b'{"instances": [' + body + b"]}", sink) is False
    assert sink.messages == []


async def test_fast_path_declines_when_no_model_is_served(make_user) -> None:
    user = await make_user()
    sink = Sink()
    body = json.dumps({"features": ROW}).encode()
    assert await fastpath.predict_one(_scope(user["access_token"]), body, sink) is False
    assert await fastpath.predict_batch(_scope(user["access_token"]), body, sink) is False
    assert sink.messages == []


# ----------------------------------------------- through the app: same answers


async def test_fast_and_regular_paths_give_the_same_answer(client, make_user, serving) -> None:
    user = await make_user()
    token = user["access_token"]
    body = {"features": [float(i) / 7 for i in range(30)]}
    fast = await client.post(
        "/api/predict", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    # A lower-case scheme is valid for the regular route but not taken by the fast path.
    regular = await client.post(
        "/api/predict", json=body, headers={"Authorization": f"bearer {token}"}
    )
    assert fast.status_code == regular.status_code == 200
    assert fast.json() == regular.json()
    assert fast.headers["content-type"] == regular.headers["content-type"]


async def test_fast_responses_keep_request_id_security_headers_and_metrics(
    client,
    make_user,
    serving,
) -> None:
    user = await make_user()
    headers = {**user["headers"], "X-Request-ID": "fast-path-1"}
    response = await client.post("/api/predict", json={"features": ROW}, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "fast-path-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    metrics = (await client.get("/metrics")).text
    assert 'keel_http_requests_total{method="POST",route="/api/predict",status="200"}' in metrics


async def test_fast_path_still_enforces_the_body_size_limit(
    client,
    make_user,
    serving,
    settings,
) -> None:
    user = await make_user()
    padding = " " * (settings.max_body_bytes + 1)
    raw = '{"features": ' + ROW_JSON + "}" + padding
    response = await client.post(
        "/api/predict",
        content=raw,
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


async def test_other_methods_and_paths_route_as_before(client, make_user, serving) -> None:
    user = await make_user()
    assert (await client.get("/api/predict", headers=user["headers"])).status_code == 405
    assert (await client.put("/api/predict/batch", headers=user["headers"])).status_code == 405
    assert (await client.post("/api/predict/", headers=user["headers"])).status_code in (307, 404)
    unknown = await client.post(
        "/api/predict?verbose=1", json={"features": ROW}, headers=user["headers"]
    )
    assert unknown.status_code == 422 and unknown.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    "raw, content_type, code",
    [
        ("", "application/json", "validation_error"),  # empty body: field missing
        ('{"features": ' + ROW_JSON + "}", "text/plain", "validation_error"),
        ('{"features": ' + ROW_JSON + "}", "application/x-www-form-urlencoded", "validation_error"),
        ('{"features": ' + ROW_JSON + "}", "multipart/form-data", "validation_error"),
        (
            '{"features": [1' + "0" * 40 + ", 1.0" * 29 + "]}",
            "application/json",
            "validation_error",
        ),
        ('{"features": [-1e39' + ", 1.0" * 29 + "]}", "application/json", "validation_error"),
        ('{"features": [{"a": [1]}' + ", 1.0" * 29 + "]}", "application/json", "validation_error"),
        ('{"features": {"features": []}}', "application/json", "validation_error"),
        ('{"features": ' + ROW_JSON + ', "features": "x"}', "application/json", "validation_error"),
        ('{"features": [1.0], "features": ' + ROW_JSON + "}", "application/json", None),
        ('{"features": ' + ROW_JSON + "} x", "application/json", "validation_error"),
        ('{"features": ["\\ud800"]}', "application/json", "validation_error"),
        ('{"features": [1.0' + ", 1.0" * 1024 + "]}", "application/json", "validation_error"),
        ('{"features": [1.0' + ", 1.0" * 40 + "]}", "application/json", "wrong_feature_count"),
    ],
)
async def test_declined_requests_get_the_regular_routes_answer(
    client,
    make_user,
    serving,
    raw: str,
    content_type: str,
    code: Optional[str],
) -> None:
    user = await make_user()
    response = await client.post(
        "/api/predict", content=raw, headers={**user["headers"], "content-type": content_type}
    )
    if code is None:
        assert response.status_code == 200, response.text
    else:
        assert response.status_code == 422, response.text
        assert response.json()["code"] == code


async def test_invalid_json_is_422_even_without_a_token_and_401_otherwise(
    client,
    serving,
) -> None:
    # The regular route decodes the body before it authenticates: kept as is.
    broken = await client.post(
        "/api/predict", content="{", headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["code"] == "validation_error"
    unauthenticated = await client.post("/api/predict", json={"features": ROW})
    assert unauthenticated.status_code == 401
    assert unauthenticated.json()["code"] == "not_authenticated"
    forged = await client.post(
        "/api/predict/batch",
        json={"instances": [ROW]},
        headers={"Authorization": "Bearer not.a.jwt"},
    )
    assert forged.status_code == 401 and forged.json()["code"] == "invalid_token"
    assert forged.headers["www-authenticate"] == "Bearer"


async def test_batch_declined_requests_get_the_regular_routes_answer(
    client,
    make_user,
    serving,
) -> None:
    user = await make_user()
    cases = [
        ({"instances": []}, 422, "validation_error"),
        ({"instances": [ROW, ROW[:3]]}, 422, "wrong_feature_count"),
        ({"instances": [ROW, ["1.0"] * 30]}, 422, "validation_error"),
        ({"instances": [ROW, [False] * 30]}, 422, "validation_error"),
        ({"instances": ROW}, 422, "validation_error"),
        ({"instances": [ROW], "extra": 1}, 422, "validation_error"),
    ]
    for body, status, code in cases:
        response = await client.post("/api/predict/batch", json=body, headers=user["headers"])
        assert response.status_code == status, body
        assert response.json()["code"] == code, body


def test_openapi_documents_the_declared_predict_contract(app: Any) -> None:
    schema = app.openapi()
    predict = schema["paths"]["/api/predict"]["post"]
    assert predict["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictRequest"
    )
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictionOut"
    )
    assert {"401", "422", "503"} <= set(predict["responses"])
    batch = schema["paths"]["/api/predict/batch"]["post"]
    assert batch["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/BatchPredictRequest"
    )


async def _call_app(app: Any, scope: Dict[str, Any], messages: List[Dict[str, Any]]) -> Sink:
    pending = list(messages)

    async def receive() -> Dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    sink = Sink()
    full = {"http_version": "1.1", "scheme": "http", "server": ("test", 80), "root_path": ""}
    await app({**full, **scope}, receive, sink)
    return sink


async def test_a_body_sent_in_chunks_is_read_whole(app, make_user, serving) -> None:
    user = await make_user()
    body = json.dumps({"features": ROW}).encode()
    chunks = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.request", "body": body[10:], "more_body": False},
    ]
    sink = await _call_app(app, _scope(user["access_token"]), chunks)
    assert sink.status == 200
    assert sink.json()["model_version"] == "v1"


async def test_a_client_gone_before_the_body_is_handled_by_the_regular_route(
    app,
    make_user,
    serving,
) -> None:
    user = await make_user()
    partial = [{"type": "http.request", "body": b'{"feat', "more_body": True}]
    sink = await _call_app(app, _scope(user["access_token"]), partial)
    # Starlette reports the disconnect; FastAPI answers 400 "error parsing the body".
    assert sink.status == 400


async def test_a_mounted_app_uses_the_regular_routing(app, make_user, serving) -> None:
    user = await make_user()
    body = json.dumps({"features": ROW}).encode()
    scope = {**_scope(user["access_token"]), "root_path": "/m", "path": "/m/api/predict"}
    sink = await _call_app(app, scope, [{"type": "http.request", "body": body}])
    assert sink.status == 200


async def test_the_middleware_offers_a_route_only_its_own_method():
    from fastapi import FastAPI
    from starlette.testclient import TestClient

    offered: List[Tuple[str, str]] = []

    async def fast(scope: Any, body: bytes, send: Any) -> bool:
        offered.append((scope["method"], scope["path"]))
        return False  # decline: the endpoint answers

    app = FastAPI()

    @app.get("/thing")
    @core_fastpath.served_by(fast)
    async def read_thing() -> Dict[str, str]:
        return {"answered_by": "get endpoint"}

    @app.post("/thing")
    async def create_thing() -> Dict[str, str]:
        return {"answered_by": "post endpoint"}

    @app.post("/other")
    @core_fastpath.served_by(fast)
    async def other() -> Dict[str, str]:
        return {"answered_by": "other endpoint"}

    core_fastpath.install(app)
    with TestClient(app) as client:
        assert client.post("/thing", json={}).json() == {"answered_by": "post endpoint"}
        assert client.get("/thing").json() == {"answered_by": "get endpoint"}
        assert client.post("/other", content=b"{}").json() == {"answered_by": "other endpoint"}
    # The GET endpoint's handler saw the GET only, never the POST to its path.
    assert offered == [("GET", "/thing"), ("POST", "/other")]
