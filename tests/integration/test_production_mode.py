"""Production with no payment provider configured: payments are disabled
(503 `payments_disabled`, nothing moves). `/metrics` needs METRICS_TOKEN in
production, and is not served there without one."""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from sqlalchemy import text

from app.integrations import stripe as provider
from tests.integration.test_ledger import balance, keyed, open_account
from tests.integration.test_payment_webhook import deliver, sign


@pytest.fixture
def payments_off(settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENVIRONMENT=production and PAYMENT_PROVIDER unset."""
    monkeypatch.setattr(settings, "environment", "production")
    monkeypatch.setattr(settings, "payment_provider", None)


@pytest.fixture
def no_charge(monkeypatch: pytest.MonkeyPatch) -> None:
    async def charge(**kwargs: Any) -> provider.ChargeResult:
        raise AssertionError("the provider must not be called with payments disabled")

    monkeypatch.setattr(provider, "charge", charge)


async def _count(session: Any, table: str) -> int:
    return int((await session.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def test_pay_without_a_provider_in_production_is_503_and_moves_nothing(
    client: Any, session: Any, make_user: Callable[..., Any], payments_off: None, no_charge: None
) -> None:
    user = await make_user()
    account = await open_account(client, user)
    for headers in (user["headers"], keyed(user, "pay-1")):
        response = await client.post(
            "/api/pay", json={"amount": 99_999_999, "account_id": account["id"]}, headers=headers
        )
        assert response.status_code == 503, response.text
        assert response.json()["code"] == "payments_disabled"
        assert int(response.headers["Retry-After"]) >= 1
    assert await balance(client, user, account["id"]) == "0.00"
    assert await _count(session, "payments") == 0
    assert await _count(session, "idempotency_keys") == 0


async def test_webhook_without_a_provider_in_production_is_503_and_records_nothing(
    client: Any, session: Any, settings: Any, payments_off: None
) -> None:
    payload = json.dumps({"id": "evt_off", "type": "customer.created"}).encode()
    # Signed with the public development secret, as an attacker would.
    response = await deliver(client, payload, sign(payload, settings.stripe_webhook_secret))
    assert response.status_code == 503
    assert response.json()["code"] == "payments_disabled"
    assert int(response.headers["Retry-After"]) >= 1
    assert await _count(session, "payment_events") == 0


async def test_payments_work_with_the_fake_provider_outside_production(
    client: Any, make_user: Callable[..., Any]
) -> None:
    user = await make_user()
    account = await open_account(client, user)
    response = await client.post(
        "/api/pay", json={"amount": 1_000, "account_id": account["id"]}, headers=user["headers"]
    )
    assert response.status_code == 200


# ------------------------------------------------------------------ metrics


async def test_metrics_are_open_outside_production_without_a_token(client: Any) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert "keel_http_requests_total" in response.text


async def test_metrics_in_production_without_a_token_configured_are_not_served(
    client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "environment", "production")
    monkeypatch.setattr(settings, "metrics_token", None)
    response = await client.get("/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    assert "keel_http_requests_total" not in response.text


@pytest.mark.parametrize("environment", ["production", "development"])
async def test_metrics_with_a_token_configured_need_it_as_bearer(
    client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch, environment: str
) -> None:
    monkeypatch.setattr(settings, "environment", environment)
    monkeypatch.setattr(settings, "metrics_token", "scrape-token-0123456789abcdef")
    for headers in (
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": "Bearer scrape-token-0123456789abcdeX"},
        {"Authorization": "Basic scrape-token-0123456789abcdef"},
        {"Authorization": "Bearer "},
    ):
        refused = await client.get("/metrics", headers=headers)
        assert refused.status_code == 401, headers
        assert refused.json()["code"] in ("not_authenticated", "invalid_token")
        assert refused.headers["WWW-Authenticate"] == "Bearer"
        assert "keel_http_requests_total" not in refused.text
    allowed = await client.get(
        "/metrics", headers={"Authorization": "Bearer scrape-token-0123456789abcdef"}
    )
    assert allowed.status_code == 200
    assert "keel_http_requests_total" in allowed.text
