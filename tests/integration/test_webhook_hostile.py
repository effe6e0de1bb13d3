"""Hostile but validly signed webhooks: never a 500, never a credit they do
not deserve, and answers that stop needless redelivery."""

from __future__ import annotations

import json
import time
from typing import Any, List, Tuple

import pytest
from sqlalchemy import text

from tests.integration.test_ledger import balance, open_account, signed_up_user
from tests.integration.test_payment_webhook import (
    charges_time_out,
    deliver,
    sign,
    stored_events,
    succeeded_event,
)


async def one_value(engine: Any, sql: str) -> Any:
    async with engine.connect() as conn:
        return (await conn.execute(text(sql))).scalar_one()


async def payment_rows(engine: Any) -> List[Tuple[Any, ...]]:
    """(id, status, provider_payment_id) of every payment, oldest first."""
    sql = "SELECT id, status, provider_payment_id FROM payments ORDER BY id"
    async with engine.connect() as conn:
        return [tuple(row) for row in (await conn.execute(text(sql))).all()]


async def test_signed_deeply_nested_body_is_400_invalid_event(
    committed_client: Any, settings: Any, engine: Any
) -> None:
    for payload in (b"[" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        response = await deliver(
            committed_client, payload, sign(payload, settings.stripe_webhook_secret)
        )
        assert response.status_code == 400, response.text[:200]
        assert response.json()["code"] == "invalid_event"
    assert await stored_events(engine) == 0


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b'"evt"'])
async def test_signed_body_that_is_not_an_event_object_is_400_invalid_event(
    committed_client: Any, settings: Any, payload: bytes
) -> None:
    response = await deliver(
        committed_client, payload, sign(payload, settings.stripe_webhook_secret)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_event"


@pytest.mark.parametrize("ahead", [301, 3600, 10**9])
async def test_webhook_timestamp_far_in_the_future_is_refused(
    committed_client: Any, settings: Any, engine: Any, ahead: int
) -> None:
    payload = json.dumps({"id": "evt_future", "type": "customer.created"}).encode()
    signature = sign(payload, settings.stripe_webhook_secret, int(time.time()) + ahead)
    response = await deliver(committed_client, payload, signature)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_signature"
    assert await stored_events(engine) == 0


async def test_webhook_timestamp_slightly_ahead_is_accepted(
    committed_client: Any, settings: Any, engine: Any
) -> None:
    """Clocks drift: the tolerance applies both ways, not zero ahead."""
    payload = json.dumps({"id": "evt_ahead", "type": "customer.created"}).encode()
    signature = sign(payload, settings.stripe_webhook_secret, int(time.time()) + 250)
    response = await deliver(committed_client, payload, signature)
    assert response.status_code == 200
    assert await stored_events(engine) == 1


async def test_event_whose_intent_belongs_to_another_payment_is_recorded_and_skipped(
    committed_client: Any, settings: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    payments = charges_time_out(monkeypatch)
    for _ in range(2):
        response = await committed_client.post(
            "/api/pay", json={"amount": 700, "account_id": account["id"]}, headers=user["headers"]
        )
        assert response.status_code == 502
    first, second = payments
    secret = settings.stripe_webhook_secret

    paid = succeeded_event("evt_first", first, "pi_shared", 700)
    assert (await deliver(committed_client, paid, sign(paid, secret))).status_code == 200
    assert await balance(committed_client, user, account["id"]) == "7.00"

    # A signed event naming the second payment with the first one's intent.
    stolen = succeeded_event("evt_second", second, "pi_shared", 700)
    for _ in range(2):  # the redelivery is a recorded duplicate, not a retry
        response = await deliver(committed_client, stolen, sign(stolen, secret))
        assert response.status_code == 200, response.text
    assert await balance(committed_client, user, account["id"]) == "7.00"
    assert await stored_events(engine) == 2
    linked = await one_value(
        engine, "SELECT payment_id FROM payment_events WHERE event_id = 'evt_second'"
    )
    assert await payment_rows(engine) == [
        (first, "succeeded", "pi_shared"),
        (second, "pending", None),
    ]
    assert linked is None


async def test_intent_attached_to_another_payment_concurrently_is_recorded_and_skipped(
    committed_client: Any, settings: Any, engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race behind the check above: another transaction attaches the
    intent after this event looked for it and commits while this event waits
    on the unique index. The event is still recorded, skipped and answered 200."""
    import asyncio

    user = await signed_up_user(committed_client)
    account = await open_account(committed_client, user)
    payments = charges_time_out(monkeypatch)
    for _ in range(2):
        await committed_client.post(
            "/api/pay", json={"amount": 700, "account_id": account["id"]}, headers=user["headers"]
        )
    first, second = payments

    async with engine.connect() as other:
        transaction = await other.begin()
        await other.execute(
            text("UPDATE payments SET provider_payment_id = 'pi_race' WHERE id = :id"),
            {"id": first},
        )
        event = succeeded_event("evt_race", second, "pi_race", 700)
        delivery = asyncio.ensure_future(
            deliver(committed_client, event, sign(event, settings.stripe_webhook_secret))
        )

        async def webhook_waits_on_our_lock() -> bool:
            async with engine.connect() as probe:
                waiting = await probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND datname = current_database() AND query LIKE 'UPDATE payments%'"
                    )
                )
                return int(waiting.scalar_one()) > 0

        deadline = asyncio.get_running_loop().time() + 60  # hang guard only
        while not await webhook_waits_on_our_lock():
            assert not delivery.done(), (await delivery).text
            assert asyncio.get_running_loop().time() < deadline, "the webhook never blocked"
            await asyncio.sleep(0.02)
        await transaction.commit()

    response = await asyncio.wait_for(delivery, 60)
    assert response.status_code == 200, response.text
    assert await balance(committed_client, user, account["id"]) == "0.00"
    recorded = await one_value(
        engine, "SELECT count(*) FROM payment_events WHERE event_id = 'evt_race'"
    )
    assert await payment_rows(engine) == [
        (first, "pending", "pi_race"),
        (second, "pending", None),
    ]
    assert recorded == 1
