"""The payment provider adapter: the only module that talks to Stripe.

`charge` creates and confirms a PaymentIntent with *our* idempotency key
(derived from our payment id), so a retried charge is never taken twice;
`verify_webhook` checks a `Stripe-Signature` header on the raw body.
`PAYMENT_PROVIDER=fake` selects a deterministic local fake with the same
contract (docs/api.md): amounts ending in 02 cents are declined, in 03 a
provider error, anything else succeeds with an intent id derived from the key.
Tests of the real path swap the SDK's HTTP client (`set_client`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional

from app.core.config import get_settings

if TYPE_CHECKING:
    import stripe

logger = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300
FAKE_DECLINE_CENTS = 2
FAKE_ERROR_CENTS = 3


class ProviderError(Exception):
    """The provider could not tell us the outcome (network, timeout, 5xx,
    misconfiguration): nothing is known to be charged; retrying with the
    same idempotency key is safe."""


class ChargeDeclined(Exception):
    """The provider refused the charge (card declined and the like)."""


class InvalidWebhook(Exception):
    """Bad or missing signature, or a timestamp outside the tolerance."""


class MalformedEvent(InvalidWebhook):
    """Validly signed, but the body is not a readable JSON object."""


class PaymentsDisabled(Exception):
    """No payment provider is configured (production without PAYMENT_PROVIDER)."""


@dataclass(frozen=True)
class ChargeResult:
    provider_payment_id: str


_client: Optional[stripe.StripeClient] = None


def set_client(client: Optional[stripe.StripeClient]) -> None:
    """Use this Stripe client (tests pass one with a fake HTTP layer)."""
    global _client
    _client = client


def build_client(http_client: Optional[stripe.HTTPClient] = None) -> stripe.StripeClient:
    """A Stripe client with our timeout and retry policy; `http_client`
    replaces the SDK's HTTP layer (httpx by default)."""
    import stripe  # imported when used: it pulls in httpx, rich, ... (slow to import)

    settings = get_settings()
    if not settings.stripe_api_key:
        raise ProviderError("STRIPE_API_KEY is not configured")
    return stripe.StripeClient(
        settings.stripe_api_key,
        http_client=http_client or stripe.HTTPXClient(timeout=settings.payment_timeout_seconds),
        # Our idempotency key makes the SDK's own network retry safe.
        max_network_retries=1,
    )


def payments_enabled() -> bool:
    return get_settings().active_payment_provider is not None


def _stripe_client() -> stripe.StripeClient:
    global _client
    if _client is None:
        _client = build_client()
    return _client


async def charge(
    *, amount: int, currency: str, idempotency_key: str, metadata: Mapping[str, str]
) -> ChargeResult:
    """Charge `amount` minor units of `currency`. Raises ChargeDeclined or
    ProviderError. Never call this inside an open database transaction."""
    active = get_settings().active_payment_provider
    if active is None:
        raise PaymentsDisabled()
    if active == "fake":
        return _fake_charge(amount=amount, idempotency_key=idempotency_key)
    return await _stripe_charge(
        amount=amount, currency=currency, idempotency_key=idempotency_key, metadata=metadata
    )


def _fake_charge(*, amount: int, idempotency_key: str) -> ChargeResult:
    cents = amount % 100
    if cents == FAKE_DECLINE_CENTS:
        raise ChargeDeclined("Your card was declined.")
    if cents == FAKE_ERROR_CENTS:
        raise ProviderError("fake provider: simulated timeout")
    digest = hashlib.sha256(idempotency_key.encode()).hexdigest()[:24]
    return ChargeResult(provider_payment_id=f"pi_fake_{digest}")


async def _stripe_charge(
    *, amount: int, currency: str, idempotency_key: str, metadata: Mapping[str, str]
) -> ChargeResult:
    import stripe

    settings = get_settings()
    client = _stripe_client()
    params: Dict[str, Any] = {
        "amount": amount,
        "currency": currency.lower(),
        "confirm": True,
        "payment_method": settings.stripe_payment_method,
        "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"},
        "metadata": dict(metadata),
    }
    try:
        intent = await client.v1.payment_intents.create_async(
            params,  # type: ignore[arg-type]
            options={"idempotency_key": idempotency_key},
        )
    except stripe.CardError as error:
        raise ChargeDeclined(error.user_message or "Your card was declined.") from error
    except stripe.StripeError as error:
        # Connection errors, timeouts, rate limits, 5xx, auth/config problems,
        # idempotency conflicts: the outcome is unknown or retryable.
        logger.warning("stripe error %s: %s", type(error).__name__, error.user_message)
        raise ProviderError(type(error).__name__) from error
    status = intent.status
    if status == "succeeded":
        return ChargeResult(provider_payment_id=str(intent.id))
    if status in ("requires_payment_method", "canceled"):
        raise ChargeDeclined("The payment was not completed.")
    # processing / requires_action: the outcome arrives later by webhook.
    raise ProviderError(f"payment intent status {status}")


def verify_webhook(payload: bytes, signature_header: Optional[str]) -> Dict[str, Any]:
    """The event, once the `Stripe-Signature` header (HMAC-SHA256 of
    `t.payload`, its timestamp within the tolerance either way) matches the
    raw body. Raises InvalidWebhook for a bad signature or timestamp,
    MalformedEvent for a signed body that is not a readable JSON object."""
    import stripe

    if not payments_enabled():
        raise PaymentsDisabled()
    secret = get_settings().stripe_webhook_secret
    try:
        stripe.WebhookSignature.verify_header(
            payload, signature_header, secret, WEBHOOK_TOLERANCE_SECONDS
        )
    except (stripe.SignatureVerificationError, UnicodeDecodeError) as error:
        raise InvalidWebhook(str(error)) from error
    assert signature_header is not None  # verify_header refuses a missing one
    # The SDK only refuses old timestamps; one far ahead would let a leaked
    # signed request be replayed until then.
    if _signed_at(signature_header) > time.time() + WEBHOOK_TOLERANCE_SECONDS:
        raise InvalidWebhook("timestamp too far in the future")
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError) as error:
        # RecursionError: a body nested deeper than the decoder's stack allows.
        raise MalformedEvent(f"unreadable event body: {type(error).__name__}") from None
    if not isinstance(event, dict):
        raise MalformedEvent("event is not a JSON object")
    return event


def _signed_at(header: str) -> int:
    """The timestamp verify_header checked: the first `t` item, read the same way."""
    for item in header.split(","):
        parts = item.split("=", 2)
        if parts[0] == "t":
            return int(parts[1])
    raise InvalidWebhook("no timestamp")  # pragma: no cover - verify_header requires one
