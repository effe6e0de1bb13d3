"""All SQL of the emails domain."""

from __future__ import annotations

from typing import NamedTuple, Optional

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.users.models import User


class Recipient(NamedTuple):
    id: int
    email: str
    name: str


async def get_active_recipient(session: AsyncSession, user_id: int) -> Optional[Recipient]:
    """An active user's address and name, in the session's transaction
    (columns, not the ORM object: a worker does this once per email)."""
    statement = select(User.id, User.email, User.name).where(
        User.id == user_id, User.is_active.is_(True)
    )
    row = (await session.execute(statement)).first()
    return None if row is None else Recipient(row.id, row.email, row.name)
