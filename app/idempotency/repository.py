"""All SQL of idempotency records."""

from __future__ import annotations

from typing import Any, Optional

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.idempotency.models import IdempotencyKey


async def insert_idempotency_key(
    session: AsyncSession, *, user_id: int, key: str, request_hash: str
) -> Optional[int]:
    """Claim a key: its new id, or None when it exists. A concurrent claim of
    the same key waits here until the first transaction ends, so exactly one
    of them proceeds."""
    stmt = (
        insert(IdempotencyKey)
        .values(user_id=user_id, key=key, request_hash=request_hash)
        .on_conflict_do_nothing(index_elements=[IdempotencyKey.user_id, IdempotencyKey.key])
        .returning(IdempotencyKey.id)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def get_idempotency_key(
    session: AsyncSession, *, user_id: int, key: str
) -> Optional[IdempotencyKey]:
    stmt = (
        select(IdempotencyKey)
        .where(IdempotencyKey.user_id == user_id, IdempotencyKey.key == key)
        .execution_options(populate_existing=True)
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def store_idempotent_response(
    session: AsyncSession, *, key_id: int, status: int, body: Any
) -> None:
    stmt = (
        update(IdempotencyKey)
        .where(IdempotencyKey.id == key_id)
        .values(response_status=status, response_body=body)
    )
    await session.execute(stmt)
