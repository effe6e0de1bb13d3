"""The payment webhook: signature on the raw body, each event once, and a
top-up credited exactly once however API response and webhooks interleave."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from typing import Any, List, Optional

import pytest
from sqlalchemy import text

from app.integrations import stripe as provider
from tests.integration.test_ledger import balance, keyed, open_account, signed_up_user


def sign(payload: bytes, secret: str, timestamp: Optional[int] = None) -> str:
    """The provider's scheme: t=<unix>,v1=hex(HMAC-SHA256(secret, "<t>.<body>"))."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={stamp},v1={mac}"


def succeeded_event(event_id: str, payment_id: int, intent_id: str, cents: int) -> bytes:
    event = {
        "id": event_id,
        "object": "event",
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "amount": cents,
                "amount_received": cents,
                "currency": "usd",
                "status": "succeeded",
                "metadata": {"payment_id": str(payment_id)},
            }
        },
    }
    return json.dumps(event).encode()


async def deliver(client: Any, payload: bytes, signature: Optional[str]) -> Any:
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["Stripe-Signature"] = signature
    return await client.post("/api/payments/webhook", content=payload, headers=headers)


def charges_time_out(monkeypatch: pytest.MonkeyPatch) -> List[int]:
    """From now on the provider's charge times out, so each payment stays
    pending; the returned list receives each charged payment's id, in order."""
    charged: List[int] = []

    async def timing_out_charge(**kwargs: Any) -> provider.ChargeResult:
        charged.append(int(kwargs["metadata"]["payment_id"]))
        raise provider.ProviderError("timeout")

    monkeypatch.setattr(provider, "charge", timing_out_charge)
    return charged


async def stored_events(engine: Any) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT count(*) FROM payment_events"))).scalar_one())


@pytest.mark.parametrize("webhooks_before_response", [0, 1, 2, 3])
async def test_event_delivered_three_times_around_the_api_path_credits_once(
    committed_client: Any,
    settings: Any,
    monkeypatch: pytest.MonkeyPatch,
    webhooks_before_response: int,
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    secret = settings.stripe_webhook_secret
    rng = random.Random(webhooks_before_response)
    late: List[asyncio.Task[Any]] = []
    statuses: List[int] = []

    async def delivering_charge(**kwargs: Any) -> provider.ChargeResult:
        payment_id = int(kwargs["metadata"]["payment_id"])
        intent = f"pi_test_{payment_id}"
        payload = succeeded_event(f"evt_{payment_id}", payment_id, intent, kwargs["amount"])

        async def one() -> None:
            await asyncio.sleep(rng.uniform(0, 0.01))
            statuses.append(
                (await deliver(committed_client, payload, sign(payload, secret))).status_code
            )

        # Some deliveries land before the API path applies the response, the
        # rest race with it.
        await asyncio.gather(*(one() for _ in range(webhooks_before_response)))
        late.extend(asyncio.ensure_future(one()) for _ in range(3 - webhooks_before_response))
        return provider.ChargeResult(provider_payment_id=intent)

    monkeypatch.setattr(provider, "charge", delivering_charge)
    response = await committed_client.post(
        "/api/pay", json={"amount": 1_234, "account_id": account["id"]}, headers=user["headers"]
    )
    await asyncio.gather(*late)
    assert response.status_code == 200
    assert statuses == [200, 200, 200]
    assert await balance(committed_client, user, account["id"]) == "12.34"
    entries = await committed_client.get(
        f"/api/accounts/{account['id']}/entries", headers=user["headers"]
    )
    assert entries.json()["total"] == 1


async def test_webhook_completes_a_payment_whose_api_call_failed_and_retry_does_not_recredit(
    committed_client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    charged = charges_time_out(monkeypatch)
    failed = await committed_client.post(
        "/api/pay", json={"amount": 5_000, "account_id": account["id"]}, headers=keyed(user, "k1")
    )
    assert failed.status_code == 502
    assert await balance(committed_client, user, account["id"]) == "0.00"

    [payment_id] = charged
    payload = succeeded_event("evt_late", payment_id, "pi_late", 5_000)
    for _ in range(3):
        delivered = await deliver(
            committed_client, payload, sign(payload, settings.stripe_webhook_secret)
        )
        assert delivered.status_code == 200
    assert await balance(committed_client, user, account["id"]) == "50.00"

    async def idempotent_charge(**kwargs: Any) -> provider.ChargeResult:
        return provider.ChargeResult(provider_payment_id="pi_late")

    monkeypatch.setattr(provider, "charge", idempotent_charge)
    retried = await committed_client.post(
        "/api/pay", json={"amount": 5_000, "account_id": account["id"]}, headers=keyed(user, "k1")
    )
    assert retried.status_code == 200 and retried.json()["id"] == payment_id
    assert await balance(committed_client, user, account["id"]) == "50.00"


@pytest.mark.parametrize(
    "case", ["wrong_secret", "stale", "missing", "garbled", "tampered_body", "no_v1"]
)
async def test_webhook_with_bad_signature_is_400_and_has_no_effect(
    committed_client: Any, settings: Any, engine: Any, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    charged = charges_time_out(monkeypatch)
    failed = await committed_client.post(
        "/api/pay", json={"amount": 900, "account_id": account["id"]}, headers=user["headers"]
    )
    assert failed.status_code == 502
    payload = succeeded_event("evt_bad", charged[0], "pi_bad", 900)
    secret = settings.stripe_webhook_secret
    signature: Optional[str] = {
        "wrong_secret": sign(payload, "whsec_wrong"),
        "stale": sign(payload, secret, int(time.time()) - 301),
        "missing": None,
        "garbled": "not-a-signature",
        "tampered_body": sign(payload.replace(b"900", b"901"), secret),
        "no_v1": f"t={int(time.time())}",
    }[case]

    response = await deliver(committed_client, payload, signature)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert await stored_events(engine) == 0
    assert await balance(committed_client, user, account["id"]) == "0.00"


async def test_webhook_within_tolerance_is_accepted_and_unknown_events_are_stored_once(
    committed_client: Any, settings: Any, engine: Any
) -> None:
    payload = json.dumps(
        {"id": "evt_other", "type": "customer.created", "data": {"object": {}}}
    ).encode()
    signature = sign(payload, settings.stripe_webhook_secret, int(time.time()) - 250)
    for _ in range(2):
        response = await deliver(committed_client, payload, signature)
        assert response.status_code == 200
    assert await stored_events(engine) == 1


async def test_webhook_with_mismatched_amount_does_not_credit(
    committed_client: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    charged = charges_time_out(monkeypatch)
    await committed_client.post(
        "/api/pay", json={"amount": 900, "account_id": account["id"]}, headers=user["headers"]
    )
    payload = succeeded_event("evt_mismatch", charged[0], "pi_m", 90_000)
    response = await deliver(
        committed_client, payload, sign(payload, settings.stripe_webhook_secret)
    )
    assert response.status_code == 200
    assert await balance(committed_client, user, account["id"]) == "0.00"
