"""Payments over HTTP on real PostgreSQL: the local fake provider by
default; `app.integrations.stripe.charge` replaced where a test needs to steer
the provider's answer or timing."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Callable, Dict, List

import pytest
from sqlalchemy import text

from app.integrations import stripe as provider
from tests.integration.test_ledger import balance, keyed, open_account, signed_up_user


async def pay(client: Any, user: Dict[str, Any], account_id: int, cents: int, key: str = "") -> Any:
    headers = keyed(user, key) if key else user["headers"]
    return await client.post(
        "/api/pay", json={"amount": cents, "account_id": account_id}, headers=headers
    )


async def test_pay_credits_the_account_and_writes_one_entry(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    response = await pay(client, alice, account["id"], 1_000)
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": body["id"],
        "status": "succeeded",
        "amount": 1000,
        "account_id": account["id"],
    }
    assert await balance(client, alice, account["id"]) == "10.00"
    entries = (
        await client.get(f"/api/accounts/{account['id']}/entries", headers=alice["headers"])
    ).json()
    assert [(e["amount"], e["balance_after"], e["transfer_id"]) for e in entries["items"]] == [
        ("10.00", "10.00", None)
    ]


async def test_pay_replay_with_same_key_credits_once(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    key = uuid.uuid4().hex
    first = await pay(client, alice, account["id"], 2_500, key)
    again = await pay(client, alice, account["id"], 2_500, key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert await balance(client, alice, account["id"]) == "25.00"


async def test_pay_same_key_different_amount_is_409(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    key = uuid.uuid4().hex
    assert (await pay(client, alice, account["id"], 2_500, key)).status_code == 200
    reused = await pay(client, alice, account["id"], 2_600, key)
    assert reused.status_code == 409
    assert reused.json()["code"] == "idempotency_key_reused"
    assert await balance(client, alice, account["id"]) == "25.00"


async def test_declined_payment_is_402_credits_nothing_and_replays_402(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    key = uuid.uuid4().hex
    declined = await pay(client, alice, account["id"], 1_002, key)  # the fake declines *02
    assert declined.status_code == 402
    assert declined.json()["code"] == "payment_declined"
    again = await pay(client, alice, account["id"], 1_002, key)
    assert again.status_code == 402 and again.json() == declined.json()
    assert await balance(client, alice, account["id"]) == "0.00"


async def test_provider_error_is_502_and_a_retry_with_the_same_key_credits_once(
    client: Any, make_user: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    provider_keys: List[str] = []
    outcomes = [provider.ProviderError("timeout"), None, None]

    async def flaky_charge(**kwargs: Any) -> provider.ChargeResult:
        provider_keys.append(kwargs["idempotency_key"])
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return provider.ChargeResult(provider_payment_id="pi_" + kwargs["idempotency_key"])

    monkeypatch.setattr(provider, "charge", flaky_charge)
    key = uuid.uuid4().hex
    failed = await pay(client, alice, account["id"], 4_200, key)
    assert failed.status_code == 502
    assert failed.json()["code"] == "payment_provider_error"
    assert await balance(client, alice, account["id"]) == "0.00"

    retried = await pay(client, alice, account["id"], 4_200, key)
    assert retried.status_code == 200
    assert retried.json()["status"] == "succeeded"
    again = await pay(client, alice, account["id"], 4_200, key)
    assert again.json() == retried.json()
    assert await balance(client, alice, account["id"]) == "42.00"
    # Both provider calls carried our deterministic key for the same payment.
    assert provider_keys == [f"keel-payment-{retried.json()['id']}"] * 2


async def test_fake_provider_error_amount_gives_502_without_credit(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    response = await pay(client, alice, account["id"], 1_003)
    assert response.status_code == 502
    assert await balance(client, alice, account["id"]) == "0.00"


async def test_pay_into_someone_elses_account_is_404(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice, bob = await make_user(), await make_user()
    account = await open_account(client, alice)
    response = await pay(client, bob, account["id"], 1_000)
    assert response.status_code == 404
    assert await balance(client, alice, account["id"]) == "0.00"


@pytest.mark.parametrize("amount", [0, -100, 10.5, "ten", True, None, 10**12, [1000]])
async def test_pay_rejects_bad_amounts_with_422(
    client: Any, make_user: Callable[..., Any], amount: Any
) -> None:
    alice = await make_user()
    account = await open_account(client, alice)
    response = await client.post(
        "/api/pay", json={"amount": amount, "account_id": account["id"]}, headers=alice["headers"]
    )
    assert response.status_code == 422
    assert response.json()["code"] == "validation_error"


async def test_pay_requires_authentication(client: Any) -> None:
    response = await client.post("/api/pay", json={"amount": 1000, "account_id": 1})
    assert response.status_code == 401


async def test_provider_is_called_with_the_pending_payment_committed_and_no_transaction_open(
    committed_client: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    seen: Dict[str, Any] = {}
    async with engine.connect() as conn:
        started = (await conn.execute(text("SELECT clock_timestamp()"))).scalar_one()

    async def observing_charge(**kwargs: Any) -> provider.ChargeResult:
        async with engine.connect() as conn:
            seen["status"] = (
                await conn.execute(
                    text("SELECT status FROM payments WHERE id = :id"),
                    {"id": int(kwargs["metadata"]["payment_id"])},
                )
            ).scalar_one()
            seen["open"] = (
                await conn.execute(
                    # Transactions this request could have opened (not leftovers
                    # of earlier tests' processes): started during this test.
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state LIKE 'idle in transaction%'"
                        " AND xact_start >= :started"
                    ),
                    {"started": started},
                )
            ).scalar_one()
        return provider.ChargeResult(provider_payment_id="pi_observed")

    monkeypatch.setattr(provider, "charge", observing_charge)
    response = await pay(committed_client, user, account["id"], 1_000)
    assert response.status_code == 200
    assert seen == {"status": "pending", "open": 0}


async def test_concurrent_duplicate_payments_with_one_key_credit_once(
    committed_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    real_charge = provider.charge

    async def slow_charge(**kwargs: Any) -> provider.ChargeResult:
        await asyncio.sleep(0.02)
        return await real_charge(**kwargs)

    monkeypatch.setattr(provider, "charge", slow_charge)
    key = uuid.uuid4().hex
    responses = await asyncio.gather(
        *(pay(committed_client, user, account["id"], 700, key) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    assert await balance(committed_client, user, account["id"]) == "7.00"


@pytest.mark.parametrize(
    "answer, status, credited",
    [
        ((200, {"id": "pi_real", "object": "payment_intent", "status": "succeeded"}), 200, "10.00"),
        (
            (402, {"error": {"type": "card_error", "code": "card_declined", "message": "No"}}),
            402,
            "0.00",
        ),
        ((500, {"error": {"type": "api_error", "message": "down"}}), 502, "0.00"),
    ],
)
async def test_pay_through_the_stripe_adapter_with_only_its_http_api_faked(
    client: Any,
    make_user: Callable[..., Any],
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    answer: Any,
    status: int,
    credited: str,
) -> None:
    from tests.unit.test_stripe_adapter import FakeStripeHTTP

    monkeypatch.setattr(settings, "payment_provider", "stripe")
    monkeypatch.setattr(settings, "stripe_api_key", "sk_test_keel")
    http = FakeStripeHTTP([answer])
    provider.set_client(provider.build_client(http_client=http))
    try:
        alice = await make_user()
        account = await open_account(client, alice)
        response = await pay(client, alice, account["id"], 1_000)
    finally:
        provider.set_client(None)
    assert response.status_code == status
    assert await balance(client, alice, account["id"]) == credited
    assert http.requests[0]["headers"]["Idempotency-Key"].startswith("keel-payment-")


async def test_pay_into_an_account_whose_currency_has_no_cents_is_422(
    client: Any, make_user: Callable[..., Any]
) -> None:
    alice = await make_user()
    account = await open_account(client, alice, "JPY")
    response = await pay(client, alice, account["id"], 1_000)
    assert response.status_code == 422
    assert await balance(client, alice, account["id"]) == "0.00"
