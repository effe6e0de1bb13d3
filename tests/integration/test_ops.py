from __future__ import annotations

from typing import Any, Callable

from app.ops import readiness


async def test_ready_reports_each_dependency(client: Any, settings: Any) -> None:
    from app.ml.serving import model_server

    not_serving = await client.get("/ready")
    assert not_serving.status_code == 503
    assert not_serving.json()["detail"]["checks"]["model"] != "ok"

    await model_server.start(settings.resolved_model_dir, watch_interval=0)
    try:
        response = await client.get("/ready")
    finally:
        await model_server.stop()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "model"}
    assert set(body["checks"].values()) == {"ok"}


async def test_ready_is_503_naming_the_failed_dependency(client: Any, monkeypatch: Any) -> None:
    async def broken() -> None:
        raise OSError("connection refused")

    monkeypatch.setitem(readiness.CHECKS, "broker", broken)
    response = await client.get("/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert body["detail"]["checks"]["broker"].startswith("unavailable")
    assert body["detail"]["checks"]["database"] == "ok"
    assert "broker" in body["detail"]["message"]


async def test_metrics_count_requests_by_route_template(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    await client.get("/api/posts/424242", headers=user["headers"])
    text = (await client.get("/metrics")).text
    assert (
        'keel_http_requests_total{method="GET",route="/api/posts/{post_id}",status="404"}' in text
    )
    assert "keel_http_request_duration_seconds_bucket" in text
    assert "keel_db_pool_checked_out" in text
    assert "/api/posts/424242" not in text


async def test_request_metrics_count_every_request_by_route_and_status(client: Any) -> None:
    from app.ops.metrics import HTTP_LATENCY, HTTP_REQUESTS

    def counted() -> float:
        return HTTP_REQUESTS.labels("GET", "/health", "200")._value.get()

    def timed() -> float:
        return HTTP_LATENCY.labels("GET", "/health")._sum.get()

    before, before_time = counted(), timed()
    for _ in range(3):
        assert (await client.get("/health")).status_code == 200
    assert counted() == before + 3
    assert timed() > before_time
