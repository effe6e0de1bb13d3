from __future__ import annotations

from typing import Optional

from fastapi import APIRouter, Header, Request
from typing_extensions import Annotated

from app.auth.dependencies import CurrentUser
from app.core.db import DbSession
from app.core.pagination import NoQuery
from app.core.routing import KeelRoute
from app.core.schemas import error_responses
from app.idempotency.dependencies import IdempotencyKeyHeader
from app.payments import service
from app.payments.schemas import PaymentCreate, PaymentOut, WebhookAck

router = APIRouter(prefix="/api", tags=["payments"], route_class=KeelRoute)


@router.post(
    "/pay",
    dependencies=[NoQuery],
    response_model=PaymentOut,
    status_code=200,
    responses=error_responses(401, 402, 404, 409, 422, 502, 503),
)
async def pay(
    body: PaymentCreate,
    session: DbSession,
    user: CurrentUser,
    idempotency_key: IdempotencyKeyHeader = None,
) -> PaymentOut:
    """Top up an account; `amount` in minor units. Credited exactly once."""
    return await service.pay_account(
        session,
        user_id=user.id,
        account_id=body.account_id,
        amount_minor=body.amount,
        idempotency_key=idempotency_key,
    )


@router.post(
    "/payments/webhook",
    dependencies=[NoQuery],
    response_model=WebhookAck,
    status_code=200,
    responses=error_responses(503),
)
async def payment_webhook(
    request: Request,
    session: DbSession,
    stripe_signature: Annotated[
        Optional[str],
        Header(alias="Stripe-Signature", max_length=2000, pattern=r"^[\x20-\x7e]*$"),
    ] = None,
) -> WebhookAck:
    """Provider events, verified on the raw body; each event id applied once."""
    payload = await request.body()
    await service.handle_webhook(session, payload=payload, signature_header=stripe_signature)
    return WebhookAck()
