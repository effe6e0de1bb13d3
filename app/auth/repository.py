"""All SQL of the auth domain (refresh-token families, the standing read)."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.models import PasswordResetToken, RefreshToken
from app.core.db import PreparedRead
from app.users.models import User


async def add_refresh_token(
    session: AsyncSession, *, user_id: int, family_id: str, token_hash: str, expires_at: datetime
) -> RefreshToken:
    token = RefreshToken(
        user_id=user_id, family_id=family_id, token_hash=token_hash, expires_at=expires_at
    )
    session.add(token)
    await session.flush()
    return token


async def get_refresh_token_for_update(
    session: AsyncSession, token_hash: str
) -> Optional[RefreshToken]:
    """Row-locked, so two concurrent refreshes with one token cannot both rotate it."""
    stmt = select(RefreshToken).where(RefreshToken.token_hash == token_hash).with_for_update()
    return (await session.execute(stmt)).scalar_one_or_none()


async def _revoke(session: AsyncSession, which: Any, now: datetime) -> None:
    live = RefreshToken.revoked_at.is_(None)
    await session.execute(update(RefreshToken).where(which, live).values(revoked_at=now))


async def revoke_family(session: AsyncSession, family_id: str, now: datetime) -> None:
    await _revoke(session, RefreshToken.family_id == family_id, now)


async def revoke_all_for_user(session: AsyncSession, user_id: int, now: datetime) -> None:
    await _revoke(session, RefreshToken.user_id == user_id, now)


async def add_password_reset_token(
    session: AsyncSession, *, user_id: int, nonce: str, token_hash: str, expires_at: datetime
) -> PasswordResetToken:
    token = PasswordResetToken(
        user_id=user_id, nonce=nonce, token_hash=token_hash, expires_at=expires_at
    )
    session.add(token)
    await session.flush()
    return token


async def get_password_reset_token(
    session: AsyncSession, token_id: int
) -> Optional[PasswordResetToken]:
    return await session.get(PasswordResetToken, token_id)


async def get_password_reset_token_for_update(
    session: AsyncSession, token_hash: str
) -> Optional[PasswordResetToken]:
    """Row-locked, so one token cannot be used by two concurrent confirmations."""
    stmt = (
        select(PasswordResetToken)
        .where(PasswordResetToken.token_hash == token_hash)
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def use_all_password_reset_tokens(session: AsyncSession, user_id: int, now: datetime) -> None:
    await session.execute(
        update(PasswordResetToken)
        .where(PasswordResetToken.user_id == user_id, PasswordResetToken.used_at.is_(None))
        .values(used_at=now)
    )


@functools.cache
def standing_read() -> PreparedRead:
    """What a principal is built from: an active user's id, superuser flag,
    token cut-off, email and name (app/auth/principal.py). Built at first
    use, when every model is mapped."""
    return PreparedRead(
        select(User.id, User.is_superuser, User.tokens_valid_after, User.email, User.name).where(
            User.id == bindparam("user_id"), User.is_active.is_(True)
        )
    )
