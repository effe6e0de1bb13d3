"""Model-serving endpoints end to end through the ASGI app, with real ONNX
models trained into a temporary MODEL_DIR."""

from __future__ import annotations

import asyncio
import json
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
from sqlalchemy import text

from app.ml.metrics import SHED
from app.ml.registry import Registry
from app.ml.serving import ModelServer, model_server


async def test_predict_returns_label_probability_and_version(client, make_user, serving, parity):
    user = await make_user()
    for features, expected in list(zip(parity["inputs"], parity["probabilities"]))[:5]:
        response = await client.post(
            "/api/predict", json={"features": features}, headers=user["headers"]
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"prediction", "probability", "model_version"}
        assert body["model_version"] == "v1"
        assert body["probability"] == pytest.approx(expected, abs=1e-4)
        assert body["prediction"] == int(body["probability"] > 0.5)


async def test_predict_requires_a_bearer_token(client, serving):
    response = await client.post("/api/predict", json={"features": [0.0] * 30})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("count", [0, 29, 31])
async def test_predict_rejects_wrong_feature_count_naming_the_expected(
    client, make_user, serving, count
):
    user = await make_user()
    response = await client.post(
        "/api/predict", json={"features": [1.0] * count}, headers=user["headers"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "wrong_feature_count"
    assert "30" in response.json()["detail"]


@pytest.mark.parametrize(
    "raw",
    [
        '{"features": [NaN' + ", 1.0" * 29 + "]}",
        '{"features": [Infinity' + ", 1.0" * 29 + "]}",
        '{"features": [-Infinity' + ", 1.0" * 29 + "]}",
        '{"features": [1e39' + ", 1.0" * 29 + "]}",
        '{"features": ["1.0"' + ", 1.0" * 29 + "]}",
        '{"features": [true' + ", 1.0" * 29 + "]}",
        '{"features": [null' + ", 1.0" * 29 + "]}",
        '{"features": [[1.0]' + ", 1.0" * 29 + "]}",
        '{"features": "1.0"}',
        '{"features": {"a": NaN}}',
        '{"features": [1.0], "extra": [Infinity]}',
        "{}",
        "[1.0, 2.0]",
        "not json",
    ],
)
async def test_predict_rejects_non_finite_and_non_numeric_input(client, make_user, serving, raw):
    user = await make_user()
    response = await client.post(
        "/api/predict",
        content=raw,
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_predict_accepts_integers_as_numbers(client, make_user, serving):
    user = await make_user()
    response = await client.post(
        "/api/predict", json={"features": [1] * 30}, headers=user["headers"]
    )
    assert response.status_code == 200


async def test_batch_predicts_every_row_in_order(client, make_user, serving, parity):
    user = await make_user()
    rows = parity["inputs"][:40]
    response = await client.post(
        "/api/predict/batch", json={"instances": rows}, headers=user["headers"]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "v1"
    got = [p["probability"] for p in body["predictions"]]
    assert got == pytest.approx(parity["probabilities"][:40], abs=1e-4)
    assert [p["prediction"] for p in body["predictions"]] == [int(p > 0.5) for p in got]


@pytest.mark.parametrize("n_rows", [0, 1001])
async def test_batch_rejects_empty_or_oversized_input(client, make_user, serving, n_rows):
    user = await make_user()
    response = await client.post(
        "/api/predict/batch", json={"instances": [[1.0] * 30] * n_rows}, headers=user["headers"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_batch_accepts_the_maximum_of_1000_rows(client, make_user, serving):
    user = await make_user()
    response = await client.post(
        "/api/predict/batch", json={"instances": [[1.0] * 30] * 1000}, headers=user["headers"]
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1000


async def test_batch_rejects_a_ragged_row_naming_it(client, make_user, serving):
    user = await make_user()
    rows = [[1.0] * 30, [1.0] * 30, [1.0] * 12]
    response = await client.post(
        "/api/predict/batch", json={"instances": rows}, headers=user["headers"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "wrong_feature_count"
    assert "30" in response.json()["detail"] and "row 2" in response.json()["detail"]


async def test_batch_rejects_nan_in_any_row(client, make_user, serving):
    user = await make_user()
    raw = '{"instances": [[' + ", ".join(["1.0"] * 30) + "], [NaN" + ", 1.0" * 29 + "]]}"
    response = await client.post(
        "/api/predict/batch",
        content=raw,
        headers={**user["headers"], "content-type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_list_models_shows_versions_newest_first_with_the_active_one(
    client, make_user, serving
):
    user = await make_user()
    response = await client.get("/api/models", headers=user["headers"])
    assert response.status_code == 200
    body = response.json()
    assert body["total"] == 3 and body["limit"] == 50 and body["offset"] == 0
    assert [m["version"] for m in body["items"]] == ["v3", "v2", "v1"]
    assert [m["is_active"] for m in body["items"]] == [False, False, True]
    v2 = body["items"][1]
    assert v2["kind"] == "forest" and v2["n_features"] == 30 and len(v2["sha256"]) == 64
    assert "scikit-learn" in v2["framework"] and "accuracy" in v2["metrics"]
    paged = await client.get("/api/models?limit=1&offset=1", headers=user["headers"])
    assert [m["version"] for m in paged.json()["items"]] == ["v2"]


async def test_list_models_requires_auth(client, serving):
    assert (await client.get("/api/models")).status_code == 401


async def test_active_model_describes_the_serving_version(client, make_user, serving):
    user = await make_user()
    response = await client.get("/api/models/active", headers=user["headers"])
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {
        "name",
        "version",
        "n_features",
        "feature_names",
        "classes",
        "metrics",
        "created_at",
        "sha256",
    }
    assert body["version"] == "v1" and body["name"] == "breast-cancer-logreg"
    assert body["n_features"] == 30 and len(body["feature_names"]) == 30
    assert body["classes"] == [0, 1]


async def test_without_a_model_prediction_and_active_answer_503(client, make_user, tmp_path):
    user = await make_user()
    await model_server.start(tmp_path / "empty", watch_interval=0)
    try:
        active = await client.get("/api/models/active", headers=user["headers"])
        assert active.status_code == 503
        assert active.json()["code"] == "model_unavailable"
        predicted = await client.post(
            "/api/predict", json={"features": [1.0] * 30}, headers=user["headers"]
        )
        assert predicted.status_code == 503
        assert predicted.json()["code"] == "model_unavailable"
        assert "retry-after" in predicted.headers
        listed = await client.get("/api/models", headers=user["headers"])
        assert listed.json() == {"items": [], "total": 0, "limit": 50, "offset": 0}
    finally:
        await model_server.stop()


async def test_a_tampered_active_model_is_not_served_at_startup(client, make_user, model_dir):
    Registry(model_dir).set_active("v3")
    user = await make_user()
    await model_server.start(model_dir, watch_interval=0)
    try:
        response = await client.get("/api/models/active", headers=user["headers"])
        assert response.status_code == 503
    finally:
        await model_server.stop()


async def test_activate_swaps_the_serving_model_and_moves_the_pointer(
    client, make_superuser, serving, model_dir
):
    admin = await make_superuser()
    response = await client.post("/api/models/v2/activate", headers=admin["headers"])
    assert response.status_code == 200, response.text
    assert response.json()["version"] == "v2"
    predicted = await client.post(
        "/api/predict", json={"features": [1.0] * 30}, headers=admin["headers"]
    )
    assert predicted.json()["model_version"] == "v2"
    assert (model_dir / "active").read_text().strip() == "v2"


async def test_activate_is_for_superusers_only(client, make_user, serving, model_dir):
    user = await make_user()
    response = await client.post("/api/models/v2/activate", headers=user["headers"])
    assert response.status_code == 403
    assert (model_dir / "active").read_text().strip() == "v1"


@pytest.mark.parametrize("version", ["v99", "latest", "..", "v1%2F..%2Fv2", "v0"])
async def test_activate_unknown_version_is_404(client, make_superuser, serving, version):
    admin = await make_superuser()
    response = await client.post(f"/api/models/{version}/activate", headers=admin["headers"])
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


async def test_activate_refuses_a_tampered_artifact_and_keeps_serving(
    client, make_superuser, serving, model_dir
):
    admin = await make_superuser()
    response = await client.post("/api/models/v3/activate", headers=admin["headers"])
    assert response.status_code == 409
    assert response.json()["code"] == "model_invalid"
    assert "checksum" in response.json()["detail"]
    active = await client.get("/api/models/active", headers=admin["headers"])
    assert active.json()["version"] == "v1"
    assert (model_dir / "active").read_text().strip() == "v1"


async def test_other_processes_follow_the_pointer(serving, model_dir):
    other = ModelServer()
    await other.start(model_dir, watch_interval=0)
    try:
        assert other.current().version == "v1"
        await serving.activate("v2")
        await other.check_pointer()
        assert other.current().version == "v2"
        result = await other.predict(np.ones((1, 30), dtype=np.float32))
        assert result.model_version == "v2"
    finally:
        await other.stop()


async def test_a_pointer_to_a_broken_version_keeps_the_old_model(serving, model_dir):
    other = ModelServer()
    await other.start(model_dir, watch_interval=0)
    try:
        Registry(model_dir).set_active("v3")
        await other.check_pointer()
        assert other.current().version == "v1"
    finally:
        await other.stop()


# ------------------------------------------------------- real commits, concurrency


async def _signed_up(http, committed_db, *, superuser: bool = False) -> Dict[str, str]:
    from tests.conftest import unique_email

    email, password = unique_email("ml"), "correct-horse-1"
    created = await http.post(
        "/api/users", json={"email": email, "password": password, "name": "M"}
    )
    assert created.status_code == 201, created.text
    if superuser:
        async with committed_db.begin() as conn:
            await conn.execute(
                text("UPDATE users SET is_superuser = true WHERE id = :id"),
                {"id": created.json()["id"]},
            )
    tokens = await http.post("/token", data={"username": email, "password": password})
    return {"Authorization": f"Bearer {tokens.json()['access_token']}"}


async def test_no_request_fails_while_models_are_swapped_under_load(
    committed_client, committed_db, serving
):
    headers = await _signed_up(committed_client, committed_db)
    admin = await _signed_up(committed_client, committed_db, superuser=True)
    statuses: List[int] = []
    versions: List[str] = []
    done = asyncio.Event()

    async def client_loop() -> None:
        while not done.is_set():
            response = await committed_client.post(
                "/api/predict", json={"features": [1.0] * 30}, headers=headers
            )
            statuses.append(response.status_code)
            if response.status_code == 200:
                versions.append(response.json()["model_version"])

    workers = [asyncio.ensure_future(client_loop()) for _ in range(8)]
    swaps = []
    for version in ("v2", "v1", "v2", "v1", "v2"):
        await asyncio.sleep(0.05)
        swapped = await committed_client.post(f"/api/models/{version}/activate", headers=admin)
        swaps.append(swapped.status_code)
    await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*workers)
    assert swaps == [200] * 5
    assert len(statuses) > 50
    assert [s for s in statuses if s != 200] == []
    assert {"v1", "v2"} <= set(versions)


async def test_a_full_queue_answers_503_overloaded_with_retry_after(
    committed_client, committed_db, model_dir, monkeypatch
):
    # When the batcher sheds (its queue bound: tests/unit/test_ml_batcher.py),
    # the endpoint answers 503 overloaded with Retry-After.
    headers = await _signed_up(committed_client, committed_db)
    await model_server.start(model_dir, watch_interval=0, max_queue_rows=2)
    body = {"features": [1.0] * 30}
    try:
        accepted = await committed_client.post("/api/predict", json=body, headers=headers)
        assert accepted.status_code == 200
        batcher = model_server.batcher
        real_submit = batcher.submit
        queued = []

        async def behind_a_full_queue(rows):
            queued.append(batcher.enqueue(np.concatenate([rows, rows])))  # 2 of 2 rows
            return await real_submit(rows)

        monkeypatch.setattr(batcher, "submit", behind_a_full_queue)
        before = SHED._value.get()
        refused = await committed_client.post("/api/predict", json=body, headers=headers)
        assert refused.status_code == 503
        assert refused.json()["code"] == "overloaded"
        assert refused.headers["retry-after"] == "1"
        assert SHED._value.get() == before + 1
        assert len((await queued[0]).labels) == 2  # what was accepted is answered
    finally:
        await model_server.stop()


# ------------------------------------------- the HTTP contract of predictions

ROW = [1.5] * 30
ROW_JSON = "[" + ", ".join(["1.5"] * 30) + "]"


async def test_single_and_batch_predictions_agree(client, make_user, serving) -> None:
    user = await make_user()
    one = await client.post("/api/predict", json={"features": ROW}, headers=user["headers"])
    assert one.status_code == 200 and one.headers["content-type"] == "application/json"
    batch = await client.post(
        "/api/predict/batch", json={"instances": [ROW, [0.0] * 30]}, headers=user["headers"]
    )
    assert batch.status_code == 200 and len(batch.json()["predictions"]) == 2
    assert batch.json()["predictions"][0]["probability"] == one.json()["probability"]


async def test_a_lower_case_bearer_scheme_is_accepted(client, make_user, serving) -> None:
    user = await make_user()
    body = {"features": [float(i) / 7 for i in range(30)]}
    upper = await client.post("/api/predict", json=body, headers=user["headers"])
    lower = await client.post(
        "/api/predict", json=body, headers={"Authorization": f"bearer {user['access_token']}"}
    )
    assert upper.status_code == lower.status_code == 200
    assert upper.json() == lower.json()


async def test_predictions_keep_request_id_security_headers_and_metrics(
    client,
    make_user,
    serving,
) -> None:
    user = await make_user()
    headers = {**user["headers"], "X-Request-ID": "predict-1"}
    response = await client.post("/api/predict", json={"features": ROW}, headers=headers)
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "predict-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    metrics = (await client.get("/metrics")).text
    assert 'keel_http_requests_total{method="POST",route="/api/predict",status="200"}' in metrics


async def test_predict_enforces_the_body_size_limit(
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


async def test_other_methods_paths_and_unknown_query_parameters_are_refused(
    client, make_user, serving
) -> None:
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
async def test_predict_validates_content_type_and_body(
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


async def test_the_caller_is_authenticated_before_the_body_is_read(
    client,
    make_user,
    serving,
) -> None:
    # The prediction endpoints read their body after authentication: without
    # a valid token the answer is 401 whatever the body.
    for path in ("/api/predict", "/api/predict/batch"):
        broken = await client.post(path, content="{", headers={"content-type": "application/json"})
        assert broken.status_code == 401 and broken.json()["code"] == "not_authenticated"
    user = await make_user()
    broken = await client.post(
        "/api/predict", content="{", headers={**user["headers"], "content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["code"] == "validation_error"
    assert broken.json()["detail"][0]["type"] == "json_invalid"
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


async def test_batch_validates_every_row(
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
    # The body schema is inline (the endpoint reads its body: app/core/routing.py).
    body = predict["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "PredictRequest" and body["required"] == ["features"]
    assert predict["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/PredictionOut"
    )
    assert {"401", "422", "503"} <= set(predict["responses"])
    batch = schema["paths"]["/api/predict/batch"]["post"]
    body = batch["requestBody"]["content"]["application/json"]["schema"]
    assert body["title"] == "BatchPredictRequest" and body["required"] == ["instances"]


async def _call_app(app: Any, token: str, messages: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One POST /api/predict through the ASGI app, its body as `messages`."""
    pending = list(messages)
    sent: List[Dict[str, Any]] = []

    async def receive() -> Dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "http_version": "1.1",
        "scheme": "http",
        "server": ("test", 80),
        "root_path": "",
        "method": "POST",
        "path": "/api/predict",
        "query_string": b"",
        "headers": [
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {token}".encode()),
        ],
    }
    await app(scope, receive, send)
    return sent


async def test_a_body_sent_in_chunks_is_read_whole(app, make_user, serving) -> None:
    user = await make_user()
    body = json.dumps({"features": ROW}).encode()
    chunks = [
        {"type": "http.request", "body": body[:10], "more_body": True},
        {"type": "http.request", "body": body[10:], "more_body": False},
    ]
    start, answer = await _call_app(app, user["access_token"], chunks)
    assert start["status"] == 200
    assert json.loads(answer["body"])["model_version"] == "v1"


async def test_a_client_gone_before_the_whole_body_gets_400(app, make_user, serving) -> None:
    user = await make_user()
    partial = [{"type": "http.request", "body": b'{"feat', "more_body": True}]
    sent = await _call_app(app, user["access_token"], partial)
    # Starlette reports the disconnect; FastAPI answers 400 "error parsing the body".
    assert sent[0]["status"] == 400
