"""The real Stripe path of app/integrations/stripe.py with only the SDK's HTTP
layer replaced: what we send (our idempotency key, amount, metadata) and
how provider answers map to success, decline and provider error."""

from __future__ import annotations

import json
import time
from typing import Any, Dict, List, Mapping, Optional, Tuple
from urllib.parse import parse_qs, urlparse

import pytest
import stripe

from app.integrations import stripe as adapter


class FakeStripeHTTP(stripe.HTTPClient):
    """Answers Stripe API calls from a script of (status, body) pairs."""

    name = "fake"

    def __init__(self, script: List[Tuple[int, Any]]) -> None:
        super().__init__()
        self.script = list(script)
        self.requests: List[Dict[str, Any]] = []
        self.sleeps: List[float] = []

    async def sleep_async(self, secs: float) -> None:
        self.sleeps.append(secs)

    def request(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Any:
        raise AssertionError("the adapter must use the async API")

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> Tuple[bytes, int, Mapping[str, str]]:
        self.requests.append(
            {
                "method": method,
                "path": urlparse(url).path,
                "headers": dict(headers),
                "form": parse_qs(post_data or ""),
            }
        )
        # The SDK retries some failures (max_network_retries=1): repeat the last answer.
        status, body = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(body, Exception):
            raise body
        return (
            json.dumps(body).encode(),
            status,
            {"Request-Id": "req_test", "Stripe-Should-Retry": "false"},
        )


@pytest.fixture
def stripe_http(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(settings, "payment_provider", "stripe")
    monkeypatch.setattr(settings, "stripe_api_key", "sk_test_keel")

    def install(script: List[Tuple[int, Any]]) -> FakeStripeHTTP:
        http = FakeStripeHTTP(script)
        adapter.set_client(adapter.build_client(http_client=http))
        return http

    yield install
    adapter.set_client(None)


def intent(status: str, intent_id: str = "pi_123") -> Dict[str, Any]:
    return {
        "id": intent_id,
        "object": "payment_intent",
        "status": status,
        "amount": 1000,
        "currency": "usd",
    }


async def test_charge_sends_our_idempotency_key_and_returns_the_intent_id(stripe_http: Any) -> None:
    http = stripe_http([(200, intent("succeeded"))])
    result = await adapter.charge(
        amount=1000, currency="USD", idempotency_key="keel-payment-7", metadata={"payment_id": "7"}
    )
    assert result.provider_payment_id == "pi_123"
    (sent,) = http.requests
    assert sent["method"] == "post" and sent["path"] == "/v1/payment_intents"
    assert sent["headers"]["Idempotency-Key"] == "keel-payment-7"
    assert sent["headers"]["Authorization"] == "Bearer sk_test_keel"
    assert sent["form"]["amount"] == ["1000"] and sent["form"]["currency"] == ["usd"]
    assert sent["form"]["confirm"] == ["true"]
    assert sent["form"]["metadata[payment_id]"] == ["7"]


async def test_card_error_is_a_decline(stripe_http: Any) -> None:
    stripe_http(
        [
            (
                402,
                {
                    "error": {
                        "type": "card_error",
                        "code": "card_declined",
                        "message": "Your card was declined.",
                    }
                },
            )
        ]
    )
    with pytest.raises(adapter.ChargeDeclined):
        await adapter.charge(amount=1000, currency="USD", idempotency_key="k", metadata={})


@pytest.mark.parametrize(
    "answer",
    [
        (500, {"error": {"type": "api_error", "message": "boom"}}),
        (429, {"error": {"type": "rate_limit_error", "message": "slow down"}}),
        (401, {"error": {"type": "invalid_request_error", "message": "bad key"}}),
        (0, stripe.APIConnectionError("read timeout", should_retry=False)),
        (200, intent("processing")),
    ],
)
async def test_unknown_outcomes_are_provider_errors(
    stripe_http: Any, answer: Tuple[int, Any]
) -> None:
    http = stripe_http([answer])
    with pytest.raises(adapter.ProviderError):
        await adapter.charge(
            amount=1000, currency="USD", idempotency_key="keel-payment-9", metadata={}
        )
    # A network-level retry by the SDK reuses our key, never a random one.
    assert {r["headers"]["Idempotency-Key"] for r in http.requests} == {"keel-payment-9"}


async def test_intent_needing_a_new_payment_method_is_a_decline(stripe_http: Any) -> None:
    stripe_http([(200, intent("requires_payment_method"))])
    with pytest.raises(adapter.ChargeDeclined):
        await adapter.charge(amount=1000, currency="USD", idempotency_key="k", metadata={})


def test_fake_provider_is_deterministic_per_key_and_steerable_by_cents() -> None:
    first = adapter._fake_charge(amount=1000, idempotency_key="keel-payment-1")
    assert first == adapter._fake_charge(amount=1000, idempotency_key="keel-payment-1")
    assert first != adapter._fake_charge(amount=1000, idempotency_key="keel-payment-2")
    with pytest.raises(adapter.ChargeDeclined):
        adapter._fake_charge(amount=1002, idempotency_key="k")
    with pytest.raises(adapter.ProviderError):
        adapter._fake_charge(amount=1003, idempotency_key="k")


def _header(payload: bytes, secret: str, stamp: Optional[int] = None) -> str:
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, stamp)


def test_verify_webhook_accepts_a_fresh_signature_and_returns_the_event(settings: Any) -> None:
    payload = b'{"id": "evt_1", "type": "ping"}'
    event = adapter.verify_webhook(payload, _header(payload, settings.stripe_webhook_secret))
    assert event == {"id": "evt_1", "type": "ping"}


@pytest.mark.parametrize(
    "payload, header_of",
    [
        (b'{"id": "evt_1"}', lambda p, s: _header(p, s, int(time.time()) - 301)),
        (b'{"id": "evt_1"}', lambda p, s: _header(p, "whsec_other")),
        (b'{"id": "evt_1"}', lambda p, s: None),
        (b'{"id": "evt_1"}', lambda p, s: "t=abc,v1=def"),
        (b"\xff\xfe", lambda p, s: "t=1,v1=00"),
        (b"[1, 2]", lambda p, s: _header(p, s)),
        (b"not json", lambda p, s: _header(p, s)),
    ],
)
def test_verify_webhook_refuses_bad_input(settings: Any, payload: bytes, header_of: Any) -> None:
    with pytest.raises(adapter.InvalidWebhook):
        adapter.verify_webhook(payload, header_of(payload, settings.stripe_webhook_secret))
