"""All SQL of the payments domain."""

from __future__ import annotations

from decimal import Decimal
from typing import Optional

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.payments.models import PENDING, Payment, PaymentEvent


async def add_payment(
    session: AsyncSession,
    *,
    user_id: int,
    account_id: int,
    amount: Decimal,
    currency: str,
    idempotency_key_id: Optional[int],
) -> Payment:
    payment = Payment(
        user_id=user_id,
        account_id=account_id,
        amount=amount,
        currency=currency,
        status=PENDING,
        idempotency_key_id=idempotency_key_id,
    )
    session.add(payment)
    await session.flush()
    return payment


async def get_payment_by_key(session: AsyncSession, key_id: int) -> Optional[Payment]:
    stmt = (
        select(Payment)
        .where(Payment.idempotency_key_id == key_id)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_payment(session: AsyncSession, payment_id: int) -> Optional[Payment]:
    stmt = (
        select(Payment)
        .where(Payment.id == payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def lock_payment_by_provider_id(
    session: AsyncSession, provider_payment_id: str
) -> Optional[Payment]:
    stmt = (
        select(Payment)
        .where(Payment.provider_payment_id == provider_payment_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def payment_id_by_provider_id(
    session: AsyncSession, provider_payment_id: str
) -> Optional[int]:
    stmt = select(Payment.id).where(Payment.provider_payment_id == provider_payment_id)
    return (await session.execute(stmt)).scalar_one_or_none()


async def insert_event(session: AsyncSession, *, event_id: str, type: str) -> Optional[int]:
    """Store an event id; None when it was stored before (a redelivery). A
    concurrent delivery of the same id waits here for the first to finish."""
    stmt = (
        insert(PaymentEvent)
        .values(event_id=event_id, type=type)
        .on_conflict_do_nothing(index_elements=[PaymentEvent.event_id])
        .returning(PaymentEvent.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def link_event(session: AsyncSession, *, event_row_id: int, payment_id: int) -> None:
    event = await session.get(PaymentEvent, event_row_id)
    if event is not None:
        event.payment_id = payment_id
        await session.flush()
