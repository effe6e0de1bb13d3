"""Top-ups: charge through the provider, credit the account exactly once.

`pay_account` commits on its own (an exception listed in docs/design.md:
the provider is never called inside an open transaction):
1. claim the Idempotency-Key, check the account, insert a `pending` payment;
   commit;
2. call the provider with a key derived from our payment id, so retries of
   one payment are never charged twice;
3. lock the payment row; unless it is `succeeded`, mark it and credit the
   account; store the response under the Idempotency-Key.
The webhook applies `payment_intent.succeeded` through the same step 3, so the
credit happens once whichever arrives first, however often.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any, Dict, Optional, Tuple

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import sqlstate
from app.core.transactions import run_with_retry
from app.idempotency import service as idempotency
from app.integrations import stripe as provider
from app.ledger import service as ledger_service
from app.ledger.currencies import NOT_CENT_BASED
from app.ledger.money import minor_to_money, money_to_minor
from app.payments import repository
from app.payments.errors import (
    CurrencyNotPayable,
    InvalidEvent,
    InvalidSignature,
    PaymentDeclined,
    PaymentProviderError,
    PaymentsDisabled,
)
from app.payments.metrics import PAYMENTS, WEBHOOK_EVENTS
from app.payments.models import DECLINED, SUCCEEDED, Payment
from app.payments.schemas import PaymentOut

logger = logging.getLogger(__name__)

PAY_PATH = "/api/pay"
UNIQUE_VIOLATION = "23505"


def provider_key(payment_id: int) -> str:
    """Our idempotency key at the provider: one per payment, never random."""
    return f"keel-payment-{payment_id}"


def _payment_out(payment: Payment) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        status=payment.status,
        amount=money_to_minor(payment.amount),
        account_id=payment.account_id,
    )


async def pay_account(
    session: AsyncSession,
    *,
    user_id: int,
    account_id: int,
    amount_minor: int,
    idempotency_key: Optional[str] = None,
) -> PaymentOut:
    """Raises AccountNotFound, PaymentDeclined (replays return it again),
    PaymentProviderError (the payment stays pending: a retry charges with the
    same provider key, and a webhook may still complete it),
    IdempotencyKeyReused, PaymentsDisabled (nothing is written)."""
    if not provider.payments_enabled():
        raise PaymentsDisabled()
    request_hash = idempotency.request_fingerprint(
        "POST", PAY_PATH, {"account_id": account_id, "amount": amount_minor}
    )

    async def open_payment() -> Tuple[Optional[Payment], Optional[idempotency.Claim]]:
        return await _open_payment(
            session,
            user_id=user_id,
            account_id=account_id,
            amount=minor_to_money(amount_minor),
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )

    payment, claim = await run_with_retry(session, open_payment)
    if payment is None:
        assert claim is not None and claim.has_response
        PAYMENTS.labels("replayed").inc()
        idempotency.replay_error(claim)
        return PaymentOut.model_validate(claim.response_body)
    payment_id, currency = payment.id, payment.currency
    await session.commit()

    provider_payment_id: Optional[str] = None
    if payment.status != SUCCEEDED:
        try:
            result = await provider.charge(
                amount=amount_minor,
                currency=currency,
                idempotency_key=provider_key(payment_id),
                metadata={"payment_id": str(payment_id)},
            )
        except provider.ChargeDeclined as declined:
            await _record_decline(session, payment_id, claim, str(declined))
            PAYMENTS.labels("declined").inc()
            raise PaymentDeclined(str(declined)) from None
        except provider.ProviderError as error:
            logger.warning("payment %s: provider error: %s", payment_id, error)
            PAYMENTS.labels("provider_error").inc()
            raise PaymentProviderError() from None
        provider_payment_id = result.provider_payment_id

    async def settle() -> PaymentOut:
        settled = await apply_succeeded_payment(
            session, payment_id=payment_id, provider_payment_id=provider_payment_id
        )
        out = _payment_out(settled)
        if claim is not None:
            await idempotency.record_response(session, claim, status=200, body=out.model_dump())
        return out

    out = await run_with_retry(session, settle)
    PAYMENTS.labels("succeeded").inc()
    return out


async def _open_payment(
    session: AsyncSession,
    *,
    user_id: int,
    account_id: int,
    amount: Decimal,
    idempotency_key: Optional[str],
    request_hash: str,
) -> Tuple[Optional[Payment], Optional[idempotency.Claim]]:
    """The payment to charge (None when the key already has a response)."""
    claim = None
    if idempotency_key is not None:
        claim = await idempotency.claim_key(
            session, user_id=user_id, key=idempotency_key, request_hash=request_hash
        )
        if claim.has_response:
            return None, claim
        if not claim.is_new:
            existing = await repository.get_payment_by_key(session, claim.key_id)
            if existing is not None:
                return existing, claim
    account = await ledger_service.get_account(session, account_id=account_id, owner_id=user_id)
    if account.currency in NOT_CENT_BASED:
        raise CurrencyNotPayable(account.currency)
    payment = await repository.add_payment(
        session,
        user_id=user_id,
        account_id=account.id,
        amount=amount,
        currency=account.currency,
        idempotency_key_id=claim.key_id if claim is not None else None,
    )
    return payment, claim


async def _record_decline(
    session: AsyncSession, payment_id: int, claim: Optional[idempotency.Claim], message: str
) -> None:
    payment = await repository.lock_payment(session, payment_id)
    if payment is not None and payment.status != SUCCEEDED:
        payment.status = DECLINED
        payment.failure_message = message[:500]
    if claim is not None:
        body = idempotency.error_response_body(PaymentDeclined(message))
        await idempotency.record_response(session, claim, status=402, body=body)
    # Kept although the request ends in an error: the replay must find it.
    await session.commit()


async def apply_succeeded_payment(
    session: AsyncSession, *, payment_id: int, provider_payment_id: Optional[str]
) -> Payment:
    """Mark the payment succeeded and credit its account under the payment's
    row lock, unless it already is: any number of calls (API path, webhook
    redeliveries) credit exactly once."""
    payment = await repository.lock_payment(session, payment_id)
    if payment is None:
        raise LookupError(f"payment {payment_id} does not exist")
    if payment.status != SUCCEEDED:
        payment.status = SUCCEEDED
        payment.failure_message = None
        if provider_payment_id and payment.provider_payment_id is None:
            payment.provider_payment_id = provider_payment_id
        await session.flush()
        await ledger_service.credit_payment(
            session, account_id=payment.account_id, amount=payment.amount, payment_id=payment.id
        )
    return payment


# ------------------------------------------------------------------ webhook


async def handle_webhook(
    session: AsyncSession, *, payload: bytes, signature_header: Optional[str]
) -> None:
    """Verify and apply one provider event. Each event id is stored once, in
    the same transaction as its effect: a redelivery is a no-op, and a failed
    application is not recorded, so the provider's redelivery tries again.
    Raises InvalidSignature or InvalidEvent, PaymentsDisabled (no provider
    configured, so no secret to trust; the provider redelivers later)."""
    if not provider.payments_enabled():
        raise PaymentsDisabled()
    try:
        event = provider.verify_webhook(payload, signature_header)
    except provider.MalformedEvent as error:
        WEBHOOK_EVENTS.labels("invalid_event").inc()
        raise InvalidEvent(f"Malformed webhook event: {error}") from None
    except provider.InvalidWebhook:
        WEBHOOK_EVENTS.labels("invalid_signature").inc()
        raise InvalidSignature() from None
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not event_id or len(event_id) > 255:
        raise InvalidEvent("Event id missing")
    if not isinstance(event_type, str) or not event_type or len(event_type) > 100:
        raise InvalidEvent("Event type missing")

    async def apply() -> None:
        event_row_id = await repository.insert_event(session, event_id=event_id, type=event_type)
        if event_row_id is None:
            logger.info("webhook event %s already processed", event_id)
            WEBHOOK_EVENTS.labels("duplicate").inc()
            return
        WEBHOOK_EVENTS.labels("applied").inc()
        if event_type == "payment_intent.succeeded":
            payment_id = await _apply_intent_succeeded(session, event)
            if payment_id is not None:
                await repository.link_event(
                    session, event_row_id=event_row_id, payment_id=payment_id
                )

    await run_with_retry(session, apply)


async def _apply_intent_succeeded(session: AsyncSession, event: Dict[str, Any]) -> Optional[int]:
    data = event.get("data")
    intent = data.get("object") if isinstance(data, dict) else None
    if not isinstance(intent, dict) or not isinstance(intent.get("id"), str):
        raise InvalidEvent("Event has no payment intent")
    intent_id: str = intent["id"]
    metadata = intent.get("metadata")
    raw_payment_id = metadata.get("payment_id") if isinstance(metadata, dict) else None

    payment = None
    if isinstance(raw_payment_id, str) and raw_payment_id.isdigit() and len(raw_payment_id) < 10:
        payment = await repository.lock_payment(session, int(raw_payment_id))
    if payment is None:
        payment = await repository.lock_payment_by_provider_id(session, intent_id)
    if payment is None:
        logger.warning("webhook: payment intent %s matches no payment", intent_id)
        return None
    if payment.provider_payment_id not in (None, intent_id):
        logger.error("webhook: intent %s does not belong to payment %s", intent_id, payment.id)
        return None
    received = intent.get("amount_received", intent.get("amount"))
    currency = str(intent.get("currency", "")).upper()
    if received != money_to_minor(payment.amount) or currency != payment.currency:
        logger.error(
            "webhook: intent %s amount/currency %s %s differ from payment %s; not credited",
            intent_id,
            received,
            currency,
            payment.id,
        )
        return None
    if payment.provider_payment_id is None:
        holder = await repository.payment_id_by_provider_id(session, intent_id)
        if holder is not None:
            logger.error(
                "webhook: intent %s already belongs to payment %s, not %s; not credited",
                intent_id,
                holder,
                payment.id,
            )
            return None
    payment_id = payment.id  # the savepoint's rollback expires `payment`
    try:
        # A savepoint: a concurrent event attaching the same intent to another
        # payment commits first and this one hits the unique constraint; the
        # event is then recorded and skipped like the case above.
        async with session.begin_nested():
            await apply_succeeded_payment(
                session, payment_id=payment_id, provider_payment_id=intent_id
            )
    except IntegrityError as error:
        if sqlstate(error) != UNIQUE_VIOLATION:
            raise
        logger.error(
            "webhook: intent %s was attached to another payment meanwhile; payment %s not credited",
            intent_id,
            payment_id,
        )
        return None
    return payment_id
